#!/usr/bin/env bash
# Sets shoal up on this host and runs the main job: installs what is needed, builds shoal,
# starts shoald, loads a busybox image and runs containers from it, makes the host a
# one-node swarm and deploys a 3-replica service, then rolls it to a second image version.
# Safe to re-run.
# Needs root. Environment: SHOAL_DATA_ROOT (default /var/lib/shoal), SHOAL_EXEC_ROOT
# (default /run/shoal).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

if [ "$(id -u)" != 0 ]; then
  echo "shoald creates namespaces, mounts and cgroups: run as root (sudo $0)" >&2
  exit 1
fi
deploy/install-deps.sh

echo "==> building shoal (release)"
cargo build --release --workspace --bins --locked
bin="$repo/target/release"
export PATH="$bin:$PATH"

data_root=${SHOAL_DATA_ROOT:-/var/lib/shoal}
exec_root=${SHOAL_EXEC_ROOT:-/run/shoal}
socket="$exec_root/shoald.sock"
export SHOAL_HOST="unix://$socket"

if shoal version >/dev/null 2>&1; then
  echo "==> shoald is already running on $socket"
else
  echo "==> starting shoald (log: $data_root/shoald.log)"
  mkdir -p "$data_root"
  setsid "$bin/shoald" --data-root "$data_root" --exec-root "$exec_root" --socket "$socket" \
    >>"$data_root/shoald.log" 2>&1 < /dev/null &
  for _ in $(seq 100); do
    shoal version >/dev/null 2>&1 && break
    sleep 0.1
  done
  shoal version >/dev/null || { echo "shoald did not start; see $data_root/shoald.log" >&2; exit 1; }
fi

echo "==> loading the busybox image (built from Debian's busybox-static)"
image="$data_root/busybox-image.tar"
"$bin/shoal-testkit" busybox-image -o "$image"
shoal image load -i "$image"
shoal images

echo "==> running a container"
shoal run --rm busybox sh -c 'echo "hello from container $(hostname), running as PID $$"'

echo "==> a container in the background"
shoal rm -f demo >/dev/null 2>&1 || true
shoal run -d --name demo --memory 64m --cpus 0.5 busybox \
  sh -c 'while true; do echo "demo alive at $(date)"; sleep 2; done'
sleep 3
shoal ps
shoal logs --tail 2 demo

echo "==> a web server on a user-defined network, published on port 8080"
shoal network inspect demo-net >/dev/null 2>&1 || shoal network create demo-net
shoal rm -f web >/dev/null 2>&1 || true
shoal run -d --name web --network demo-net -p 8080:80 busybox \
  sh -c 'mkdir -p /www && echo "hello from web" >/www/index.html && exec httpd -f -p 80 -h /www'
sleep 1
echo "-- another container, by name through shoal's DNS:"
shoal run --rm --network demo-net busybox wget -qO- http://web/
echo "-- this host, through the published port:"
busybox wget -qO- http://127.0.0.1:8080/
shoal port web

echo "==> this host as a one-node swarm"
if shoal info 2>/dev/null | grep -q "Swarm: active"; then
  echo "(already in a swarm)"
else
  # With no default route to tell the host's address, a one-node swarm on loopback.
  shoal swarm init 2>/dev/null || shoal swarm init --advertise-addr 127.0.0.1 ||
    echo "(swarm init failed; give an address: shoal swarm init --advertise-addr <this host's IP>)"
fi
shoal node ls || true

if shoal node ls >/dev/null 2>&1; then
  echo "==> a service with 3 replicas, then rolled to a second image version"
  shoal tag busybox busybox:v2
  shoal service rm hello >/dev/null 2>&1 || true
  sleep 1
  shoal service create --name hello --replicas 3 --stop-grace-period 1s \
    --update-parallelism 1 --update-monitor 1s busybox \
    sh -c 'while true; do echo "hello from task $(hostname)"; sleep 5; done'
  shoal service ls
  shoal service update --image busybox:v2 hello
  shoal service ps hello
fi

cat <<EOT

shoal is running. Try:
  export PATH=$bin:\$PATH SHOAL_HOST=$SHOAL_HOST
  shoal run -it --rm busybox sh       # an interactive shell
  shoal logs -f demo                  # follow the demo container
  shoal network inspect demo-net      # the network, its containers and their addresses
  shoal rm -f demo web && shoal network rm demo-net   # clean up
  shoal swarm join-token worker       # how other hosts join (sudo deploy/lab.sh up: a lab of them)
  shoal service logs -f hello         # every task's output, prefixed with task and node
  shoal service scale hello=5         # more replicas (shoal service ps hello)
  shoal service rollback hello        # back to the previous image, one task at a time
  shoal service rm hello              # and its containers go
Stop the daemon with: kill \$(cat $data_root/shoald.pid)  (containers keep running under their supervisors)
EOT
