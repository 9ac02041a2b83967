#!/usr/bin/env bash
# Store writes (issue 5): three managers, each in a network namespace of its own on a shared
# test LAN, and a client host on the same LAN running `store-load`: 1, 16 and 256 concurrent
# writers, each writing one new key (256-byte value) after another for SECONDS, measured as
# acknowledged writes per second and p50/p99 latency. The same topology then runs three
# etcd members (Debian's etcd-server) and the same client against them.
#
#   sudo bench/store.sh        (SECONDS_PER_RUN=10 by default; SHOAL_BIN_DIR as start-latency.sh)
#
# Equal footing: both write to the leader over gRPC with mutual TLS, one HTTP/2 connection
# per 16 writers; both acknowledge a write only after it is fsynced on a majority (shoal:
# sled flushed before openraft is told the entry is persisted; etcd: its WAL fsync); both
# keep their data under /var/tmp on the same disk. Goal: shoal >= etcd's throughput.
set -euo pipefail

SECS=${SECONDS_PER_RUN:-10}
WRITERS=${WRITERS:-"1 16 256"}
CGROUP_PARENT=shoal-bench-store

. "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
[[ $(id -u) -eq 0 ]] || die "run as root (sudo $0)"
missing=()
command -v etcd >/dev/null || missing+=(etcd-server)
command -v etcdctl >/dev/null || missing+=(etcd-client)
command -v protoc >/dev/null || missing+=(protobuf-compiler)
command -v openssl >/dev/null || missing+=(openssl)
command -v python3 >/dev/null || missing+=(python3)
if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q "${missing[@]}" >/dev/null
fi
find_shoal_binaries
target=${CARGO_TARGET_DIR:-$REPO/target}
[[ $target == /* ]] || target=$REPO/$target
log "building the load generator (bench/store-load)"
(cd "$REPO/bench/store-load" && CARGO_TARGET_DIR=$target/store-load cargo build --release -q)
LOAD=$target/store-load/release/store-load

T=$(mktemp -d /var/tmp/shoal-sbench.XXXXXX)
P=sbs$$
PIDS=("" "" "")
record_host_paths
trap_cleanup

ip_of() { echo "198.51.100.$(($1 + 1))"; }

# The LAN: a bridge in host 0's namespace; hosts 1, 2 and the client (c) wired to it.
make_lan "$P" 0=198.51.100.1 1=198.51.100.2 2=198.51.100.3 c=198.51.100.10

load() { # target addr certs writers: one run, one JSON line
    nsenter --net="/run/netns/$P-c" -- "$LOAD" --target "$1" --addr "$2" \
        --certs "$3" --writers "$4" --seconds "$SECS"
}

# --- shoal ---
sh_() { local i=$1; shift; "$BIN/shoal" -H "unix://$T/m$i/s.sock" "$@"; }
for i in 0 1 2; do
    mkdir -p "$T/m$i"
    nsenter --net="/run/netns/$P-$i" -- "$BIN/shoald" --data-root "$T/m$i/data" \
        --exec-root "$T/m$i/x" --socket "$T/m$i/s.sock" --cgroup-parent "$CGROUP_PARENT" \
        >>"$T/m$i/shoald.log" 2>&1 &
    PIDS[$i]=$!
    wait_for 20 "shoald m$i" sh_ "$i" version
done
sh_ 0 swarm init --advertise-addr "$(ip_of 0)" >/dev/null
token=$(sh_ 0 swarm join-token -q manager)
for i in 1 2; do sh_ "$i" swarm join --token "$token" "$(ip_of 0):2377" >/dev/null; done
leader=""
for i in 0 1 2; do
    sh_ "$i" swarm inspect | grep -q '"State": "leader"' && leader=$i
done
[[ -n $leader ]] || die "no shoal leader"
log "shoal: 3 managers, leader m$leader"
: >"$T/shoal.jsonl"
for w in $WRITERS; do
    load shoal "$(ip_of "$leader"):2377" "$T/m0/data/swarm/certs" "$w" | tee -a "$T/shoal.jsonl" >&2
done
for i in 0 1 2; do stop_pid "${PIDS[$i]}" 10; PIDS[$i]=""; done

# --- etcd ---
E=$T/etcd-pki
mkdir -p "$E"
openssl ecparam -name prime256v1 -genkey -noout -out "$E/ca.key" 2>/dev/null
openssl req -x509 -new -key "$E/ca.key" -subj /CN=bench-ca -days 1 -out "$E/ca.pem" 2>/dev/null
cert() { # name san: a cert for name, signed by the CA
    openssl ecparam -name prime256v1 -genkey -noout -out "$E/$1.key" 2>/dev/null
    openssl req -new -key "$E/$1.key" -subj "/CN=$1" -out "$E/$1.csr" 2>/dev/null
    printf 'subjectAltName=%s\nextendedKeyUsage=serverAuth,clientAuth\n' "$2" >"$E/$1.ext"
    openssl x509 -req -in "$E/$1.csr" -CA "$E/ca.pem" -CAkey "$E/ca.key" -CAcreateserial \
        -days 1 -extfile "$E/$1.ext" -out "$E/$1.pem" 2>/dev/null
}
for i in 0 1 2; do cert "e$i" "IP:$(ip_of "$i")"; done
cert client "DNS:client"
mkdir -p "$T/client"
cp "$E/ca.pem" "$T/client/ca.pem"
cp "$E/client.pem" "$T/client/node.pem"
cp "$E/client.key" "$T/client/node.key"
cluster=e0=https://$(ip_of 0):2380,e1=https://$(ip_of 1):2380,e2=https://$(ip_of 2):2380
for i in 0 1 2; do
    ip=$(ip_of "$i")
    nsenter --net="/run/netns/$P-$i" -- etcd --name "e$i" --data-dir "$T/e$i" \
        --listen-client-urls "https://$ip:2379" --advertise-client-urls "https://$ip:2379" \
        --listen-peer-urls "https://$ip:2380" --initial-advertise-peer-urls "https://$ip:2380" \
        --initial-cluster "$cluster" --initial-cluster-state new \
        --cert-file "$E/e$i.pem" --key-file "$E/e$i.key" --trusted-ca-file "$E/ca.pem" \
        --client-cert-auth --peer-cert-file "$E/e$i.pem" --peer-key-file "$E/e$i.key" \
        --peer-trusted-ca-file "$E/ca.pem" --peer-client-cert-auth \
        >>"$T/etcd$i.log" 2>&1 &
    PIDS[$i]=$!
done
etcdctl_() {
    nsenter --net="/run/netns/$P-c" -- env ETCDCTL_API=3 etcdctl --cacert "$E/ca.pem" \
        --cert "$E/client.pem" --key "$E/client.key" \
        --endpoints "https://$(ip_of 0):2379,https://$(ip_of 1):2379,https://$(ip_of 2):2379" "$@"
}
wait_for 30 "etcd cluster" etcdctl_ endpoint health
leader=$(etcdctl_ endpoint status -w json | python3 -c '
import json, sys
for i, s in enumerate(json.load(sys.stdin)):
    if s["Status"]["header"]["member_id"] == s["Status"]["leader"]:
        print(i)')
[[ -n $leader ]] || die "no etcd leader"
log "etcd $(etcd --version | head -1 | cut -d' ' -f3): 3 members, leader e$leader"
: >"$T/etcd.jsonl"
for w in $WRITERS; do
    load etcd "$(ip_of "$leader"):2379" "$T/client" "$w" | tee -a "$T/etcd.jsonl" >&2
done

python3 - "$T/shoal.jsonl" "$T/etcd.jsonl" "$SECS" <<'PY' | tee "$T/summary.txt"
import json, sys
shoal = [json.loads(l) for l in open(sys.argv[1])]
etcd = [json.loads(l) for l in open(sys.argv[2])]
print(f"store writes, 3 managers on a netns LAN, client on a 4th host, {sys.argv[3]} s per run, mTLS, fsync on a majority")
print(f"{'writers':>8} {'shoal w/s':>10} {'p50':>8} {'p99':>8} {'etcd w/s':>10} {'p50':>8} {'p99':>8} {'ratio':>6}")
for s, e in zip(shoal, etcd):
    r = s["writes_per_sec"] / e["writes_per_sec"] if e["writes_per_sec"] else float("nan")
    print(f"{s['writers']:>8} {s['writes_per_sec']:>10.0f} {s['p50_ms']:>7.2f}ms {s['p99_ms']:>7.2f}ms "
          f"{e['writes_per_sec']:>10.0f} {e['p50_ms']:>7.2f}ms {e['p99_ms']:>7.2f}ms {r:>6.2f}")
    if s["errors"] or e["errors"]:
        print(f"         errors: shoal {s['errors']}, etcd {e['errors']}")
print("ratio = shoal / etcd writes per second (goal >= 1.0)")
PY
[[ -n ${RESULTS_DIR:-} ]] && { mkdir -p "$RESULTS_DIR"; cp "$T/summary.txt" "$RESULTS_DIR/store.txt"; }
exit 0
