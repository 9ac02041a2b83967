#!/usr/bin/env bash
# A swarm of N hosts on this one machine, for demos and manual testing: each host is a
# network namespace (and hostname) on a shared bridge with its own shoald (data root, exec
# root, socket, cgroup parent). The first MANAGERS hosts are managers, the rest workers.
#
#   sudo deploy/lab.sh up [N] [MANAGERS]    (default 3 hosts, 1 manager)
#   sudo deploy/lab.sh status
#   sudo deploy/lab.sh shoal HOST ARGS...    (run the CLI against host HOST, 1-based)
#   sudo deploy/lab.sh kill HOST | start HOST | stop HOST
#   sudo deploy/lab.sh down
#
# Hosts get 198.51.100.<i>/24 (TEST-NET-2); the bridge lives in the namespace "shoal-lab-br".
# State lives under /tmp/shoal-lab. Binaries come from target/release (build with
# `cargo build --release --workspace --bins`) or SHOAL_BIN_DIR.
set -euo pipefail

ROOT=/tmp/shoal-lab
BR=shoal-lab-br
REPO=$(cd "$(dirname "$0")/.." && pwd)
BIN=${SHOAL_BIN_DIR:-$REPO/target/release}

die() { echo "lab: $*" >&2; exit 1; }
[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0 $*)"
for b in shoald shoal shoal-runc shoal-shim; do
    [[ -x $BIN/$b ]] || die "$BIN/$b not found: build with 'cargo build --release --workspace --bins' or set SHOAL_BIN_DIR"
done

ns() { echo "shoal-lab-$1"; }
ip_of() { echo "198.51.100.$1"; }
cli() { local i=$1; shift; "$BIN/shoal" -H "unix://$ROOT/h$i/s.sock" "$@"; }
hosts() { ls -d "$ROOT"/h* 2>/dev/null | sed 's|.*/h||' | sort -n; }

start_host() {
    local i=$1
    [[ -f $ROOT/h$i/pid ]] && kill -0 "$(cat "$ROOT/h$i/pid")" 2>/dev/null && return 0
    # A UTS namespace too: each host has a hostname of its own (lab-h1, …), as node ls shows.
    nsenter --net="/run/netns/$(ns "$i")" -- unshare --uts -- sh -c \
        'hostname "$0" && exec "$@"' "lab-h$i" "$BIN/shoald" --data-root "$ROOT/h$i/data" \
        --exec-root "$ROOT/h$i/x" --socket "$ROOT/h$i/s.sock" --cgroup-parent "shoal-lab-h$i" \
        >>"$ROOT/h$i/shoald.log" 2>&1 &
    echo $! >"$ROOT/h$i/pid"
    for _ in $(seq 100); do cli "$i" version >/dev/null 2>&1 && return 0; sleep 0.1; done
    die "shoald on host $i did not start; see $ROOT/h$i/shoald.log"
}

stop_host() { # i [signal]
    local i=$1 sig=${2:-TERM} pid
    [[ -f $ROOT/h$i/pid ]] || return 0
    pid=$(cat "$ROOT/h$i/pid")
    kill "-$sig" "$pid" 2>/dev/null || true
    for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    rm -f "$ROOT/h$i/pid"
}

up() {
    local n=${1:-3} managers=${2:-1} i
    [[ -d $ROOT ]] && die "a lab is already up ($ROOT): 'deploy/lab.sh down' first"
    ((n >= 1 && n <= 50 && managers >= 1 && managers <= n)) || die "use 1-50 hosts and 1-N managers"
    mkdir -p "$ROOT"
    ip netns add "$BR"
    ip -n "$BR" link add br0 type bridge
    ip -n "$BR" link set br0 up
    for ((i = 1; i <= n; i++)); do
        mkdir -p "$ROOT/h$i"
        ip netns add "$(ns "$i")"
        ip -n "$(ns "$i")" link set lo up
        ip -n "$BR" link add "p$i" type veth peer name eth0 netns "$(ns "$i")"
        ip -n "$BR" link set "p$i" master br0
        ip -n "$BR" link set "p$i" up
        ip -n "$(ns "$i")" addr add "$(ip_of "$i")/24" dev eth0
        ip -n "$(ns "$i")" link set eth0 up
        start_host "$i"
    done
    cli 1 swarm init --advertise-addr "$(ip_of 1)" >/dev/null
    local mtok wtok
    mtok=$(cli 1 swarm join-token -q manager)
    wtok=$(cli 1 swarm join-token -q worker)
    for ((i = 2; i <= n; i++)); do
        if ((i <= managers)); then
            cli "$i" swarm join --token "$mtok" "$(ip_of 1):2377"
        else
            cli "$i" swarm join --token "$wtok" "$(ip_of 1):2377"
        fi
    done
    status
    echo
    echo "Try: sudo $0 shoal 1 node ls    |    sudo $0 kill 1    |    sudo $0 down"
}

status() {
    local i
    [[ -d $ROOT ]] || die "no lab is up"
    for i in $(hosts); do
        local state=down
        [[ -f $ROOT/h$i/pid ]] && kill -0 "$(cat "$ROOT/h$i/pid")" 2>/dev/null && state=running
        echo "host $i  $(ip_of "$i")  shoald $state"
    done
    for i in $(hosts); do
        if cli "$i" node ls 2>/dev/null; then return 0; fi
    done
    echo "no manager answers (is a majority of them running?)"
}

down() {
    local i
    [[ -d $ROOT ]] || { echo "no lab is up"; return 0; }
    for i in $(hosts); do
        local ids
        ids=$(cli "$i" ps -aq 2>/dev/null || true)
        [[ -n $ids ]] && cli "$i" rm -f $ids >/dev/null 2>&1
        stop_host "$i"
        ip netns del "$(ns "$i")" 2>/dev/null || true
        for d in /sys/fs/cgroup/*/"shoal-lab-h$i"; do
            [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
        done
    done
    ip netns del "$BR" 2>/dev/null || true
    awk -v r="$ROOT/" 'index($5, r) == 1 { print $5 }' /proc/self/mountinfo | sort -r |
        while read -r m; do umount -l "$m"; done
    rm -rf --one-file-system "$ROOT"
    echo "lab down"
}

cmd=${1:-}
shift || true
case $cmd in
up) up "$@" ;;
status) status ;;
down) down ;;
shoal) [[ $# -ge 1 ]] || die "usage: $0 shoal HOST ARGS..."; h=$1; shift; cli "$h" "$@" ;;
kill) stop_host "${1:?host}" KILL; echo "host $1: shoald killed" ;;
stop) stop_host "${1:?host}"; echo "host $1: shoald stopped" ;;
start) start_host "${1:?host}"; echo "host $1: shoald started" ;;
*) die "usage: $0 up [N] [MANAGERS] | status | shoal HOST ARGS... | kill|stop|start HOST | down" ;;
esac
