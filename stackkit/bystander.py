"""Another client while an attack runs: what a normal visitor waits meanwhile.

The door's tests assert on it and bench/door_attacks.py prints it; both time the same
thing, a GET on a new connection every few milliseconds.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import requests


@dataclass
class Bystander:
    """GETs `path` on a new connection every `every` seconds, timing each answer, and
    calls `sample` (if given) each round, for what else should be read meanwhile."""

    url: str
    path: str = "/healthz"
    every: float = 0.02
    sample: Callable[[], None] | None = None
    times: list[float] = field(default_factory=list)  # every answer, refused ones too
    failures: list[str] = field(default_factory=list)  # a status other than 200, or an error
    _stop: threading.Event = field(default_factory=threading.Event)

    def _run(self) -> None:
        while not self._stop.is_set():
            start = time.monotonic()
            try:
                answer = requests.get(
                    self.url + self.path, timeout=5, headers={"Connection": "close"}
                )
                if answer.status_code != 200:
                    self.failures.append(str(answer.status_code))
            except requests.RequestException as exc:
                self.failures.append(type(exc).__name__)
            self.times.append(time.monotonic() - start)
            if self.sample is not None:
                self.sample()
            self._stop.wait(self.every)


@contextmanager
def bystander(
    url: str,
    path: str = "/healthz",
    *,
    every: float = 0.02,
    sample: Callable[[], None] | None = None,
) -> Iterator[Bystander]:
    other = Bystander(url, path, every, sample)
    requests.get(url + path, timeout=10)  # the first answer's one-off costs are not an attack's
    thread = threading.Thread(target=other._run, daemon=True)
    thread.start()
    try:
        yield other
    finally:
        other._stop.set()
        thread.join(timeout=10)
