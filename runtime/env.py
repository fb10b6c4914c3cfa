"""Typed readers for settings that come from the environment.

Every reader raises ImproperlyConfigured with one sentence that names the variable, so a
wrong deployment fails at start instead of at the first request that needs the value.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from typing import Any

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# django-ratelimit's syntax, kept for its familiarity: count/[multiplier]unit, e.g. 3/m,
# 100/h, 10/5m.
_RATE = re.compile(r"^(\d+)/(\d*)([smhd])$")
_UNITS_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


@dataclass(frozen=True)
class Rate:
    count: int
    window_ms: int


def parse_rate(text: str) -> Rate:
    """ "3/m" -> 3 per 60 s; "10/5m" -> 10 per 300 s. ValueError for anything else."""
    match = _RATE.match(text)
    if not match or int(match.group(1)) < 1:
        raise ValueError(f"not a rate: {text!r}")
    multiplier = int(match.group(2) or 1)
    return Rate(int(match.group(1)), multiplier * _UNITS_S[match.group(3)] * 1000)


def _raw(name: str, default: str | None) -> str:
    value = os.environ.get(name)
    if value is None or value.strip() == "":
        if default is None:
            raise ImproperlyConfigured(f"{name} must be set.")
        return default
    return value.strip()


def env_str(name: str, default: str | None = None) -> str:
    return _raw(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    lowered = value.strip().lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, not {value!r}.")


def env_int(name: str, default: int, *, minimum: int = 0) -> int:
    value = _raw(name, str(default))
    try:
        number = int(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, not {value!r}.") from None
    if number < minimum:
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {number}.")
    return number


def env_float(name: str, default: float, *, minimum: float) -> float:
    value = _raw(name, str(default))
    try:
        number = float(value)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, not {value!r}.") from None
    if not number >= minimum:  # also rejects nan
        raise ImproperlyConfigured(f"{name} must be at least {minimum}, not {value}.")
    return number


def env_list(name: str, default: str) -> list[str]:
    return [item.strip() for item in _raw(name, default).split(",") if item.strip()]


def env_rate(name: str, default: str) -> str:
    value = _raw(name, default)
    try:
        parse_rate(value)
    except ValueError:
        raise ImproperlyConfigured(
            f"{name} must be a rate like 3/m or 100/h (count/[n]unit, unit s, m, h or d), "
            f"not {value!r}."
        ) from None
    return value


def env_url(name: str, default: str, *, schemes: tuple[str, ...]) -> str:
    value = _raw(name, default)
    if not value.startswith(tuple(f"{s}://" for s in schemes)):
        allowed = " or ".join(f"{s}://" for s in schemes)
        raise ImproperlyConfigured(f"{name} must start with {allowed}, not {value!r}.")
    return value.rstrip("/")


def env_label_selector(name: str, default: str) -> str:
    value = _raw(name, default)
    # Equality selectors only: the guard must know exactly which pods are fair game.
    part = r"[A-Za-z0-9]([-A-Za-z0-9_./]*[A-Za-z0-9])?"
    if not re.fullmatch(rf"{part}={part}(,{part}={part})*", value):
        raise ImproperlyConfigured(
            f"{name} must be an equality label selector like app=chaos-demo, not {value!r}."
        )
    return value


def sqlite_problem(name: str, path: str, *, explicit: bool) -> str | None:
    """Why this process could not write the SQLite database at `path`, in one sentence.

    SQLite writes a journal next to the file, so the directory must be writable too.
    In-memory databases (the test runner's) have nothing to check.
    """
    if path == ":memory:" or path.startswith("file:"):
        return None
    what = (
        f"{name} names the SQLite file {path}, which"
        if explicit
        else (f"{name} is not set, and its default, the SQLite file {path},")
    )
    fix = f"set {name} to a PostgreSQL URL or to a SQLite file on a writable volume"
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        return f"{what} is in a directory that does not exist ({directory}); {fix}."
    if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
        return f"{what} is not writable by this process (uid {os.getuid()}); {fix}."
    if not os.access(directory, os.W_OK | os.X_OK):
        return (
            f"{what} is in a directory this process cannot write ({directory}, "
            f"uid {os.getuid()}); {fix}."
        )
    return None


def env_database(name: str, default: str, **options: Any) -> dict[str, Any]:
    """The DATABASES entry for a PostgreSQL or SQLite URL in `name`.

    A URL that does not parse, or a SQLite file this process cannot write, stops the
    process at start when the variable is set. Left unset, the default SQLite file is
    checked when a connection is first opened instead (infra_site/sqlite): processes
    that never touch the database (the metrics poller) must still start where that file
    is read-only, as in the container image.
    """
    explicit = os.environ.get(name, "").strip() != ""
    url = env_url(name, default, schemes=("sqlite", "postgres", "postgresql"))
    try:
        database: dict[str, Any] = dict(dj_database_url.parse(url, **options))
    except ValueError as exc:
        # The URL itself is not repeated: it may carry a password.
        raise ImproperlyConfigured(f"{name} is not a valid database URL: {exc}.") from None
    if database["ENGINE"] == "django.db.backends.sqlite3":
        if explicit and (problem := sqlite_problem(name, database["NAME"], explicit=True)):
            raise ImproperlyConfigured(problem)
        database["ENGINE"] = "infra_site.sqlite"
    elif not database.get("NAME"):
        raise ImproperlyConfigured(f"{name} must name a database (…/<name> at its end).")
    return database
