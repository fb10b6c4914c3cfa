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

# Runtime state of one running stack: PIDs, logs, the app's env file and kubeconfig.
STATE_DIR=${DEVSTACK_STATE:-$PROJECT_DIR/.devstack}
CLUSTER_NAME=${DEVSTACK_CLUSTER:-infra-chaos}

log() { printf '[devstack %s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }
die() { log "error: $*"; exit 1; }
