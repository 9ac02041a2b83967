#!/usr/bin/env bash
# Networking (issue 4): TCP throughput (iperf3, one stream) and TCP connection rate (tcp_crr:
# connect, one byte each way, close) over
#
#   loopback        127.0.0.1 inside one namespace: the ceiling
#   veth pair       two namespaces joined by a bare veth pair: the "line rate" of the bridge path
#   bridge c->c     container to container over shoal's bridge, and over docker's docker0;
#                   shoal's also with br_netfilter off (what a host without docker has)
#   host->published the host to 127.0.0.1:PORT published by a container (-p): shoal DNATs in
#                   the kernel; docker 20.10 sends it through its userland docker-proxy
#   remote->published another "host" (a namespace behind a veth) to HOSTIP:PORT
#
# Goals: shoal's bridge throughput >= 90 % of the veth pair's; shoal's published-port
# connection rate >= docker's. Every daemon runs in a network namespace of its own standing
# in for its host (its bridge, NAT rules, FORWARD policy and docker-proxy live there), so the
# machine's own network is never touched and the two never see each other's rules.
#
#   sudo bench/network.sh
#
# Each figure is the median of REPS (default 3) runs of SECS (default 5) seconds: on a small
# machine single runs vary by 20 %. THREADS: tcp_crr client threads (default 2). SHOAL_BIN_DIR,
# DOCKER, RESULTS_DIR as in start-latency.sh.
set -euo pipefail

SECS=${SECS:-5}
REPS=${REPS:-3}
THREADS=${THREADS:-2}
CGROUP_PARENT=shoal-bench-net
IPERF_PORT=5201
CRR_PORT=7000

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0): it creates namespaces, bridges and containers"
for tool in iperf3 gcc python3 nsenter ip; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install -y iperf3 gcc libc6-dev python3 util-linux iproute2)"
done
find_shoal_binaries
find_docker

T=$(mktemp -d /tmp/shoal-nbench.XXXXXX)
SHOALD_PID=
DOCKERD_PID=
SH=(-H "unix://$T/s.sock")
export DOCKER_CONFIG=$T/docker-cli
DK=(-H "unix://$T/docker.sock")
P=sbn$$ # namespace prefix
record_host_paths

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    log "cleaning up $T"
    stop_daemons
    remove_t "$CGROUP_PARENT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
in_ns() { local ns=$1; shift; nsenter --net="$ns" -- "$@"; }

# A "host" namespace with a "remote" one behind a veth: host 192.0.2.1, remote 192.0.2.2.
make_host() {
    local h=$1
    make_netns "$h"
    make_netns "$h-r"
    ip -n "$h" link add rem0 type veth peer name eth0 netns "$h-r"
    ip -n "$h" addr add 192.0.2.1/24 dev rem0
    ip -n "$h" link set rem0 up
    ip -n "$h-r" addr add 192.0.2.2/24 dev eth0
    ip -n "$h-r" link set eth0 up
}

# Start the servers in a namespace: iperf3 and tcp_crr, both killed with $T.
serve() {
    local ns=$1
    in_ns "$ns" iperf3 -s -p "$IPERF_PORT" --pidfile "$T/iperf.$RANDOM.pid" -D >/dev/null
    in_ns "$ns" "$T/tcp_crr" server "$CRR_PORT" "$T" &
    disown
    sleep 0.3
}

# Gbit/s of one iperf3 stream from namespace $1 to $2:$3.
throughput() {
    local out
    out=$(in_ns "$1" iperf3 -c "$2" -p "$3" -t "$SECS" -J) || { echo "iperf3 to $2:$3 failed" >&2; echo 0; return; }
    python3 -c 'import json, sys; bps = json.load(sys.stdin)["end"]["sum_received"]["bits_per_second"]; print(f"{bps / 1e9:.2f}")' <<<"$out"
}

# Connections per second from namespace $1 to $2:$3.
conn_rate() {
    in_ns "$1" sysctl -qw net.ipv4.tcp_tw_reuse=1
    in_ns "$1" "$T/tcp_crr" client "$2" "$3" "$SECS" "$THREADS" || echo 0
}

ns_of_pid() { echo "/proc/$1/ns/net"; }

median() { python3 -c 'import statistics, sys; print(statistics.median(float(a) for a in sys.argv[1:]))' "$@"; }

declare -A TPUT CRR
measure() { # name client-ns ip iperf-port crr-port
    local t=() c=() i
    for ((i = 0; i < REPS; i++)); do
        t+=("$(throughput "$2" "$3" "$4")")
        c+=("$(conn_rate "$2" "$3" "$5")")
    done
    TPUT[$1]=$(median "${t[@]}")
    CRR[$1]=$(median "${c[@]}")
    CRR[$1]=${CRR[$1]%.0}
    log "$1: ${TPUT[$1]} Gbit/s (${t[*]}), ${CRR[$1]} conn/s (${c[*]})"
}

# ---------------------------------------------------------------- setup
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
gcc -O2 -static -pthread -o "$T/tcp_crr" "$REPO/bench/tools/tcp_crr.c"
TMPDIR=$T "$BIN/shoal-testkit" busybox-image -o "$T/busybox.tar"
rm -rf "$T/shoal-testkit"

log "baselines: loopback and a bare veth pair"
make_netns "$P-va"
make_netns "$P-vb"
ip -n "$P-va" link add veth0 type veth peer name veth0 netns "$P-vb"
ip -n "$P-va" addr add 10.250.0.1/24 dev veth0
ip -n "$P-vb" addr add 10.250.0.2/24 dev veth0
ip -n "$P-va" link set veth0 up
ip -n "$P-vb" link set veth0 up
serve "/run/netns/$P-va"
measure loopback "/run/netns/$P-va" 127.0.0.1 "$IPERF_PORT" "$CRR_PORT"
measure veth "/run/netns/$P-vb" 10.250.0.1 "$IPERF_PORT" "$CRR_PORT"

log "shoal: shoald in its own host namespace"
make_host "$P-sh"
start_shoald "$CGROUP_PARENT" nsenter --net="/run/netns/$P-sh" --
"$BIN/shoal" "${SH[@]}" run -d --name srv -p "$IPERF_PORT:$IPERF_PORT" -p "$CRR_PORT:$CRR_PORT" busybox sleep 1d >/dev/null
"$BIN/shoal" "${SH[@]}" run -d --name cli busybox sleep 1d >/dev/null
spid=$("$BIN/shoal" "${SH[@]}" inspect srv | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["State"]["Pid"])')
cpid=$("$BIN/shoal" "${SH[@]}" inspect cli | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["State"]["Pid"])')
sip=$("$BIN/shoal" "${SH[@]}" inspect srv | python3 -c 'import json, sys; print(json.load(sys.stdin)[0]["NetworkSettings"]["IPAddress"])')
serve "$(ns_of_pid "$spid")"
measure "shoal bridge" "$(ns_of_pid "$cpid")" "$sip" "$IPERF_PORT" "$CRR_PORT"
# docker loads br_netfilter, which sends every bridged packet through netfilter's IP hooks;
# on a host without docker nothing loads it. Its switch is per namespace: turn it off in this
# private "host" to measure that case too.
if [[ -e /proc/sys/net/bridge/bridge-nf-call-iptables ]]; then
    in_ns "/run/netns/$P-sh" sysctl -qw net.bridge.bridge-nf-call-iptables=0
    measure "shoal bridge, no br_nf" "$(ns_of_pid "$cpid")" "$sip" "$IPERF_PORT" "$CRR_PORT"
    in_ns "/run/netns/$P-sh" sysctl -qw net.bridge.bridge-nf-call-iptables=1
fi
measure "shoal host->published" "/run/netns/$P-sh" 127.0.0.1 "$IPERF_PORT" "$CRR_PORT"
measure "shoal remote->published" "/run/netns/$P-sh-r" 192.0.2.1 "$IPERF_PORT" "$CRR_PORT"
stop_daemons
SHOALD_PID=

if ((HAVE_DOCKER)); then
    log "docker: dockerd in its own host namespace (iptables, docker0, userland proxy: its defaults)"
    make_host "$P-dk"
    start_dockerd nsenter --net="/run/netns/$P-dk" -- --
fi
if ((HAVE_DOCKER)); then
    "$DOCKER" "${DK[@]}" run -d --name srv -p "$IPERF_PORT:$IPERF_PORT" -p "$CRR_PORT:$CRR_PORT" busybox sleep 1d >/dev/null
    "$DOCKER" "${DK[@]}" run -d --name cli busybox sleep 1d >/dev/null
    spid=$("$DOCKER" "${DK[@]}" inspect -f '{{.State.Pid}}' srv)
    cpid=$("$DOCKER" "${DK[@]}" inspect -f '{{.State.Pid}}' cli)
    sip=$("$DOCKER" "${DK[@]}" inspect -f '{{.NetworkSettings.IPAddress}}' srv)
    serve "$(ns_of_pid "$spid")"
    measure "docker bridge" "$(ns_of_pid "$cpid")" "$sip" "$IPERF_PORT" "$CRR_PORT"
    measure "docker host->published" "/run/netns/$P-dk" 127.0.0.1 "$IPERF_PORT" "$CRR_PORT"
    measure "docker remote->published" "/run/netns/$P-dk-r" 192.0.2.1 "$IPERF_PORT" "$CRR_PORT"
fi

# ---------------------------------------------------------------- summary
pct() { python3 -c "import sys; print(f'{100 * float(sys.argv[1]) / float(sys.argv[2]):.0f} %')" "$1" "$2"; }
{
    echo
    echo "network, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r), load average at start $LOAD_AT_START"
    echo "shoal binaries in $BIN, $BUILT_FROM; median of $REPS runs of $SECS s, tcp_crr with $THREADS client threads"
    ((HAVE_DOCKER)) && echo "docker $("$DOCKER" "${DK[@]}" version --format '{{.Server.Version}}' 2>/dev/null) (userland proxy on, as by default)"
    echo
    printf '%-26s %12s %12s\n' path "Gbit/s" "conn/s"
    for k in loopback veth "shoal bridge" "docker bridge" "shoal bridge, no br_nf" "shoal host->published" "docker host->published" \
        "shoal remote->published" "docker remote->published"; do
        [[ -n ${TPUT[$k]:-} ]] && printf '%-26s %12s %12s\n' "$k" "${TPUT[$k]}" "${CRR[$k]}"
    done
    echo
    echo "shoal bridge throughput / veth pair: $(pct "${TPUT[shoal bridge]}" "${TPUT[veth]}") (goal >= 90 %)"
    echo "shoal bridge conn rate / veth pair:  $(pct "${CRR[shoal bridge]}" "${CRR[veth]}")"
    if [[ -n ${TPUT[shoal bridge, no br_nf]:-} ]]; then
        echo "without br_netfilter (a host without docker): throughput $(pct "${TPUT[shoal bridge, no br_nf]}" "${TPUT[veth]}"), conn rate $(pct "${CRR[shoal bridge, no br_nf]}" "${CRR[veth]}") of the veth pair"
    fi
    if ((HAVE_DOCKER)); then
        echo "shoal / docker, bridge throughput:            $(ratio "${TPUT[shoal bridge]}" "${TPUT[docker bridge]}")"
        echo "shoal / docker, host->published conn rate:    $(ratio "${CRR[shoal host->published]}" "${CRR[docker host->published]}") (goal >= 1)"
        echo "shoal / docker, host->published throughput:   $(ratio "${TPUT[shoal host->published]}" "${TPUT[docker host->published]}")"
        echo "shoal / docker, remote->published conn rate:  $(ratio "${CRR[shoal remote->published]}" "${CRR[docker remote->published]}") (goal >= 1)"
    fi
} | tee "$T/summary.txt"

if [[ -n ${RESULTS_DIR:-} ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$T/summary.txt" "$RESULTS_DIR/network.txt"
    log "results copied to $RESULTS_DIR"
fi
