#!/usr/bin/env bash
# Builds Fulcrum's runtime image here and runs it as a StatefulSet would, on a podman network
# this script creates:
#   1. a Debian bookworm base with the runtime libraries, made with debootstrap and `podman
#      import` (no registry is reachable; the root file system is cached in
#      ~/.cache/fulcrum-container between runs);
#   2. the release binaries (--static-swift-stdlib) put into the Dockerfile's runtime stage
#      (Deploy/docker/Dockerfile, --target runtime);
#   3. three nodes named as a StatefulSet names its pods (fulcrum-0.fulcrum-peer, …), started
#      through the image's entrypoint, which derives ids and founders from the names;
#   4. a fourth ordinal, which the entrypoint adds as a learner and promotes;
#   5. the leader's container killed (-9): a new leader, the cluster still serves, and the
#      image's HEALTHCHECK passes on the survivors.
# Everything lives in a private podman store under a temporary directory (its own images,
# containers, volumes, network) and is removed at the end; no other container is touched.
# Needs root (rootful podman with runc).
#   Scripts/container-test.sh
set -euo pipefail
source "$(dirname "$0")/lib/common.sh"

[ "$(id -u)" = 0 ] || { echo "error: run as root (rootful podman with runc)" >&2; exit 1; }
install_system_dependencies podman buildah runc debootstrap netavark aardvark-dns iptables
swift build -c release --static-swift-stdlib --product fulcrum
swift build -c release --static-swift-stdlib --product fulcrumctl

run_id="fulcrum-ct-$$"
scratch=$(mktemp -d /tmp/fulcrum-container.XXXXXX)
# The store is private to this run: `podman --root/--runroot` keeps its images, containers,
# volumes and networks apart from anything else on the machine.
cat >"$scratch/containers.conf" <<EOF
[containers]
default_ulimits = []
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
[network]
network_config_dir = "$scratch/networks"
EOF
mkdir -p "$scratch/networks"
export CONTAINERS_CONF="$scratch/containers.conf"
pod() { podman --root "$scratch/storage" --runroot "$scratch/run" --storage-driver vfs "$@"; }
network="$run_id"
# netavark leaves its base firewall chains behind: removed at the end when they were not there before.
had_netavark_chains=0
iptables -S NETAVARK_FORWARD >/dev/null 2>&1 && had_netavark_chains=1
remove_netavark_chains() {
    iptables -D FORWARD -m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD 2>/dev/null
    iptables -F NETAVARK_FORWARD 2>/dev/null; iptables -X NETAVARK_FORWARD 2>/dev/null
    iptables -t nat -D PREROUTING -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT 2>/dev/null
    iptables -t nat -D OUTPUT -m addrtype --dst-type LOCAL -j NETAVARK-HOSTPORT-DNAT 2>/dev/null
    iptables -t nat -D POSTROUTING -j NETAVARK-HOSTPORT-MASQ 2>/dev/null
    for chain in NETAVARK-HOSTPORT-DNAT NETAVARK-HOSTPORT-MASQ NETAVARK-HOSTPORT-SETMARK; do
        iptables -t nat -F "$chain" 2>/dev/null; iptables -t nat -X "$chain" 2>/dev/null
    done
}
cleanup() {
    set +e
    [ -n "${KEEP:-}" ] && return
    pod rm -af -t 0 >/dev/null 2>&1
    pod network rm -f "$network" >/dev/null 2>&1
    pod volume prune -f >/dev/null 2>&1
    pod rmi -af >/dev/null 2>&1
    rm -rf "$scratch"
    [ "$had_netavark_chains" = 0 ] && remove_netavark_chains
}
trap cleanup EXIT

echo "== base image: Debian bookworm with the runtime libraries (debootstrap)"
cache="${HOME}/.cache/fulcrum-container"
rootfs_tar="$cache/bookworm-runtime-rootfs.tar"
mkdir -p "$cache"
if [ ! -s "$rootfs_tar" ]; then
    debootstrap --variant=minbase --include=libsqlite3-0,liblz4-1,libzmq5,ca-certificates,curl,tzdata \
        bookworm "$scratch/rootfs" http://deb.debian.org/debian >"$scratch/debootstrap.log" 2>&1 \
        || { tail -20 "$scratch/debootstrap.log"; exit 1; }
    rm -rf "$scratch/rootfs/var/cache/apt/archives/"*.deb "$scratch/rootfs/var/lib/apt/lists/"*
    tar -C "$scratch/rootfs" -cf "$rootfs_tar.partial" . && mv "$rootfs_tar.partial" "$rootfs_tar"
    rm -rf "$scratch/rootfs"
fi
pod import "$rootfs_tar" "localhost/$run_id-base:bookworm" >/dev/null

echo "== runtime image from the release build (the Dockerfile's runtime stage)"
mkdir -p "$scratch/context/out"
cp .build/release/fulcrum .build/release/fulcrumctl "$scratch/context/out/"
pod build --quiet --network none --format docker -f Deploy/docker/Dockerfile --target runtime \
    --build-context build="$scratch/context" --build-arg RUNTIME_BASE="localhost/$run_id-base:bookworm" \
    -t "localhost/$run_id:test" . >/dev/null
image="localhost/$run_id:test"
echo "image: $(pod image inspect "$image" --format '{{.Size}}' | awk '{printf "%.0f MB", $1 / 1e6}'), healthcheck: $(pod image inspect "$image" --format '{{json .HealthCheck.Test}}')"

pod network create "$network" >/dev/null
head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n' >"$scratch/peer-secret"
chmod 644 "$scratch/peer-secret"
cat >"$scratch/fulcrum.yaml" <<EOF
cluster_id: container-test
data_dir: /var/lib/fulcrum
peer_listen: 0.0.0.0:7100
http_listen: 0.0.0.0:8100
flexlb_grpc_listen: 0.0.0.0:8102
peer_secret_file: /etc/fulcrum/peer-secret
log_level: info
EOF

# Ordinal N runs as fulcrum-N, reachable as fulcrum-N.fulcrum-peer (the headless Service's
# names); the joiner's fulcrumctl reaches the cluster through the founders' names, as through
# the client Service (a follower's 421 leads it to the leader).
start_node() {
    local ordinal=$1
    pod run -d --name "fulcrum-$ordinal" --hostname "fulcrum-$ordinal" --network "$network" \
        --network-alias "fulcrum-$ordinal.fulcrum-peer" \
        -e POD_NAME="fulcrum-$ordinal" -e FULCRUM_INITIAL_CLUSTER_SIZE=3 -e FULCRUM_PEER_DOMAIN=fulcrum-peer \
        -e FULCRUM_CLIENT_URL="http://fulcrum-0.fulcrum-peer:8100,http://fulcrum-1.fulcrum-peer:8100,http://fulcrum-2.fulcrum-peer:8100" \
        -v "$run_id-data-$ordinal:/var/lib/fulcrum" \
        -v "$scratch/fulcrum.yaml:/etc/fulcrum/fulcrum.yaml:ro" -v "$scratch/peer-secret:/etc/fulcrum/peer-secret:ro" \
        "$image" >/dev/null
}
ctl() { pod exec -e FULCRUM_ENDPOINTS=http://127.0.0.1:8100 "fulcrum-$1" fulcrumctl "${@:2}"; }
status_of() { pod exec "fulcrum-$1" curl -sf http://127.0.0.1:8100/admin/cluster 2>/dev/null || true; }
field() { python3 -c "import json,sys; d=json.loads(sys.stdin.read() or '{}'); print(d.get('$1') if d.get('$1') is not None else '')"; }
wait_for() {  # wait_for DESCRIPTION SECONDS COMMAND...
    local what=$1 limit=$2 start=$SECONDS
    shift 2
    until "$@"; do
        if [ $((SECONDS - start)) -ge "$limit" ]; then
            echo "error: $what within $limit s" >&2
            for c in $(pod ps -a --format '{{.Names}}'); do echo "--- $c"; pod logs --tail 20 "$c" 2>&1; done >&2
            exit 1
        fi
        sleep 1
    done
    echo "ok: $what ($((SECONDS - start)) s)"
}

echo "== three founders"
for ordinal in 0 1 2; do start_node "$ordinal"; done
leader_known() { leader=$(status_of 0 | field leader); [ -n "$leader" ]; }
wait_for "a leader elected" 60 leader_known
members_are() { [ "$(status_of "$1" | python3 -c "import json,sys; d=json.load(sys.stdin); print(sum(1 for m in d['members'] if m['voter']))" 2>/dev/null)" = "$2" ]; }
wait_for "three voters" 30 members_are 0 3
ctl 0 endpoint status

echo "== a fourth ordinal joins as a learner and is promoted by the entrypoint"
start_node 3
wait_for "four voters" 120 members_are 0 4
fourth=$(status_of 3 | field id)
echo "fulcrum-3 is node $fourth"

echo "== the leader's container killed"
leader=$(status_of 0 | field leader)
victim=$((leader - 1))
[ "$leader" -gt 3 ] && victim=3
echo "leader: node $leader (fulcrum-$victim)"
killed_at=$SECONDS
pod kill --signal KILL "fulcrum-$victim" >/dev/null
survivor=$(( (victim + 1) % 4 ))
new_leader() { local l; l=$(status_of "$survivor" | field leader); [ -n "$l" ] && [ "$l" != "$leader" ]; }
wait_for "a new leader" 30 new_leader
echo "failover: new leader node $(status_of "$survivor" | field leader), $((SECONDS - killed_at)) s after the kill"
registered() { ctl "$survivor" worker list -o json >/dev/null 2>&1 && pod exec "fulcrum-$survivor" curl -sf -X POST http://127.0.0.1:8100/v1/workers \
    -H 'Content-Type: application/json' -d '{"id":"w1","model":"m","role":"PDFUSION","address":"127.0.0.1:9"}' >/dev/null; }
wait_for "a registration through the survivors" 30 registered
for ordinal in 0 1 2 3; do
    [ "$ordinal" = "$victim" ] && continue
    pod healthcheck run "fulcrum-$ordinal" >/dev/null && echo "ok: HEALTHCHECK of fulcrum-$ordinal" \
        || { echo "error: HEALTHCHECK of fulcrum-$ordinal failed" >&2; exit 1; }
done
ctl "$survivor" endpoint health >/dev/null
echo "container test passed"
