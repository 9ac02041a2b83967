# Shared by the benchmark scripts: finding the binaries and the peers, private daemons under
# one temporary directory ($T), and leaving nothing behind. Source it; it defines functions
# and reads no arguments.

log() { printf '==> %s\n' "$*" >&2; }
die() { printf '%s: %s\n' "$(basename "$0" .sh)" "$*" >&2; exit 1; }

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

# Sets BIN (directory of shoal's binaries) and BUILT_FROM, building them unless
# SHOAL_BIN_DIR names prebuilt ones.
find_shoal_binaries() {
    if [[ -n ${SHOAL_BIN_DIR:-} ]]; then
        BIN=$(cd "$SHOAL_BIN_DIR" && pwd)
        BUILT_FROM="prebuilt (SHOAL_BIN_DIR), shoald built $(date -u -r "$BIN/shoald" +%Y-%m-%dT%H:%MZ)"
    else
        local target=${CARGO_TARGET_DIR:-target}
        [[ $target == /* ]] || target=$REPO/$target
        command -v cargo >/dev/null ||
            die "cargo not found in PATH (sudo resets PATH): build with 'cargo build --release --workspace --bins' and run 'sudo SHOAL_BIN_DIR=\$PWD/target/release $0'"
        log "building release binaries into $target (set SHOAL_BIN_DIR to skip)"
        (cd "$REPO" && CARGO_TARGET_DIR=$target cargo build --release --workspace --bins)
        BIN=$target/release
        BUILT_FROM="built by this script from $(git -C "$REPO" describe --always --dirty 2>/dev/null || echo 'a non-git tree')"
    fi
    local b
    for b in shoald shoal shoal-runc shoal-shim shoal-testkit; do
        [[ -x $BIN/$b ]] || die "$BIN/$b not found: build with 'cargo build --release --workspace --bins' or set SHOAL_BIN_DIR"
    done
}

# Sets DOCKERD, DOCKER (a client of the same release as dockerd) and HAVE_DOCKER.
find_docker() {
    HAVE_DOCKER=0
    DOCKERD=$(command -v dockerd || true)
    if [[ -z ${DOCKER:-} && -n $DOCKERD ]]; then
        # Prefer the client of the same release as dockerd (another docker may come first in $PATH).
        version() { "$1" --version 2>/dev/null | sed -E 's/.*version ([^,]+),.*/\1/'; }
        local server_version c
        server_version=$(version "$DOCKERD")
        for c in $(type -ap docker); do
            if [[ $(version "$c") == "$server_version" ]]; then DOCKER=$c; break; fi
        done
    fi
    DOCKER=${DOCKER:-$(command -v docker || true)}
    if [[ -n $DOCKERD && -n $DOCKER ]]; then
        HAVE_DOCKER=1
    else
        log "SKIP docker comparison: dockerd or docker not installed (apt-get install -y docker.io)"
    fi
}

# Host paths dockerd/containerd create outside their roots; remove_host_paths deletes the
# ones that did not exist when record_host_paths ran.
HOST_PATHS=(/etc/docker/key.json /etc/docker /run/docker/plugins /run/docker /run/containerd/s /run/containerd)
declare -A PREEXISTING=()
record_host_paths() {
    local p d
    for p in "${HOST_PATHS[@]}"; do [[ -e $p ]] && PREEXISTING[$p]=1; done
    for d in /sys/fs/cgroup/*/docker; do [[ -d $d ]] && PREEXISTING[$d]=1; done
    return 0
}
remove_host_paths() {
    local p d
    for d in /sys/fs/cgroup/*/docker; do # only empty ones: never kill another dockerd's containers
        [[ -n ${PREEXISTING[$d]:-} ]] || remove_cgroup_tree "$d"
    done
    for p in "${HOST_PATHS[@]}"; do # files first, then directories (if empty)
        [[ -n ${PREEXISTING[$p]:-} || ! -e $p ]] && continue
        if [[ -d $p ]]; then rmdir "$p" 2>/dev/null; else rm -f "$p"; fi
    done
    return 0
}

# pids of processes whose command line mentions $T (containerd, shims, leftovers)
pids_under_t() {
    local f pid
    for f in /proc/[0-9]*/cmdline; do
        pid=${f#/proc/}; pid=${pid%/cmdline}
        [[ $pid == "$$" || $pid == "$BASHPID" ]] && continue
        if tr '\0' ' ' <"$f" 2>/dev/null | grep -qF -- "$T"; then echo "$pid"; fi
    done
}

# Remove a cgroup tree deepest first; with "kill", first kill every process left in it.
remove_cgroup_tree() {
    local root=$1 mode=${2:-} dir pid i
    [[ -d $root ]] || return 0
    for i in 1 2 3 4 5; do
        [[ $mode == kill ]] || break
        local left=0
        while IFS= read -r dir; do
            while IFS= read -r pid; do
                [[ -n $pid ]] && { kill -KILL "$pid" 2>/dev/null || true; left=1; }
            done <"$dir/cgroup.procs"
        done < <(find "$root" -type d 2>/dev/null)
        ((left)) || break
        sleep 0.2
    done
    find "$root" -depth -type d -exec rmdir {} \; 2>/dev/null || true
    [[ -d $root ]] && echo "WARNING: could not remove cgroup $root" >&2
    return 0
}

stop_pid() { # pid [seconds]: SIGTERM, wait, then SIGKILL
    local pid=$1 secs=${2:-30} i
    kill -TERM "$pid" 2>/dev/null || return 0
    for ((i = 0; i < secs * 10; i++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "$pid" 2>/dev/null && { echo "WARNING: pid $pid ignored SIGTERM, killing it" >&2; kill -KILL "$pid" 2>/dev/null; }
    wait "$pid" 2>/dev/null || true
}

# Remove every container of the private daemons and stop them (SHOALD_PID, DOCKERD_PID; SH
# and DK are their client flags).
stop_daemons() {
    local ids=()
    if [[ -n ${SHOALD_PID:-} ]]; then
        mapfile -t ids < <(timeout 20 "$BIN/shoal" "${SH[@]}" ps -aq 2>/dev/null)
        ((${#ids[@]})) && timeout 60 "$BIN/shoal" "${SH[@]}" rm -f "${ids[@]}" >/dev/null 2>&1
        stop_pid "$SHOALD_PID" 20
    fi
    if [[ -n ${DOCKERD_PID:-} ]]; then
        mapfile -t ids < <(timeout 20 "$DOCKER" "${DK[@]}" ps -aq 2>/dev/null)
        ((${#ids[@]})) && timeout 60 "$DOCKER" "${DK[@]}" rm -f "${ids[@]}" >/dev/null 2>&1
        stop_pid "$DOCKERD_PID" 30
    fi
    return 0
}

# Network namespaces made with make_netns; remove_t deletes them.
NETNS=()
make_netns() {
    ip netns add "$1"
    NETNS+=("$1")
    ip -n "$1" link set lo up
}

# Kill what still runs from $T, unmount everything under it, remove the cgroup parent, the
# network namespaces and $T.
remove_t() {
    local cgroup_parent=$1 pid m d
    for pid in $(pids_under_t); do kill -TERM "$pid" 2>/dev/null; done
    sleep 0.5
    for pid in $(pids_under_t); do kill -KILL "$pid" 2>/dev/null; done
    # mounts under $T, deepest first
    while IFS= read -r m; do
        umount -l "$m" 2>/dev/null || echo "WARNING: could not unmount $m" >&2
    done < <(awk -v t="$T/" 'index($2, t) == 1 { print length($2), $2 }' /proc/mounts | sort -rn | cut -d' ' -f2)
    for d in /sys/fs/cgroup/*/"$cgroup_parent"; do remove_cgroup_tree "$d" kill; done
    remove_host_paths
    for d in "${NETNS[@]}"; do ip netns del "$d" 2>/dev/null; done
    rm -rf --one-file-system "$T"
    [[ -e $T ]] && echo "WARNING: could not remove $T" >&2
    return 0
}

wait_for() { # seconds description command...: poll until the command succeeds
    local secs=$1 what=$2 i
    shift 2
    for ((i = 0; i < secs * 10; i++)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    echo "$what did not answer within $secs s" >&2
    return 1
}

ratio() { python3 -c "import sys; print(f'{float(sys.argv[1]) / float(sys.argv[2]):.2f}')" "$1" "$2"; }

# Start a private dockerd under $T: start_dockerd PREFIX_COMMAND... -- DOCKERD_FLAGS...
# (the prefix, e.g. an nsenter, may be empty). Loads $T/busybox.tar. Sets DOCKERD_PID, or
# HAVE_DOCKER=0 if it does not come up.
start_dockerd() {
    local prefix=()
    while [[ $1 != -- ]]; do prefix+=("$1"); shift; done
    shift
    echo '{}' >"$T/daemon.json" # ignore the host's /etc/docker/daemon.json
    "${prefix[@]}" "$DOCKERD" --config-file "$T/daemon.json" --data-root "$T/docker" \
        --exec-root "$T/dexec" --pidfile "$T/docker.pid" -H "unix://$T/docker.sock" \
        --storage-driver overlay2 "$@" >"$T/dockerd.log" 2>&1 &
    DOCKERD_PID=$!
    if wait_for 60 dockerd "$DOCKER" "${DK[@]}" version; then
        "$DOCKER" "${DK[@]}" load -i "$T/busybox.tar" >/dev/null
    else
        tail -20 "$T/dockerd.log" >&2
        log "SKIP docker comparison: dockerd did not come up (log above)"
        stop_pid "$DOCKERD_PID" 30
        DOCKERD_PID=
        HAVE_DOCKER=0
    fi
}

# Start a private shoald under $T: start_shoald CGROUP_PARENT PREFIX_COMMAND... Loads
# $T/busybox.tar. Sets SHOALD_PID.
start_shoald() {
    local parent=$1
    shift
    "$@" "$BIN/shoald" --data-root "$T/data" --exec-root "$T/x" --socket "$T/s.sock" \
        --cgroup-parent "$parent" >"$T/shoald.log" 2>&1 &
    SHOALD_PID=$!
    wait_for 30 shoald "$BIN/shoal" "${SH[@]}" version ||
        { cat "$T/shoald.log" >&2; die "shoald did not come up"; }
    "$BIN/shoal" "${SH[@]}" image load -i "$T/busybox.tar" >/dev/null
}

# For scripts that run several daemons (PIDS, an array of their pids, "" when stopped):
# on exit, stop them and remove_t CGROUP_PARENT.
PIDS=()
stop_all_and_remove_t() {
    local rc=$? pid
    trap - EXIT INT TERM
    set +e
    log "cleaning up $T"
    for pid in "${PIDS[@]}"; do [[ -n $pid ]] && stop_pid "$pid" 10; done
    remove_t "$CGROUP_PARENT"
    exit "$rc"
}
trap_cleanup() {
    trap stop_all_and_remove_t EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
}

# A test LAN of network namespaces: make_lan PREFIX NAME=IP...: namespace PREFIX-NAME for
# each, a bridge (lan0) in the first one, which holds its IP on the bridge, and the others
# wired to it by veth pairs (their end also called lan0).
make_lan() {
    local prefix=$1 hub="" spec name ip
    shift
    for spec in "$@"; do
        name=${spec%%=*} ip=${spec#*=}
        make_netns "$prefix-$name"
        if [[ -z $hub ]]; then
            hub=$prefix-$name
            ip -n "$hub" link add lan0 type bridge
            ip -n "$hub" addr add "$ip/24" dev lan0
            ip -n "$hub" link set lan0 up
            continue
        fi
        ip -n "$hub" link add "lanp$name" type veth peer name lan0 netns "$prefix-$name"
        ip -n "$hub" link set "lanp$name" master lan0
        ip -n "$hub" link set "lanp$name" up
        ip -n "$prefix-$name" addr add "$ip/24" dev lan0
        ip -n "$prefix-$name" link set lan0 up
    done
}
