"""Typed readers for settings that come from the environment.

Every reader raises ImproperlyConfigured with one sentence that names the variable, so a
wrong deployment fails at start instead of at the first request that needs the value.
"""

from __future__ import annotations

import os
import re

from django.core.exceptions import ImproperlyConfigured

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
# django-ratelimit's own syntax: count/[multiplier]unit, e.g. 3/m, 100/h, 10/5m.
_RATE = re.compile(r"^(\d+)/(\d*)([smhd])$")


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
    match = _RATE.match(value)
    if not match or int(match.group(1)) < 1:
        raise ImproperlyConfigured(
            f"{name} must be a rate like 3/m or 100/h (count/[n]unit, unit s, m, h or d), "
            f"not {value!r}."
        )
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
