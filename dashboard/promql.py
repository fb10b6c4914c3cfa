"""Every PromQL string the dashboard runs, in one place; together they feed the `metrics`
frame (docs/contract.md).

Scalars are one number each; vectors keep their labels so the snapshot can name nodes.
The CPU and memory percentages are also the two history series, so the sparkline and the
card always show the same quantity.
"""

from __future__ import annotations

from typing import Final

# The rate window must cover several scrapes: 5 s locally, 15-30 s in typical clusters.
RATE_WINDOW: Final = "1m"

CPU_USED_PERCENT: Final = (
    f'100 - avg(rate(node_cpu_seconds_total{{mode="idle"}}[{RATE_WINDOW}])) * 100'
)
MEMORY_USED_PERCENT: Final = (
    "(1 - sum(node_memory_MemAvailable_bytes) / sum(node_memory_MemTotal_bytes)) * 100"
)

SCALARS: Final[dict[str, str]] = {
    "pods_total": "count(kube_pod_info)",
    "pods_running": 'sum(kube_pod_status_phase{phase="Running"})',
    "cpu_used_percent": CPU_USED_PERCENT,
    "memory_used_percent": MEMORY_USED_PERCENT,
    "memory_used_bytes": "sum(node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes)",
    "memory_total_bytes": "sum(node_memory_MemTotal_bytes)",
}

# Label that names the Kubernetes node in each vector's samples.
NODE_LABEL: Final = {
    "node_ready": "node",
    "node_memory_used": "nodename",
    "node_memory_total": "nodename",
}

# node-exporter labels its series by scrape address; node_uname_info carries the host name
# for the same address, so joining on `instance` names each series without an IP map.
_BY_NODENAME: Final = " * on(instance) group_left(nodename) node_uname_info"
VECTORS: Final[dict[str, str]] = {
    # One series per node; the value is 1 while the node is Ready, 0 otherwise.
    "node_ready": 'kube_node_status_condition{condition="Ready",status="true"}',
    "node_memory_used": (
        f"(node_memory_MemTotal_bytes - node_memory_MemAvailable_bytes){_BY_NODENAME}"
    ),
    "node_memory_total": f"node_memory_MemTotal_bytes{_BY_NODENAME}",
}

HISTORY: Final[dict[str, str]] = {"cpu": CPU_USED_PERCENT, "memory": MEMORY_USED_PERCENT}
HISTORY_WINDOW_S: Final = 30 * 60
HISTORY_STEP_S: Final = 30
