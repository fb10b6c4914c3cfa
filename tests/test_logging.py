"""Log lines: one per event, JSON on request, and never a token or an IP address."""

from __future__ import annotations

import json
import logging
import sys

import pytest

from runtime.logging import (
    MASKED_IP,
    MASKED_TOKEN,
    JsonFormatter,
    RedactFilter,
    TextFormatter,
    logging_config,
    redact,
)

JWT = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEifQ.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQifQ.c2lnbmF0dXJl"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("peer 203.0.113.7 refused", f"peer {MASKED_IP} refused"),
        ("peer 203.0.113.7:51234", f"peer {MASKED_IP}:51234"),
        ("peer [2001:db8::1]:443", f"peer [{MASKED_IP}]:443"),
        ("from 2001:db8:1:2::77 and ::ffff:192.0.2.1", f"from {MASKED_IP} and {MASKED_IP}"),
        (f"token {JWT}", f"token {MASKED_TOKEN}"),
        ("Authorization: Bearer abc.DEF-123_xyz", f"Authorization: Bearer {MASKED_TOKEN}"),
        # Not addresses: kept, so logs stay useful.
        ("at 10:20:30 took 1.5 s", "at 10:20:30 took 1.5 s"),
        ("version 3.11 of Node 2", "version 3.11 of Node 2"),
        ("999.1.1.1 is no address", "999.1.1.1 is no address"),
    ],
)
def test_redact(text: str, expected: str) -> None:
    assert redact(text) == expected


def record(msg: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    exc_info = None
    if exc:
        try:
            raise ValueError("bad peer 198.51.100.4")
        except ValueError:
            exc_info = sys.exc_info()
    rec = logging.LogRecord("chaos.views", logging.WARNING, __file__, 1, msg, args, exc_info)
    rec.__dict__.update(extra)
    return rec


def test_json_lines_are_one_object_per_event_with_extras_and_no_ip() -> None:
    rec = record("refused %s\nsecond line", "198.51.100.4", exc=True, outcome="rate_limited")
    assert RedactFilter().filter(rec)
    line = JsonFormatter().format(rec)
    assert "\n" not in line
    entry = json.loads(line)
    assert entry["level"] == "WARNING"
    assert entry["logger"] == "chaos.views"
    assert entry["message"] == f"refused {MASKED_IP}\nsecond line"
    assert entry["outcome"] == "rate_limited"
    assert entry["ts"].endswith("+00:00")
    assert "ValueError: bad peer <ip>" in entry["exc"]
    assert "198.51.100.4" not in line


def test_json_masks_addresses_inside_non_string_extras() -> None:
    rec = record("websocket", peer=("203.0.113.9", 51234), hops=["10.0.0.1", 2])
    RedactFilter().filter(rec)
    entry = json.loads(JsonFormatter().format(rec))
    assert entry["peer"] == [MASKED_IP, 51234]
    assert entry["hops"] == [MASKED_IP, 2]


def test_text_lines_stay_one_line_even_with_a_traceback() -> None:
    rec = record("boom", exc=True)
    RedactFilter().filter(rec)
    line = TextFormatter("%(levelname)s %(message)s").format(rec)
    assert "\n" not in line
    assert line.startswith("WARNING boom\\nTraceback")


def test_extra_string_values_are_redacted_too() -> None:
    rec = record("chaos", client="203.0.113.9", token=f"Bearer {JWT}")
    RedactFilter().filter(rec)
    assert rec.client == MASKED_IP
    assert JWT not in rec.token


def test_a_broken_format_string_never_reaches_the_caller() -> None:
    rec = record("%d pods", "three")
    assert RedactFilter().filter(rec)
    assert "unformattable" in rec.getMessage()


def test_config_picks_the_formatter() -> None:
    assert logging_config("json")["formatters"]["app"]["()"] is JsonFormatter
    assert logging_config("text")["formatters"]["app"]["()"] is TextFormatter
    assert logging_config("json")["handlers"]["console"]["filters"] == ["redact"]


def test_the_configured_root_handler_redacts() -> None:
    # The handler Django installed from settings.LOGGING, not a hand-built one.
    handler = next(h for h in logging.getLogger().handlers if h.filters)
    rec = record("client 192.0.2.44 at %s", "192.0.2.45")
    assert handler.filter(rec)
    assert handler.format(rec).endswith(f"client {MASKED_IP} at {MASKED_IP}")
