# Shared by the devstack scripts: paths, versions and small helpers. Sourced, not run.
# shellcheck shell=bash

DEVSTACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
PROJECT_DIR=$(dirname "$DEVSTACK_DIR")
# shellcheck source=devstack/versions.env
. "$DEVSTACK_DIR/versions.env"

# Built binaries live outside the repo, keyed by every version that went into them, so a
# warm machine skips the build and a version bump rebuilds instead of mixing.
CACHE_ROOT=${INFRA_CHAOS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/infra-chaos}
BIN_DIR="$CACHE_ROOT/bin-k8s-$K8S_VERSION-etcd-$ETCD_VERSION-kwok-$KWOK_VERSION-ksm-$KSM_VERSION"

# Runtime state of one running stack: PIDs, logs, the app's env file and kubeconfigs.
STATE_DIR=${DEVSTACK_STATE:-$PROJECT_DIR/.devstack}
PID_DIR="$STATE_DIR/pids"
LOG_DIR="$STATE_DIR/logs"
CLUSTER_NAME=${DEVSTACK_CLUSTER:-infra-chaos}
export KWOK_WORKDIR="$STATE_DIR/kwok"
KWOK_CLUSTER_DIR="$KWOK_WORKDIR/clusters/$CLUSTER_NAME"
ADMIN_KUBECONFIG="$KWOK_CLUSTER_DIR/kubeconfig.yaml"
CHAOS_KUBECONFIG="$STATE_DIR/kubeconfig-chaos"
KUBECTL="$BIN_DIR/kubectl"

# Container images (devstack/image): podman reads a project-local containers.conf instead
# of the machine's /etc/containers/containers.conf (CONTAINERS_CONF replaces it), so the
# two settings this project needs never edit the machine's own configuration.
export CONTAINERS_CONF="$STATE_DIR/containers.conf"
BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
APP_IMAGE=localhost/infra-chaos:devstack

# Fixed loopback ports, so a newcomer can open them and Prometheus can scrape them.
REDIS_PORT=6379
KSM_PORT=8080
KSM_TELEMETRY_PORT=8081
PROMETHEUS_PORT=9090
NODE_EXPORTER_PORTS=(9100 9101 9102)
POSTGRES_PORT=55432
# The fake nodes; each gets a node exporter whose host name is the node's name.
NODES=(kwok-node-0 kwok-node-1 kwok-node-2)

# Start order; `down` walks it backwards. postgres is only needed by the test suite;
# image builds the app's container image (devstack/image) and runs nothing.
COMPONENTS=(redis cluster token kube-state-metrics node-exporter prometheus postgres image)

log() { printf '[devstack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

kubectl_admin() { "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# Whether the process recorded under this name is alive.
running() {
  local f="$PID_DIR/$1.pid"
  [ -f "$f" ] && kill -0 "$(cat "$f")" 2>/dev/null
}

# Starts a long-running process in its own session (so a Ctrl-C meant for the app does
# not take the stack down with it), logging to $LOG_DIR/<name>.log.
start_bg() {
  local name=$1; shift
  mkdir -p "$PID_DIR" "$LOG_DIR"
  setsid "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
  echo $! >"$PID_DIR/$name.pid"
}

# Stops a recorded process: TERM, up to 10 s grace, then KILL.
stop_pid() {
  local name=$1 f="$PID_DIR/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f"
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# Waits until a command succeeds; names what it waited for when it gives up.
wait_until() {
  local what=$1 timeout=$2; shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "$what did not come up within ${timeout} s (logs: $LOG_DIR)"
    sleep 0.5
  done
}

http_ok() { curl -fsS -o /dev/null --max-time 2 "$1"; }
