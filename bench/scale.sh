#!/usr/bin/env bash
# Scheduler throughput (issue 6): TASKS tasks of one service onto NODES hollow nodes with 3
# managers; time from `service create -d` until every task is assigned and reported running
# (`service ls` shows TASKS/TASKS, polled on a follower so that counting 100,000 tasks five
# times a second does not load the leader). The managers are real shoald daemons, each in a network
# namespace of its own on a test LAN, drained so no task lands on them; the hollow nodes run
# in one `shoald --hollow-nodes` process in a fourth namespace (real certificates, heartbeats,
# sessions and status reports; no containers).
#
#   sudo bench/scale.sh        (NODES=1000 TASKS=100000 by default; SHOAL_BIN_DIR as
#                               start-latency.sh; RESULTS_DIR keeps the summary)
#
# Goal: >= 10,000 tasks/s. For scale: SwarmKit's own scheduler benchmark places ~15,000/s in
# memory alone; Nomad's C1M ran 3,750 containers/s; kube-scheduler ~700 pods/s on 5,000 fake
# nodes. Nothing here runs docker: docker has no hollow nodes.
set -euo pipefail

NODES=${NODES:-1000}
TASKS=${TASKS:-100000}
CGROUP_PARENT=shoal-bench-scale

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
find_shoal_binaries

T=$(mktemp -d /tmp/shoal-scbench.XXXXXX)
P=sbc$$
PIDS=("" "" "" "")
record_host_paths
trap_cleanup

sh_() { local i=$1; shift; "$BIN/shoal" -H "unix://$T/m$i/s.sock" "$@"; }
now_ms() { echo $(($(date +%s%N) / 1000000)); }

make_lan "$P" 0=198.51.100.1 1=198.51.100.2 2=198.51.100.3 h=198.51.100.9
for i in 0 1 2; do
    mkdir -p "$T/m$i"
    nsenter --net="/run/netns/$P-$i" -- "$BIN/shoald" --data-root "$T/m$i/data" \
        --exec-root "$T/m$i/x" --socket "$T/m$i/s.sock" --cgroup-parent "$CGROUP_PARENT" \
        >"$T/m$i/shoald.log" 2>&1 &
    PIDS[$i]=$!
    wait_for 20 "shoald m$i" sh_ "$i" version
done
sh_ 0 swarm init --advertise-addr 198.51.100.1 >/dev/null
sh_ 0 node update --availability drain self >/dev/null
token=$(sh_ 0 swarm join-token -q manager)
for i in 1 2; do
    sh_ "$i" swarm join --token "$token" --availability drain 198.51.100.1:2377 >/dev/null
done
log "3 managers up (drained)"

LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
t=$(now_ms)
nsenter --net="/run/netns/$P-h" -- "$BIN/shoald" --hollow-nodes "$NODES" \
    --join-token "$(sh_ 0 swarm join-token -q worker)" \
    --join 198.51.100.1:2377 --join 198.51.100.2:2377 --join 198.51.100.3:2377 \
    >"$T/hollow.log" 2>&1 &
PIDS[3]=$!
until [[ $(sh_ 0 node ls | grep -c Ready) -ge $((NODES + 3)) ]]; do
    kill -0 "${PIDS[3]}" || { tail "$T/hollow.log" >&2; die "the hollow nodes exited"; }
    sleep 0.5
done
JOIN_MS=$(($(now_ms) - t))
log "$NODES hollow nodes ready after $JOIN_MS ms"

term() { sh_ 2 info | awk '$1 == "Term:" { print $2 }'; }
TERM_BEFORE=$(term)
t=$(now_ms)
sh_ 0 service create -d --name big --replicas "$TASKS" busybox sleep 1d >/dev/null
until [[ $(sh_ 2 service ls | awk '$2 == "big" { print $4 }') == "$TASKS/$TASKS" ]]; do
    sleep 0.2
done
RUN_MS=$(($(now_ms) - t))
TERM_AFTER=$(term)

{
    echo
    echo "scale, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r), load average at start $LOAD_AT_START"
    echo "shoal binaries in $BIN, $BUILT_FROM"
    echo "3 managers (drained) + $NODES hollow nodes in one process, each set in its own network namespace"
    echo
    echo "$NODES hollow nodes joined and ready:        $JOIN_MS ms"
    echo "$TASKS tasks created, placed, running:   $RUN_MS ms"
    echo "Raft term before and after:            $TERM_BEFORE, $TERM_AFTER (a change: the leader was lost)"
    python3 -c "import sys; print(f'throughput: {int(sys.argv[1]) * 1000 / int(sys.argv[2]):,.0f} tasks/s (goal >= 10,000)')" "$TASKS" "$RUN_MS"
} | tee "$T/summary.txt"
if [[ -n ${RESULTS_DIR:-} ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$T/summary.txt" "$RESULTS_DIR/scale.txt"
fi
