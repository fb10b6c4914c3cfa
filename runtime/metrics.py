"""The app's own Prometheus metrics, defined in one place (served at `/metrics`).

Each process records what it does: web processes count chaos attempts, open websockets
and frames sent; the poller its poll rounds; the watcher recovery times. The web process
serves its registry at `/metrics`; the poller and watcher serve theirs on `METRICS_PORT`
when it is set, so Prometheus scrapes every process and sums across replicas.
"""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CHAOS_ATTEMPTS = Counter(
    "infra_chaos_attempts",
    "Chaos button presses that passed CSRF, by outcome.",
    # deleted (evicted) | refused | budget_refused (the PodDisruptionBudget said no) |
    # failed | rate_limited | busy
    ["outcome"],
)
RECOVERY_SECONDS = Histogram(
    "infra_chaos_recovery_seconds",
    "Seconds from a chaos kill to its replacement pod being Ready.",
    buckets=(0.5, 1, 2, 3, 4, 5, 7.5, 10, 15, 20, 30, 60, 120),
)
OPEN_WEBSOCKETS = Gauge("infra_open_websockets", "Websocket viewers connected to this process.")
WEBSOCKETS_REFUSED = Counter(
    "infra_websockets_refused",
    "Websocket connections refused at once (a cap reached, a foreign Origin), by reason.",
    ["reason"],  # per_ip | per_process | origin
)
CONNECTIONS_CLOSED = Counter(
    "infra_connections_closed",
    "TCP connections the web process refused or closed before a complete request, by reason.",
    ["reason"],  # per_ip | full | evicted | deadline
)
WEBSOCKETS_CLOSED = Counter(
    "infra_websockets_closed",
    "Websocket viewers the server closed for what they sent or failed to read, by reason.",
    ["reason"],  # flood | binary | too_big | too_slow
)
BROADCASTS = Counter("infra_broadcasts", "Frames published to the infra group, by kind.", ["kind"])
POLL_SECONDS = Histogram(
    "infra_poll_duration_seconds",
    "Duration of one metrics poll round (all PromQL queries).",
    buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 3, 5, 10),
)
POLL_FAILURES = Counter(
    "infra_poll_failures", "Poll rounds in which at least one query failed (snapshot stale)."
)
WORKER_LEADING = Gauge(
    "infra_worker_leading",
    "1 while this process holds its worker's leader lock (poller, watcher), else 0.",
    ["worker"],
)
