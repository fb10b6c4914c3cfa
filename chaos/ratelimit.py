"""The chaos button's budgets, kept in the shared Redis so every web replica counts alike.

- Per visitor (`rate_key`: an IPv4 address or an IPv6 prefix): at most N presses in any
  window of the rate's length (`CHAOS_RATE_PER_IP`).
- For everyone together: at most G presses in any such window (`CHAOS_RATE_GLOBAL`).
- The last `CHAOS_GLOBAL_RESERVE_PERCENT` of G is kept for visitors who have not pressed
  within the global window. Ten addresses at 3/m could otherwise spend the whole 30/m and
  lock everybody else out; now they stop at 70 % and the next newcomer still gets in.

Windows slide. Each budget is a sorted set of the accepted presses' times (at most its
count of entries), and a press passes only if fewer than the count lie within the last
window. django-ratelimit, which guarded this view before, counts in fixed windows: a burst
straddling an edge gets twice the budget (3 at 0:59 and 3 at 1:00), and its Retry-After
tells a script exactly when the next edge is. Fixed windows cannot express "never more
than N in any minute", whatever their length, so this small Lua script replaced it here.

One script checks and records all budgets at once: Redis runs it atomically, so presses
arriving together on several replicas cannot overshoot. A visitor refused by any budget
spends none of them. Redis down means RateLimitUnavailable: the view refuses (503) rather
than let presses through uncounted.

The clock is the web process's (`time.time()`, synchronised by NTP): a replica whose clock
is off by d moves the windows it checks by d, which is far below the windows' seconds.
"""

from __future__ import annotations

import math
import secrets
import time
from dataclasses import dataclass
from typing import Any, cast

import redis
from django.conf import settings

from infra_site.env import parse_rate
from infra_site.redisclient import redis_client

KEY_PREFIX = "infra:chaos:budget"
GLOBAL_KEY = f"{KEY_PREFIX}:global"

# What refused a press, as the 429 body's "scope" says it to the page.
SCOPE_VISITOR = "visitor"  # this visitor's own budget
SCOPE_GLOBAL = "global"  # everyone's budget is spent
SCOPE_RESERVED = "reserved"  # what is left is kept for visitors who have not pressed yet

# KEYS[1]: this visitor's accepted presses; KEYS[2]: everyone's (sorted sets, score = ms).
# ARGV: now (ms), the visitor's count and window (ms), the global count and window (ms),
# how many global presses are reserved for newcomers, a unique member for this press.
# Returns {1} when the press passes (and is recorded), else {0, scope, wait in ms}.
_SCRIPT = """
local now = tonumber(ARGV[1])
local v_count, v_window = tonumber(ARGV[2]), tonumber(ARGV[3])
local g_count, g_window = tonumber(ARGV[4]), tonumber(ARGV[5])
local reserved = tonumber(ARGV[6])

-- The visitor's set also answers "pressed within the global window?", so it keeps the
-- longer of the two windows.
local keep = math.max(v_window, g_window)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - keep)
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - g_window)

-- Milliseconds until fewer than `limit` presses lie in the window: when the limit-th
-- newest has left it. 0 if there is room now.
local function wait(key, window, limit)
  local used = redis.call('ZCOUNT', key, '(' .. (now - window), '+inf')
  if used < limit then return 0 end
  local index = redis.call('ZCARD', key) - limit
  local entry = redis.call('ZRANGE', key, index, index, 'WITHSCORES')
  return tonumber(entry[2]) + window - now
end

local v_wait = wait(KEYS[1], v_window, v_count)
local returning = redis.call('ZCOUNT', KEYS[1], '(' .. (now - g_window), '+inf') > 0
local g_limit = g_count
if returning then g_limit = g_count - reserved end
local g_wait = wait(KEYS[2], g_window, g_limit)

if v_wait > 0 or g_wait > 0 then
  local scope = 'visitor'
  if v_wait <= 0 then
    if g_limit < g_count and redis.call('ZCARD', KEYS[2]) < g_count then
      scope = 'reserved'
    else
      scope = 'global'
    end
  end
  return {0, scope, math.max(v_wait, g_wait)}
end

redis.call('ZADD', KEYS[1], now, ARGV[7])
redis.call('PEXPIRE', KEYS[1], keep)
redis.call('ZADD', KEYS[2], now, ARGV[7])
redis.call('PEXPIRE', KEYS[2], g_window)
return {1}
"""


class RateLimitUnavailable(Exception):
    """The budgets could not be read or written (Redis down): refuse, never let through."""


def reserved_presses(global_count: int, percent: int) -> int:
    """How many of the global budget's presses are kept for newcomers: the percentage,
    rounded down, and never the whole budget (returning visitors keep at least one)."""
    return min(global_count * percent // 100, global_count - 1)


@dataclass(frozen=True)
class RateDecision:
    limited: bool
    # Whole seconds after which this press would pass, if nobody else pressed meanwhile;
    # 0 when not limited.
    retry_after: int = 0
    scope: str = ""  # SCOPE_* when limited


def store() -> redis.Redis:
    """Where the budgets live: the shared Redis (tests put a fake one here)."""
    return redis_client()


def chaos_rate_check(*, identity: str) -> RateDecision:
    """Counts one press by `identity` (a rate_key) against every budget, atomically."""
    per_visitor = parse_rate(settings.CHAOS_RATE_PER_IP)
    everyone = parse_rate(settings.CHAOS_RATE_GLOBAL)
    now_ms = int(time.time() * 1000)
    args = (
        now_ms,
        per_visitor.count,
        per_visitor.window_ms,
        everyone.count,
        everyone.window_ms,
        reserved_presses(everyone.count, int(settings.CHAOS_GLOBAL_RESERVE_PERCENT)),
    )
    keys = (f"{KEY_PREFIX}:visitor:{identity}", GLOBAL_KEY)
    member = f"{now_ms}:{secrets.token_hex(6)}"
    try:
        answer = cast("list[Any]", store().eval(_SCRIPT, 2, *keys, *map(str, args), member))
    except (redis.RedisError, OSError) as exc:
        raise RateLimitUnavailable(str(exc)) from exc
    if int(answer[0]) == 1:
        return RateDecision(limited=False)
    scope = answer[1].decode() if isinstance(answer[1], bytes) else str(answer[1])
    # Rounded up: after that many whole seconds the blocking press has left the window.
    return RateDecision(
        limited=True, retry_after=max(1, math.ceil(int(answer[2]) / 1000)), scope=scope
    )
