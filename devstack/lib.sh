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
# What devstack/supervise keeps running: the current PID and restart count of each child.
CHILD_DIR="$PID_DIR/children"
LOG_DIR="$STATE_DIR/logs"
CLUSTER_NAME=${DEVSTACK_CLUSTER:-infra-chaos}
export KWOK_WORKDIR="$STATE_DIR/kwok"
KWOK_CLUSTER_DIR="$KWOK_WORKDIR/clusters/$CLUSTER_NAME"
ADMIN_KUBECONFIG="$KWOK_CLUSTER_DIR/kubeconfig.yaml"
CHAOS_KUBECONFIG="$STATE_DIR/kubeconfig-chaos"
KUBECTL="$BIN_DIR/kubectl"
# The namespace `make run` shows and breaks, and a copy of it that the test suite breaks
# instead (its own Deployment, ServiceAccount, token and RoleBinding), so a test run never
# rescales or re-binds what a running app uses.
DEMO_NAMESPACE=chaos-demo
TEST_NAMESPACE=chaos-test
TEST_KUBECONFIG="$STATE_DIR/kubeconfig-chaos-test"

# Container images (devstack/image): podman reads a project-local containers.conf instead
# of the machine's /etc/containers/containers.conf (CONTAINERS_CONF replaces it), so the
# two settings this project needs never edit the machine's own configuration.
export CONTAINERS_CONF="$STATE_DIR/containers.conf"
BASE_IMAGE=docker.io/library/python:3.11-slim-bookworm
APP_IMAGE=localhost/infra-chaos:devstack

# Fixed loopback ports, so a newcomer can open them and Prometheus can scrape them.
# DEVSTACK_PORT_OFFSET moves them all, for a second stack beside the first (the devstack's
# own tests run one in a temporary DEVSTACK_STATE).
PORT_OFFSET=${DEVSTACK_PORT_OFFSET:-0}
REDIS_PORT=$((6379 + PORT_OFFSET))
KSM_PORT=$((8080 + PORT_OFFSET))
KSM_TELEMETRY_PORT=$((8081 + PORT_OFFSET))
PROMETHEUS_PORT=$((9090 + PORT_OFFSET))
NODE_EXPORTER_PORTS=($((9100 + PORT_OFFSET)) $((9101 + PORT_OFFSET)) $((9102 + PORT_OFFSET)))
POSTGRES_PORT=$((55432 + PORT_OFFSET))
# Where Debian installs the PostgreSQL server, one folder per major version.
POSTGRES_LIB=${DEVSTACK_POSTGRES_LIB:-/usr/lib/postgresql}
# The fake nodes; each gets a node exporter whose host name is the node's name.
NODES=(kwok-node-0 kwok-node-1 kwok-node-2)

# Start order; `down` walks it backwards. postgres is only needed by the test suite;
# image builds the app's container image (devstack/image) and runs nothing.
COMPONENTS=(redis cluster token kube-state-metrics node-exporter prometheus postgres image)

log() { printf '[devstack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }

kubectl_admin() { "$KUBECTL" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

# The start time of a process (clock ticks since boot, field 22 of /proc/PID/stat): with
# the PID it names one process for good, where a PID alone is reused once it exits.
proc_start() {
  local stat
  stat=$(cat "/proc/$1/stat" 2>/dev/null) || return 1
  # The command name (field 2) may hold spaces; the fields after it do not.
  stat=${stat##*) }
  # shellcheck disable=SC2086
  set -- $stat
  echo "${20}"
}

# Records a started process: its PID, and beside it its start time.
record_pid() {
  echo "$2" >"$PID_DIR/$1.pid"
  proc_start "$2" >"$PID_DIR/$1.pid.start" || true
}

# Whether the process recorded under this name is alive: the PID in its pidfile exists
# and is the very process that was recorded (same start time), not a stranger that got
# the PID of one that died, say before a reboot.
running() {
  local f="$PID_DIR/$1.pid" pid
  [ -f "$f" ] || return 1
  pid=$(cat "$f")
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  [ -f "$f.start" ] || return 0
  [ "$(proc_start "$pid" || true)" = "$(cat "$f.start")" ]
}

# Starts a long-running process in its own session and process group (so a Ctrl-C meant
# for the app does not take the stack down with it, and `stop_pid` can signal the whole
# group), logging to $LOG_DIR/<name>.log.
start_bg() {
  local name=$1; shift
  mkdir -p "$PID_DIR" "$LOG_DIR"
  setsid "$@" >"$LOG_DIR/$name.log" 2>&1 </dev/null &
  record_pid "$name" $!
}

# Starts a process under devstack/supervise, which restarts it whenever it exits. The
# pidfile holds the supervisor; $CHILD_DIR/<name>.pid the process itself.
start_supervised() {
  local name=$1; shift
  mkdir -p "$CHILD_DIR"
  start_bg "$name" "$DEVSTACK_DIR/supervise" "$name" "$CHILD_DIR/$name.pid" -- "$@"
}

# Stops a recorded process and its process group (a shell's `sleep`, a supervisor's
# child): TERM, up to 10 s grace, then KILL. A stale pidfile is only removed.
stop_pid() {
  local name=$1 f="$PID_DIR/$1.pid" pid
  [ -f "$f" ] || return 0
  pid=$(cat "$f")
  if running "$name"; then
    kill -TERM -- "-$pid" 2>/dev/null || kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -KILL -- "-$pid" 2>/dev/null
    # What the group leaves behind (a child that ignored TERM) goes too.
    kill -KILL -- "-$pid" 2>/dev/null || true
    log "stopped $name (pid $pid)"
  fi
  rm -f "$f" "$f.start" "$CHILD_DIR/$name.pid" "$CHILD_DIR/$name.restarts"
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

# The machine's own Debian sources (never a hard-coded mirror); they must carry bookworm.
# The app's base image (devstack/image) and the node's images (devstack/node-images) are
# made from them.
debian_sources() {
  local f
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list; do
    [ -s "$f" ] && grep -q bookworm "$f" && { echo "$f"; return 0; }
  done
  die "no Debian bookworm entry in this machine's apt sources; the local images are made from them"
}

# debian_rootfs OUT PACKAGES LOG [mmdebstrap options...]: a minimal bookworm root file
# system with the given packages (comma-separated), no docs, no apt lists, into the tar
# OUT; its log is $LOG_DIR/LOG.log; extra options (hooks) follow.
debian_rootfs() {
  local out=$1 packages=$2 name=$3; shift 3
  nice -n 10 mmdebstrap --mode=root --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --aptopt='Acquire::Check-Valid-Until "false"' \
    "$@" \
    --customize-hook='rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*' \
    bookworm "$out" "$(debian_sources)" >"$LOG_DIR/$name.log" 2>&1 \
    || { tail -n 20 "$LOG_DIR/$name.log" >&2; die "mmdebstrap failed (log: $LOG_DIR/$name.log)"; }
}
