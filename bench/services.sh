#!/usr/bin/env bash
# Services (issue 6): shoal against docker 20.10 swarm mode on the same lab, in the same run.
# Each system gets three hosts (a manager and two workers), each a network namespace and UTS
# namespace of its own on a test LAN, with its own daemon; defaults everywhere (heartbeat 5 s)
# except as noted.
#
#   1. `service create --replicas 3` until 3 run, then `service scale` 3 -> 30 until 30 run.
#   2. Rolling update of the 30 replicas to another tag (--update-parallelism 10,
#      --update-monitor 1s, --stop-signal KILL so no stop grace period is waited): time until
#      the update is completed; minus the configured wait (the last 1 s monitor window) it is
#      the orchestration overhead.
#   3. Worker death: a worker's link goes down (the host vanishes) with tasks of a 6-replica
#      service on it; time until 6 tasks run on the other nodes. TRIALS times (default 10),
#      the two workers in turn, each brought back and ready before the next trial.
#
# Both sides are timed the same way: the command with -d, then polling the CLI (every 50 ms)
# for the running count or the update state. docker's agents are started with
# DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1, so they use the loaded image instead of trying a
# registry this machine cannot reach, and its CLI gets --no-resolve-image (its best case).
#
#   sudo bench/services.sh        (SHOAL_BIN_DIR as in start-latency.sh; TRIALS; RESULTS_DIR)
set -euo pipefail

TRIALS=${TRIALS:-10}
CGROUP_PARENT=shoal-bench-services

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
command -v python3 >/dev/null || die "python3 is not installed"
find_shoal_binaries
find_docker

T=$(mktemp -d /tmp/shoal-sbench.XXXXXX)
P=sbs$$
PIDS=()
record_host_paths

cleanup() {
    local rc=$? i
    trap - EXIT INT TERM
    set +e
    log "cleaning up $T"
    # docker first: its services removed and containers gone before the daemons stop (a
    # container outlives a killed shim).
    for i in 0 1 2; do
        [[ -S $T/d$i/docker.sock ]] || continue
        if ((i == 0)); then
            dk 0 service ls -q 2>/dev/null | xargs -r timeout 30 "$DOCKER" -H "unix://$T/d0/docker.sock" service rm >/dev/null 2>&1
        fi
    done
    for i in 0 1 2; do
        [[ -S $T/d$i/docker.sock ]] || continue
        ip -n "$P-d$i" link set lan0 up 2>/dev/null
        for _ in $(seq 50); do
            [[ -z $(dk "$i" ps -q 2>/dev/null) ]] && break
            dk "$i" ps -aq 2>/dev/null | xargs -r timeout 30 "$DOCKER" -H "unix://$T/d$i/docker.sock" rm -f >/dev/null 2>&1
            sleep 0.2
        done
    done
    for i in 0 1 2; do
        [[ -S $T/s$i/s.sock ]] || continue
        sh_ "$i" ps -aq 2>/dev/null | xargs -r timeout 30 "$BIN/shoal" -H "unix://$T/s$i/s.sock" rm -f >/dev/null 2>&1
    done
    local pid
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

TMPDIR=$T "$BIN/shoal-testkit" busybox-image -o "$T/busybox.tar"
rm -rf "$T/shoal-testkit"
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)

# ------------------------------------------------------------------ the two labs
make_lan "$P" s0=198.51.100.1 s1=198.51.100.2 s2=198.51.100.3
for i in 0 1 2; do
    mkdir -p "$T/s$i"
    nsenter --net="/run/netns/$P-s$i" -- unshare --uts -- sh -c "hostname shoal-$i && exec \"\$0\" \"\$@\"" \
        "$BIN/shoald" --data-root "$T/s$i/data" --exec-root "$T/s$i/x" --socket "$T/s$i/s.sock" \
        --cgroup-parent "$CGROUP_PARENT" >"$T/s$i/shoald.log" 2>&1 &
    PIDS+=($!)
done
for i in 0 1 2; do
    wait_for 30 "shoald s$i" sh_ "$i" version
    sh_ "$i" image load -i "$T/busybox.tar" >/dev/null
    sh_ "$i" tag busybox busybox:v2
done
sh_ 0 swarm init --advertise-addr 198.51.100.1 >/dev/null
token=$(sh_ 0 swarm join-token -q worker)
for i in 1 2; do sh_ "$i" swarm join --token "$token" 198.51.100.1:2377 >/dev/null; done
log "shoal: 1 manager + 2 workers up"

if ((HAVE_DOCKER)); then
    make_lan "$P" d0=203.0.113.1 d1=203.0.113.2 d2=203.0.113.3
    echo '{}' >"$T/daemon.json"
    for i in 0 1 2; do
        mkdir -p "$T/d$i"
        nsenter --net="/run/netns/$P-d$i" -- unshare --uts -- env DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1 \
            sh -c "hostname docker-$i && exec \"\$0\" \"\$@\"" \
            "$DOCKERD" --config-file "$T/daemon.json" --data-root "$T/d$i/docker" \
            --exec-root "$T/d$i/x" --pidfile "$T/d$i/docker.pid" -H "unix://$T/d$i/docker.sock" \
            --storage-driver overlay2 >"$T/d$i/dockerd.log" 2>&1 &
        PIDS+=($!)
    done
    for i in 0 1 2; do
        wait_for 60 "dockerd d$i" dk "$i" version || { tail -20 "$T/d$i/dockerd.log" >&2; die "dockerd did not come up"; }
        dk "$i" load -i "$T/busybox.tar" >/dev/null
        dk "$i" tag busybox busybox:v2
    done
    dk 0 swarm init --advertise-addr 203.0.113.1 >/dev/null
    token=$(dk 0 swarm join-token -q worker)
    for i in 1 2; do dk "$i" swarm join --token "$token" 203.0.113.1:2377 >/dev/null; done
    log "docker: 1 manager + 2 workers up"
fi

# ------------------------------------------------------------------ per-system commands
# cli SYSTEM ARGS...: the manager's CLI of shoal or docker.
cli() { local s=$1; shift; if [[ $s == shoal ]]; then sh_ 0 "$@"; else dk 0 "$@"; fi; }
# docker's CLI asks a registry for the image's digest first (this machine reaches none): it
# is told not to, so only the orchestration is timed.
NORESOLVE=(--no-resolve-image)
svc_flags() { if [[ $1 == docker ]]; then echo "${NORESOLVE[@]}"; fi; }

replicas() { # SYSTEM SERVICE: "running/desired"
    if [[ $1 == shoal ]]; then
        sh_ 0 service ls | awk -v s="$2" '$2 == s { print $4 }'
    else
        dk 0 service ls --filter "name=$2" --format '{{.Replicas}}'
    fi
}

update_state() { # SYSTEM SERVICE
    if [[ $1 == shoal ]]; then
        sh_ 0 service inspect "$2" | python3 -c 'import json, sys; print((json.load(sys.stdin)[0].get("update_status") or {}).get("state", ""))'
    else
        dk 0 service inspect -f '{{if .UpdateStatus}}{{.UpdateStatus.State}}{{end}}' "$2"
    fi
}

running_off() { # SYSTEM SERVICE HOST: tasks running on nodes other than HOST
    if [[ $1 == shoal ]]; then
        sh_ 0 service ps -f desired-state=running "$2" | awk -v h="$3" 'NR > 1 && $4 != h && $6 == "Running"' | wc -l
    else
        dk 0 service ps -f desired-state=running --format '{{.Node}} {{.CurrentState}}' "$2" |
            awk -v h="$3" '$1 != h && $2 == "Running"' | wc -l
    fi
}

all_ready() { # SYSTEM
    if [[ $1 == shoal ]]; then
        [[ $(sh_ 0 node ls | grep -c Ready) -eq 3 ]]
    else
        [[ $(dk 0 node ls --format '{{.Status}}' | grep -c Ready) -eq 3 ]]
    fi
}

until_ms() { # START_MS CONDITION...: poll (50 ms) until CONDITION holds; ms since START_MS
    local start=$1
    shift
    until "$@"; do sleep 0.05; done
    echo $(($(now_ms) - start))
}

replicas_are() { [[ $(replicas "$1" "$2") == "$3" ]]; }
state_is() { [[ $(update_state "$1" "$2") == "$3" ]]; }
off_is() { [[ $(running_off "$1" "$2" "$3") -ge $4 ]]; }

declare -A R
SYSTEMS=(shoal)
((HAVE_DOCKER)) && SYSTEMS+=(docker)

for s in "${SYSTEMS[@]}"; do
    until all_ready "$s"; do sleep 0.2; done
    log "$s: create --replicas 3"
    t=$(now_ms)
    cli "$s" service create -d $(svc_flags "$s") --name web --replicas 3 --stop-signal KILL busybox sleep 1d >/dev/null
    R[${s}_create]=$(until_ms "$t" replicas_are "$s" web 3/3)
    log "$s: scale 3 -> 30"
    t=$(now_ms)
    cli "$s" service scale -d web=30 >/dev/null
    R[${s}_scale]=$(until_ms "$t" replicas_are "$s" web 30/30)
    log "$s: rolling update of 30, parallelism 10, monitor 1 s"
    t=$(now_ms)
    cli "$s" service update -d $(svc_flags "$s") --image busybox:v2 --update-parallelism 10 --update-monitor 1s web >/dev/null
    R[${s}_update]=$(until_ms "$t" state_is "$s" web completed)
    until replicas_are "$s" web 30/30; do sleep 0.05; done
    cli "$s" service rm web >/dev/null

    log "$s: worker death, $TRIALS trials"
    cli "$s" service create -d $(svc_flags "$s") --name death --replicas 6 --stop-signal KILL busybox sleep 1d >/dev/null
    until replicas_are "$s" death 6/6; do sleep 0.1; done
    times=()
    for ((k = 0; k < TRIALS; k++)); do
        w=$((1 + k % 2))
        ns=$P-${s:0:1}$w
        host=$s-$w
        t=$(now_ms)
        ip -n "$ns" link set lan0 down
        ms=$(until_ms "$t" off_is "$s" death "$host" 6)
        times+=("$ms")
        log "$s trial $((k + 1)): $host cut off, 6 tasks running elsewhere after $ms ms"
        ip -n "$ns" link set lan0 up
        until all_ready "$s"; do sleep 0.2; done
        # Back and ready: let its agent settle before the next trial.
        sleep 2
    done
    R[${s}_death]=$(python3 -c 'import statistics, sys; print(int(statistics.median(int(a) for a in sys.argv[1:])))' "${times[@]}")
    R[${s}_death_all]="${times[*]}"
    cli "$s" service rm death >/dev/null
done

# ------------------------------------------------------------------ summary
{
    echo
    echo "services, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r), load average at start $LOAD_AT_START"
    echo "shoal binaries in $BIN, $BUILT_FROM"
    ((HAVE_DOCKER)) && echo "docker $(dk 0 version --format '{{.Server.Version}}' 2>/dev/null), swarm mode, DOCKER_SERVICE_PREFER_OFFLINE_IMAGE=1"
    echo "3 hosts (1 manager + 2 workers) per system, each a network + UTS namespace on a test LAN"
    echo
    printf '%-44s %10s %10s %8s\n' "" shoal docker ratio
    row() { # label key [minus_ms]
        local a=${R[shoal_$2]} b=${R[docker_$2]:-} minus=${3:-0} r=""
        a=$((a - minus))
        [[ -n $b ]] && { b=$((b - minus)); r=$(ratio "$a" "$b"); }
        printf '%-44s %8s ms %8s ms %8s\n' "$1" "$a" "${b:-n/a}" "$r"
    }
    row "create --replicas 3, until 3 run" create
    row "scale 3 -> 30, until 30 run" scale
    row "update 30 (par. 10), total" update
    row "update 30 (par. 10), minus the 1 s monitor" update 1000
    row "worker death -> 6 running elsewhere (median)" death
    echo
    echo "worker death, each trial (ms): shoal ${R[shoal_death_all]}"
    ((HAVE_DOCKER)) && echo "                               docker ${R[docker_death_all]}"
    echo "goals: create and scale >= 10x faster (ratio <= 0.10); update overhead <= 1/10 of docker's"
} | tee "$T/summary.txt"
if [[ -n ${RESULTS_DIR:-} ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$T/summary.txt" "$RESULTS_DIR/services.txt"
fi
