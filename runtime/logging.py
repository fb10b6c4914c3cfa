"""Log output: one line per event, JSON when `LOG_FORMAT=json`, never a token or an IP.

The dashboard is public, so its logs end up in places with weaker access control than the
cluster (log shippers, support tickets). Visitor addresses are personal data and a bearer
token in a log line is a credential leak, so both are masked here, on every handler,
rather than trusted to each `log.info` call site.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
from datetime import UTC, datetime
from typing import Any

LOG_FORMATS = ("text", "json")
MASKED_IP = "<ip>"
MASKED_TOKEN = "<token>"  # noqa: S105 - the placeholder, not a secret

# A JWT (service-account tokens are JWTs) or an Authorization header's credential.
_TOKEN = re.compile(
    r"\beyJ[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]{8,}\.[A-Za-z0-9_-]*"
    r"|(?i:\b(?:bearer|token)[\s:=]+)[A-Za-z0-9._~+/=-]{8,}"
)
# Candidates only; ipaddress decides, so times like 10:20:30 and versions stay readable.
# An IPv4 address may be followed by ":port"; an IPv6 one is bracketed when it is.
_IP_CANDIDATE = re.compile(
    r"(?<![\w.:])\d{1,3}(?:\.\d{1,3}){3}(?![\w.])"
    r"|(?<![\w.:])[0-9A-Fa-f]{0,4}(?::[0-9A-Fa-f]{0,4}){2,7}(?:\d{1,3}(?:\.\d{1,3}){3})?(?![\w.:])"
)

# Attributes every LogRecord has; anything else was passed with `extra=` and is kept.
_RECORD_FIELDS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {
    "message",
    "asctime",
}


def _mask_ip(match: re.Match[str]) -> str:
    text = match.group(0)
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return text
    return MASKED_IP


def redact(text: str) -> str:
    """The text with tokens and IP addresses masked."""
    text = _TOKEN.sub(
        lambda m: MASKED_TOKEN if m.group(0).startswith("eyJ") else _keep_prefix(m.group(0)),
        text,
    )
    return _IP_CANDIDATE.sub(_mask_ip, text)


def _keep_prefix(text: str) -> str:
    # "Bearer abc..." -> "Bearer <token>": the word says what was there, the value goes.
    prefix = re.match(r"(?i:(?:bearer|token)[\s:=]+)", text)
    return (prefix.group(0) if prefix else "") + MASKED_TOKEN


class RedactFilter(logging.Filter):
    """Masks tokens and IPs in the message, its arguments and any traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:
            # A bad format string must cost the caller nothing: log it as it was written.
            message = f"{record.msg} (unformattable arguments)"
        record.msg = redact(message)
        record.args = None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact(record.exc_text)
        for key, value in list(vars(record).items()):
            if key not in _RECORD_FIELDS and isinstance(value, str):
                setattr(record, key, redact(value))
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, message, extras, exception."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in vars(record).items():
            if key not in _RECORD_FIELDS and key not in entry:
                entry[key] = value
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc"] = record.exc_text
        # default=str: an odd `extra` value must not cost the log line. Redacting the
        # whole line also covers extras that are not strings (a tuple holding an address);
        # the masks contain no quote, so the line stays valid JSON.
        return redact(json.dumps(entry, default=str, ensure_ascii=False))


class TextFormatter(logging.Formatter):
    """The plain format, kept to one line: a traceback's newlines are escaped."""

    def format(self, record: logging.LogRecord) -> str:
        return super().format(record).replace("\n", "\\n")


def logging_config(log_format: str) -> dict[str, Any]:
    """The LOGGING setting for `text` or `json` output."""
    formatter: dict[str, Any] = (
        {"()": JsonFormatter}
        if log_format == "json"
        else {"()": TextFormatter, "format": "%(asctime)s %(levelname)s %(name)s %(message)s"}
    )
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"redact": {"()": RedactFilter}},
        "formatters": {"app": formatter},
        "handlers": {
            "console": {
                "class": "logging.StreamHandler",
                "formatter": "app",
                "filters": ["redact"],
            }
        },
        "root": {"handlers": ["console"], "level": "INFO"},
        "loggers": {
            # Never let the kubernetes client's debug output (which can include headers)
            # through, nor urllib3's per-connection chatter.
            "kubernetes": {"level": "WARNING"},
            "urllib3": {"level": "WARNING"},
            # Django logs to its own handlers unless told to propagate to ours.
            "django": {"handlers": [], "propagate": True},
        },
    }
