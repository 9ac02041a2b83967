#!/usr/bin/env bash
# Sets shoal up on this host and runs the main job: installs what is needed, builds shoal,
# starts shoald, loads a busybox image and runs containers from it, makes the host a
# one-node swarm and deploys a 3-replica service, then rolls it to a second image version.
# Safe to re-run.
#
#   sudo deploy/quickstart.sh            this host, a one-node swarm
#   sudo deploy/quickstart.sh --lab [N]  a swarm of N hosts (default 3: one manager, two
#                                        workers), each a network namespace with its own
#                                        shoald (deploy/lab.sh), the service spread over them
#
# Needs root. Environment: SHOAL_DATA_ROOT (default /var/lib/shoal), SHOAL_EXEC_ROOT
# (default /run/shoal).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)

lab=0
case ${1:-} in
"") ;;
--lab)
  lab=${2:-3}
  [[ $lab =~ ^[0-9]+$ ]] && ((lab >= 1 && lab <= 50)) || { echo "--lab takes a number of hosts, 1-50" >&2; exit 2; }
  ;;
*) echo "usage: $0 [--lab [N]]" >&2; exit 2 ;;
esac

if [ "$(id -u)" != 0 ]; then
  echo "shoald creates namespaces, mounts and cgroups: run as root (sudo $0)" >&2
  exit 1
fi
deploy/install-deps.sh

echo "==> building shoal (release)"
cargo build --release --workspace --bins --locked
bin="$repo/target/release"
export PATH="$bin:$PATH"

if ((lab > 0)); then
  if [[ -d /tmp/shoal-lab ]]; then
    echo "==> a lab is already up (deploy/lab.sh down to start afresh)"
  else
    echo "==> a swarm of $lab hosts, each a network namespace with its own shoald"
    deploy/lab.sh up "$lab" 1
  fi
  hosts=$(ls -d /tmp/shoal-lab/h* | sed 's|.*/h||' | sort -n)
  echo "==> loading the busybox image on the manager only: a swarm image, which every host"
  echo "    fetches from the managers by digest when a task needs it"
  image=$(mktemp /tmp/shoal-busybox.XXXXXX.tar)
  "$bin/shoal-testkit" busybox-image -o "$image"
  deploy/lab.sh shoal 1 image load -i "$image"
  deploy/lab.sh shoal 1 tag busybox busybox:v2
  deploy/lab.sh shoal 1 image push busybox:v2
  rm -f "$image"
  last=$(echo "$hosts" | tail -1)
  echo "-- host $last before the service: (swarm images it does not have yet are listed too)"
  deploy/lab.sh shoal "$last" image ls
  echo "==> a service with 3 replicas, then rolled to a second image version"
  deploy/lab.sh shoal 1 service rm hello >/dev/null 2>&1 && sleep 1 || true
  deploy/lab.sh shoal 1 service create --name hello --replicas 3 --stop-grace-period 1s \
    --update-parallelism 1 --update-monitor 1s busybox \
    sh -c 'while true; do echo "hello from task $(hostname)"; sleep 5; done'
  deploy/lab.sh shoal 1 service update --image busybox:v2 hello
  deploy/lab.sh shoal 1 service ps hello
  cat <<EOT

A swarm of $lab hosts is running the service "hello". Try:
  sudo deploy/lab.sh shoal 1 node ls                  # the hosts (1 is the manager)
  sudo deploy/lab.sh shoal 2 image ls                 # SCOPE: swarm images, fetched by digest
  sudo deploy/lab.sh shoal 1 service logs -f hello    # every task's output, with task and node
  sudo deploy/lab.sh kill 2                           # a worker dies: its task moves within ~15 s
  sudo deploy/lab.sh shoal 1 service ps hello         # ... and here is where it went
  sudo deploy/lab.sh start 2                          # it comes back
  sudo deploy/lab.sh shoal 1 service scale hello=6
  sudo deploy/lab.sh shoal 1 service rollback hello   # back to the previous image
  sudo deploy/lab.sh down                             # everything goes
EOT
  exit 0
fi

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
