#!/usr/bin/env bash
# Image distribution (issue 7): shoal's swarm content store against docker 20.10 swarm mode
# pulling from a local registry (Debian's docker-registry 2.8), on the same machine, in the
# same run.
#
#   1. Start: a 3-replica service from an image of ~47 MB (5 gzip layers: busybox and four
#      of 15 MiB) on 3 workers that lack it (the manager is drained). shoal: the image is
#      loaded on the manager (`shoal image load` makes it a swarm image); docker: it is
#      pushed to the registry, which runs in the manager's namespace, and the workers pull
#      it from there (--insecure-registry). Time from `service create -d` until 3 run.
#   2. Unpack: `shoal image load --local` against `docker load` of another image of the same
#      shape on a worker that has none of its layers: MB/s of unpacked layer data.
#
# Each system has its own lab: four hosts, each a network and UTS namespace on a LAN with
# its own daemon. TRIALS (default 3) fresh services, each from a new image (new seed) so
# no worker has its layers.
#
#   sudo bench/images.sh        (SHOAL_BIN_DIR as in start-latency.sh; TRIALS)
set -euo pipefail

TRIALS=${TRIALS:-3}
CGROUP_PARENT=shoal-bench-images

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
command -v python3 >/dev/null || die "python3 is not installed"
command -v docker-registry >/dev/null || die "docker-registry is not installed (deploy/install-deps.sh)"
command -v skopeo >/dev/null || die "skopeo is not installed (deploy/install-deps.sh)"
find_shoal_binaries
find_docker

T=$(mktemp -d /tmp/shoal-ibench.XXXXXX)
P=ibs$$
record_host_paths
H=(0 1 2 3)

cleanup() {
    local rc=$? i pid
    trap - EXIT INT TERM
    set +e
    log "cleaning up $T"
    if [[ -S $T/d0/docker.sock ]]; then
        dk 0 service ls -q 2>/dev/null | xargs -r timeout 30 "$DOCKER" -H "unix://$T/d0/docker.sock" service rm >/dev/null 2>&1
    fi
    for i in "${H[@]}"; do
        [[ -S $T/d$i/docker.sock ]] || continue
        for _ in $(seq 50); do
            [[ -z $(dk "$i" ps -q 2>/dev/null) ]] && break
            dk "$i" ps -aq 2>/dev/null | xargs -r timeout 30 "$DOCKER" -H "unix://$T/d$i/docker.sock" rm -f >/dev/null 2>&1
            sleep 0.2
        done
    done
    if [[ -S $T/s0/s.sock ]]; then
        sh_ 0 service ls -q 2>/dev/null | xargs -r timeout 30 "$BIN/shoal" -H "unix://$T/s0/s.sock" service rm >/dev/null 2>&1
    fi
    for i in "${H[@]}"; do
        [[ -S $T/s$i/s.sock ]] || continue
        sh_ "$i" ps -aq 2>/dev/null | xargs -r timeout 30 "$BIN/shoal" -H "unix://$T/s$i/s.sock" rm -f >/dev/null 2>&1
    done
    for pid in "${PIDS[@]}"; do [[ -n $pid ]] && stop_pid "$pid" 20; done
    remove_t "$CGROUP_PARENT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

sh_() { local i=$1; shift; "$BIN/shoal" -H "unix://$T/s$i/s.sock" "$@"; }
dk() { local i=$1; shift; "$DOCKER" -H "unix://$T/d$i/docker.sock" "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }
until_ms() { # START_MS CONDITION...: poll (50 ms) until CONDITION holds; ms since START_MS
    local start=$1
    shift
    until "$@"; do sleep 0.05; done
    echo $(($(now_ms) - start))
}
image() { # OUT NAME SEED: an image of busybox and four 15 MiB layers; prints its gzip bytes
    python3 "$REPO/bench/tools/make-image.py" "$1" "$2" 4 15 "$3" | cut -d' ' -f1
}
# Bytes of layer data in a docker-save archive, unpacked.
unpacked_bytes() {
    python3 - "$1" <<'PY'
import gzip, json, sys, tarfile
t = tarfile.open(sys.argv[1])
m = json.load(t.extractfile("manifest.json"))[0]
print(sum(len(gzip.decompress(t.extractfile(l).read())) for l in m["Layers"]))
PY
}

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ the two labs
make_lan "$P" s0=198.51.100.1 s1=198.51.100.2 s2=198.51.100.3 s3=198.51.100.4
for i in "${H[@]}"; do
    mkdir -p "$T/s$i"
    nsenter --net="/run/netns/$P-s$i" -- unshare --uts -- sh -c "hostname shoal-$i && exec \"\$0\" \"\$@\"" \
        "$BIN/shoald" --data-root "$T/s$i/data" --exec-root "$T/s$i/x" --socket "$T/s$i/s.sock" \
        --cgroup-parent "$CGROUP_PARENT" >"$T/s$i/shoald.log" 2>&1 &
    PIDS+=($!)
done
for i in "${H[@]}"; do wait_for 30 "shoald s$i" sh_ "$i" version; done
sh_ 0 swarm init --advertise-addr 198.51.100.1 >/dev/null
token=$(sh_ 0 swarm join-token -q worker)
for i in 1 2 3; do sh_ "$i" swarm join --token "$token" 198.51.100.1:2377 >/dev/null; done
sh_ 0 node update --availability drain "$(sh_ 0 node ls -q | head -1)" >/dev/null 2>&1 ||
    sh_ 0 node update --availability drain shoal-0 >/dev/null
wait_for 30 "shoal nodes ready" bash -c "[[ \$('$BIN/shoal' -H unix://$T/s0/s.sock node ls | grep -c Ready) -eq 4 ]]"
log "shoal: 1 manager (drained) + 3 workers up"

if ((HAVE_DOCKER)); then
    make_lan "$P" d0=203.0.113.1 d1=203.0.113.2 d2=203.0.113.3 d3=203.0.113.4
    REG=203.0.113.1:5000
    mkdir -p "$T/registry"
    cat >"$T/registry/config.yml" <<YML
version: 0.1
log:
  level: error
storage:
  filesystem:
    rootdirectory: $T/registry/data
http:
  addr: $REG
YML
    nsenter --net="/run/netns/$P-d0" -- docker-registry serve "$T/registry/config.yml" >"$T/registry/log" 2>&1 &
    PIDS+=($!)
    printf '{"insecure-registries": ["%s"]}\n' "$REG" >"$T/daemon.json"
    for i in "${H[@]}"; do
        mkdir -p "$T/d$i"
        nsenter --net="/run/netns/$P-d$i" -- unshare --uts -- \
            sh -c "hostname docker-$i && exec \"\$0\" \"\$@\"" \
            "$DOCKERD" --config-file "$T/daemon.json" --data-root "$T/d$i/docker" \
            --exec-root "$T/d$i/x" --pidfile "$T/d$i/docker.pid" -H "unix://$T/d$i/docker.sock" \
            --storage-driver overlay2 >"$T/d$i/dockerd.log" 2>&1 &
        PIDS+=($!)
    done
    for i in "${H[@]}"; do
        wait_for 60 "dockerd d$i" dk "$i" version || { tail -20 "$T/d$i/dockerd.log" >&2; die "dockerd did not come up"; }
    done
    dk 0 swarm init --advertise-addr 203.0.113.1 >/dev/null
    token=$(dk 0 swarm join-token -q worker)
    for i in 1 2 3; do dk "$i" swarm join --token "$token" 203.0.113.1:2377 >/dev/null; done
    dk 0 node update --availability drain docker-0 >/dev/null
    wait_for 30 "docker nodes ready" bash -c "[[ \$('$DOCKER' -H unix://$T/d0/docker.sock node ls --format '{{.Status}}' | grep -c Ready) -eq 4 ]]"
    log "docker: 1 manager (drained) + 3 workers up, registry at $REG"
fi

replicas() { # SYSTEM SERVICE: "running/desired"
    if [[ $1 == shoal ]]; then
        sh_ 0 service ls | awk -v s="$2" '$2 == s { print $4 }'
    else
        dk 0 service ls --filter "name=$2" --format '{{.Replicas}}'
    fi
}
replicas_are() { [[ $(replicas "$1" "$2") == "$3" ]]; }

declare -A START
SIZE=0
for trial in $(seq "$TRIALS"); do
    img=$T/app$trial.tar
    SIZE=$(image "$img" "app:t$trial" "t$trial")
    # shoal: the image becomes a swarm image on the manager; the workers fetch it.
    pub0=$(now_ms)
    sh_ 0 image load -q -i "$img" >/dev/null
    PUBLISH_MS=$(($(now_ms) - pub0))
    t0=$(now_ms)
    sh_ 0 service create -d -q --name "app$trial" --replicas 3 "app:t$trial" sleep 3600 >/dev/null
    START[shoal,$trial]=$(until_ms "$t0" replicas_are shoal "app$trial" 3/3)
    log "shoal trial $trial: 3 running after ${START[shoal,$trial]} ms (publishing took $PUBLISH_MS ms)"
    sh_ 0 service rm "app$trial" >/dev/null
    if ((HAVE_DOCKER)); then
        nsenter --net="/run/netns/$P-d0" -- skopeo copy --quiet --dest-tls-verify=false \
            "docker-archive:$img" "docker://$REG/app:t$trial"
        t0=$(now_ms)
        dk 0 service create -d -q --name "app$trial" --replicas 3 "$REG/app:t$trial" sleep 3600 >/dev/null
        START[docker,$trial]=$(until_ms "$t0" replicas_are docker "app$trial" 3/3)
        log "docker trial $trial: 3 running after ${START[docker,$trial]} ms"
        dk 0 service rm "app$trial" >/dev/null
    fi
done

# ------------------------------------------------------------------ unpack throughput
img=$T/unpack.tar
image "$img" app:unpack unpack >/dev/null
BYTES=$(unpacked_bytes "$img")
t0=$(now_ms)
sh_ 1 image load --local -q -i "$img" >/dev/null
UNPACK[0]=$(($(now_ms) - t0))
if ((HAVE_DOCKER)); then
    t0=$(now_ms)
    dk 1 load -q -i "$img" >/dev/null
    UNPACK[1]=$(($(now_ms) - t0))
fi
mbs() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1e6 / (int(sys.argv[2]) / 1000):.0f}')" "$1" "$2"; }

median() { printf '%s\n' "$@" | sort -n | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
S=(); D=()
for trial in $(seq "$TRIALS"); do
    S+=("${START[shoal,$trial]}")
    ((HAVE_DOCKER)) && D+=("${START[docker,$trial]}")
done
echo
echo "image: 5 gzip layers, $((SIZE / 1000000)) MB compressed; $((BYTES / 1000000)) MB unpacked; $TRIALS trials"
echo "machine: $(nproc) cores, load at start $LOAD_AT_START; shoal $BUILT_FROM"
printf '%-44s %12s %12s %8s\n' "" shoal docker ratio
s=$(median "${S[@]}")
if ((HAVE_DOCKER)); then
    d=$(median "${D[@]}")
    printf '%-44s %9s ms %9s ms %8s\n' "3 replicas on 3 workers lacking the image" "$s" "$d" "$(ratio "$s" "$d")"
    printf '%-44s %6s MB/s %6s MB/s %8s\n' "unpack (load of a gzip-layer archive)" "$(mbs "$BYTES" "${UNPACK[0]}")" "$(mbs "$BYTES" "${UNPACK[1]}")" "$(ratio "${UNPACK[1]}" "${UNPACK[0]}")"
    echo "(start: median ms, lower is better, ratio shoal/docker; unpack: ratio = docker time / shoal time, higher is better)"
    echo "all trials: shoal ${S[*]} ms; docker ${D[*]} ms"
else
    printf '%-44s %9s ms\n' "3 replicas on 3 workers lacking the image" "$s"
    printf '%-44s %6s MB/s\n' "unpack (load of a gzip-layer archive)" "$(mbs "$BYTES" "${UNPACK[0]}")"
fi
