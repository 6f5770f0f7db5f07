#!/bin/sh
# Starts `fulcrum serve` in a StatefulSet pod. From the pod name (fulcrum-N):
#  - ordinals below FULCRUM_INITIAL_CLUSTER_SIZE are founders: node id N+1, the founders as
#    bootstrap (only used when the data directory is empty);
#  - higher ordinals join: the node starts without an id (it generates one and keeps it in its
#    volume), then this script adds it as a learner through the client service and promotes
#    it once it has caught up.
# Arguments are passed on to `fulcrum serve`; FULCRUM_* variables override the config file.
set -eu
fulcrum="${FULCRUM_BIN:-/usr/local/bin/fulcrum}"
name="${POD_NAME:-$(hostname)}"
ordinal="${name##*-}"
size="${FULCRUM_INITIAL_CLUSTER_SIZE:-3}"
peers="${FULCRUM_PEER_SERVICE:-fulcrum-peers}"
namespace="${POD_NAMESPACE:-default}"
base="${name%-*}"
# FULCRUM_PEER_DOMAIN replaces Kubernetes' naming where pods are named otherwise (a podman
# network: fulcrum-0.fulcrum-peer).
domain="${FULCRUM_PEER_DOMAIN:-$peers.$namespace.svc.cluster.local}"
export FULCRUM_PEER_ADVERTISE="$name.$domain:7100"
export FULCRUM_HTTP_ADVERTISE="http://$name.$domain:8100"

case "$ordinal" in *[!0-9]*|"") echo "entrypoint: cannot read an ordinal from pod name '$name'" >&2; exit 1 ;; esac

if [ "$ordinal" -lt "$size" ]; then
    export FULCRUM_NODE_ID=$((ordinal + 1))
    bootstrap=""
    i=0
    while [ "$i" -lt "$size" ]; do
        bootstrap="$bootstrap$((i + 1))=$base-$i.$domain:7100,"
        i=$((i + 1))
    done
    export FULCRUM_BOOTSTRAP="${bootstrap%,}"
    exec "$fulcrum" serve "$@"
fi

# A joiner: run the node, then ask the cluster to add and promote it.
"$fulcrum" serve "$@" &
server=$!
trap 'kill -TERM "$server" 2>/dev/null' TERM INT
cluster="${FULCRUM_CLIENT_URL:-http://${FULCRUM_CLIENT_SERVICE:-fulcrum}.$namespace.svc.cluster.local:8100}"
# The node's own id is the first "id" of its status (keys are sorted; members come later).
until id=$(curl -sf http://127.0.0.1:8100/admin/cluster | grep -o '"id":[0-9]*' | head -n 1 | cut -d: -f2) && [ -n "$id" ]; do
    kill -0 "$server" 2>/dev/null || wait "$server"
    sleep 1
done
member() { FULCRUM_ENDPOINTS="$cluster" fulcrumctl member list -o json 2>/dev/null | grep -q "\"$FULCRUM_PEER_ADVERTISE\""; }
until member || FULCRUM_ENDPOINTS="$cluster" fulcrumctl member add --id "$id" --address "$FULCRUM_PEER_ADVERTISE"; do
    kill -0 "$server" 2>/dev/null || wait "$server"
    sleep 2
done
until FULCRUM_ENDPOINTS="$cluster" fulcrumctl member promote "$id" >/dev/null 2>&1; do
    kill -0 "$server" 2>/dev/null || break
    sleep 2
done
wait "$server"
