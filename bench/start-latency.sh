#!/usr/bin/env bash
# Container start latency (issue 2): shoal vs docker, shoal-runc vs runc, shoal-shim vs
# containerd-shim-runc-v2 memory, measured in one run on this machine.
#
#   sudo bench/start-latency.sh
#
# 1. `shoal run --rm --network none busybox true` through a private shoald, versus
#    `docker run --rm --network none busybox true` through a private dockerd (goal: shoal's
#    median <= 1/5 of docker's).
# 2. `shoal-runc run` versus `runc run` on the same OCI bundle (goal: shoal-runc <= runc).
# 3. VmRSS of the shoal-shim of a running container versus docker's containerd-shim-runc-v2
#    (goal: shoal-shim <= 2 MiB).
#
# Everything lives in one temporary directory ($T) with private daemons, sockets, data roots
# and a private cgroup parent (`shoal-bench`); the EXIT trap stops the daemons, removes
# containers, mounts, cgroups and files, so a run leaves nothing behind. The host's iptables,
# FORWARD policy and ip_forward are not touched (dockerd runs with --iptables=false,
# --ip6tables=false, --ip-forward=false, --bridge=none).
#
# Environment:
#   SHOAL_BIN_DIR   directory with prebuilt shoald, shoal, shoal-runc, shoal-shim, shoal-testkit
#                   (default: build them with `cargo build --release --workspace --bins`,
#                   into $CARGO_TARGET_DIR or target/)
#   RUNS, WARMUP    hyperfine runs/warmups for the daemon comparison (default 30 and 3)
#   RUNC_RUNS       hyperfine runs for the runtime comparison (default 100; it is cheap)
#   RESULTS_DIR     if set, copy the hyperfine JSON files and the summary there
#   DOCKER          docker client to use (default: the one next to dockerd, else $PATH's)
set -euo pipefail

RUNS=${RUNS:-30}
WARMUP=${WARMUP:-3}
RUNC_RUNS=${RUNC_RUNS:-100}
CGROUP_PARENT=shoal-bench

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0): the runtimes create namespaces, mounts and cgroups"
for tool in hyperfine python3; do
    command -v "$tool" >/dev/null || die "$tool is not installed (apt-get install -y $tool)"
done

find_shoal_binaries
find_docker
RUNC=$(command -v runc || true)
[[ -n $RUNC ]] || log "SKIP runc comparison: runc not installed (apt-get install -y runc)"

# ---------------------------------------------------------------- state and cleanup
# Short path: shoald keeps its supervisor sockets under --exec-root (<= 70 bytes).
T=$(mktemp -d /tmp/shoal-bench.XXXXXX)
SHOALD_PID=
DOCKERD_PID=
SH=(-H "unix://$T/s.sock")
export DOCKER_CONFIG=$T/docker-cli # keep the docker client away from ~/.docker
DK=(-H "unix://$T/docker.sock")

record_host_paths

cleanup() {
    local rc=$?
    trap - EXIT INT TERM
    set +e
    log "cleaning up $T"
    stop_daemons
    # runtime state left by an interrupted `run` of the runtime comparison
    [[ -d $T/runc-state ]] && "$RUNC" --root "$T/runc-state" delete -f bench-runc >/dev/null 2>&1
    [[ -d $T/shoal-runc-state ]] && "$BIN/shoal-runc" --root "$T/shoal-runc-state" delete -f bench-shoal-runc >/dev/null 2>&1
    remove_t "$CGROUP_PARENT"
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---------------------------------------------------------------- helpers
median_ms() { # hyperfine-json command-name -> median in ms (from the raw times)
    python3 - "$1" "$2" <<'EOF'
import json, statistics, sys
data = json.load(open(sys.argv[1]))
for r in data["results"]:
    if r["command"] == sys.argv[2]:
        print(f'{statistics.median(r["times"]) * 1000:.1f}')
        break
else:
    sys.exit(f"no result named {sys.argv[2]} in {sys.argv[1]}")
EOF
}

vmrss_kb() { awk '/^VmRSS:/ { print $2 }' "/proc/$1/status"; }
pss_kb() { awk '/^Pss:/ { print $2 }' "/proc/$1/smaps_rollup" 2>/dev/null || echo '?'; }

# pid of the single process named $1 (comm) whose command line mentions $T
find_proc() {
    local pid found=()
    for pid in $(pids_under_t); do
        [[ $(cat "/proc/$pid/comm" 2>/dev/null) == "${1:0:15}" ]] && found+=("$pid")
    done
    [[ ${#found[@]} -eq 1 ]] || { echo "expected one $1 process under $T, found ${#found[@]}: ${found[*]}" >&2; return 1; }
    echo "${found[0]}"
}

kib_to_mib() { python3 -c "import sys; print(f'{int(sys.argv[1]) / 1024:.1f}')" "$1"; }

HF=(hyperfine --shell=none --style basic)

# ---------------------------------------------------------------- setup
LOAD_AT_START=$(cut -d' ' -f1-3 /proc/loadavg)
log "work dir $T, binaries from $BIN"
TMPDIR=$T "$BIN/shoal-testkit" busybox-image -o "$T/busybox.tar"
rm -rf "$T/shoal-testkit" # the test kit's archive cache

log "starting shoald (in a network namespace of its own: its bridge and rules stay there)"
make_netns sbl-$$
start_shoald "$CGROUP_PARENT" nsenter --net=/run/netns/sbl-$$ --

if ((HAVE_DOCKER)); then
    log "starting dockerd (private roots, no iptables, no bridge)"
    start_dockerd -- --iptables=false --ip6tables=false --ip-forward=false --bridge=none
fi

# the OCI bundle for the runtime comparison: busybox image layers + `shoal-runc spec`
mkdir -p "$T/img" "$T/bundle/rootfs"
tar -xf "$T/busybox.tar" -C "$T/img"
for layer in $(python3 -c 'import json, sys; print(" ".join(json.load(open(sys.argv[1]))[0]["Layers"]))' "$T/img/manifest.json"); do
    tar -xf "$T/img/$layer" -C "$T/bundle/rootfs"
done
"$BIN/shoal-runc" spec -b "$T/bundle"
python3 - "$T/bundle/config.json" "$CGROUP_PARENT" <<'EOF'
import json, sys
path, parent = sys.argv[1], sys.argv[2]
spec = json.load(open(path))
spec["process"]["terminal"] = False
spec["process"]["args"] = ["true"]
# under the bench's cgroup parent, so the cleanup finds anything left behind
spec.setdefault("linux", {})["cgroupsPath"] = f"/{parent}/bench-runtime"
json.dump(spec, open(path, "w"), indent=2)
EOF

# ---------------------------------------------------------------- 1. shoal run vs docker run
log "1. shoal run --rm$( ((HAVE_DOCKER)) && echo " vs docker run --rm") ($RUNS runs, $WARMUP warmups)"
cmds=(-n "shoal run --rm" "$BIN/shoal -H unix://$T/s.sock run --rm --network none busybox true")
((HAVE_DOCKER)) && cmds+=(-n "docker run --rm" "$DOCKER -H unix://$T/docker.sock run --rm --network none busybox true")
"${HF[@]}" --warmup "$WARMUP" --runs "$RUNS" --export-json "$T/run.json" "${cmds[@]}"
SHOAL_RUN=$(median_ms "$T/run.json" "shoal run --rm")
((HAVE_DOCKER)) && DOCKER_RUN=$(median_ms "$T/run.json" "docker run --rm")
left=$("$BIN/shoal" "${SH[@]}" ps -aq | wc -l)
((left == 0)) || log "NOTE: $left shoal containers still listed after the --rm runs (auto-remove is asynchronous)"

# ---------------------------------------------------------------- 2. shoal-runc vs runc
log "2. shoal-runc run$([[ -n $RUNC ]] && echo " vs runc run") on one OCI bundle ($RUNC_RUNS runs, $WARMUP warmups)"
cmds=(-n "shoal-runc run" "$BIN/shoal-runc --root $T/shoal-runc-state run -b $T/bundle bench-shoal-runc")
[[ -n $RUNC ]] && cmds+=(-n "runc run" "$RUNC --root $T/runc-state run -b $T/bundle bench-runc")
"${HF[@]}" --warmup "$WARMUP" --runs "$RUNC_RUNS" --export-json "$T/runtime.json" "${cmds[@]}"
SHOAL_RUNC=$(median_ms "$T/runtime.json" "shoal-runc run")
[[ -n $RUNC ]] && RUNC_RUN=$(median_ms "$T/runtime.json" "runc run")

# ---------------------------------------------------------------- 3. shim RSS
log "3. supervisor RSS with one running container"
sid=$("$BIN/shoal" "${SH[@]}" run -d --network none busybox sleep 60)
sleep 1
SHIM_PID=$(find_proc shoal-shim)
SHIM_RSS=$(vmrss_kb "$SHIM_PID")
SHIM_PSS=$(pss_kb "$SHIM_PID")
"$BIN/shoal" "${SH[@]}" rm -f "$sid" >/dev/null
if ((HAVE_DOCKER)); then
    did=$("$DOCKER" "${DK[@]}" run -d --network none busybox sleep 60)
    sleep 1
    CSHIM_PID=$(find_proc containerd-shim-runc-v2)
    CSHIM_RSS=$(vmrss_kb "$CSHIM_PID")
    CSHIM_PSS=$(pss_kb "$CSHIM_PID")
    "$DOCKER" "${DK[@]}" rm -f "$did" >/dev/null
fi

# ---------------------------------------------------------------- summary
{
    echo
    echo "start latency, $(date -u +%Y-%m-%dT%H:%MZ), $(nproc) cores, Linux $(uname -r), load average at start $LOAD_AT_START"
    echo "shoal binaries in $BIN, $BUILT_FROM"
    ((HAVE_DOCKER)) && echo "docker $("$DOCKER" "${DK[@]}" version --format '{{.Server.Version}}' 2>/dev/null) (client $DOCKER), containerd $(containerd --version 2>/dev/null | awk '{print $3}')"
    [[ -n $RUNC ]] && "$RUNC" --version | sed -n 1p
    echo
    if ((HAVE_DOCKER)); then
        printf '%-18s median %6.1f ms   %-18s median %6.1f ms   ratio %s (goal <= 0.20)\n' \
            "shoal run --rm" "$SHOAL_RUN" "docker run --rm" "$DOCKER_RUN" "$(ratio "$SHOAL_RUN" "$DOCKER_RUN")"
    else
        printf '%-18s median %6.1f ms   (docker skipped)\n' "shoal run --rm" "$SHOAL_RUN"
    fi
    if [[ -n $RUNC ]]; then
        printf '%-18s median %6.1f ms   %-18s median %6.1f ms   ratio %s (goal <= 1.00)\n' \
            "shoal-runc run" "$SHOAL_RUNC" "runc run" "$RUNC_RUN" "$(ratio "$SHOAL_RUNC" "$RUNC_RUN")"
    else
        printf '%-18s median %6.1f ms   (runc skipped)\n' "shoal-runc run" "$SHOAL_RUNC"
    fi
    if ((HAVE_DOCKER)); then
        printf '%-18s %6s MiB (%s kB, PSS %s kB)   %-18s %6s MiB (%s kB, PSS %s kB)   goal <= 2.0 MiB\n' \
            "shoal-shim RSS" "$(kib_to_mib "$SHIM_RSS")" "$SHIM_RSS" "$SHIM_PSS" \
            "containerd-shim" "$(kib_to_mib "$CSHIM_RSS")" "$CSHIM_RSS" "$CSHIM_PSS"
    else
        printf '%-18s %6s MiB (%s kB, PSS %s kB)   (docker skipped)   goal <= 2.0 MiB\n' \
            "shoal-shim RSS" "$(kib_to_mib "$SHIM_RSS")" "$SHIM_RSS" "$SHIM_PSS"
    fi
} | tee "$T/summary.txt"

if [[ -n ${RESULTS_DIR:-} ]]; then
    mkdir -p "$RESULTS_DIR"
    cp "$T/run.json" "$T/runtime.json" "$T/summary.txt" "$RESULTS_DIR/"
    log "results copied to $RESULTS_DIR"
fi
