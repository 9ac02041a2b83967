#!/usr/bin/env bash
# Before the test suite: remove what an earlier, interrupted run of it left (a killed `cargo
# test` cannot run its cleanups), so check-leftovers.sh judges only this run. Touches only the
# tests' own names: daemon roots /tmp/sh-*, runtime bundles /tmp/shoal-rt-*, cgroups shoal-t-*.
set -uo pipefail

found=0
note() { ((found)) || echo "removing leftovers of an earlier, interrupted test run:"; found=1; echo "  $*"; }

for pid in $(pgrep -f '/tmp/(sh-|shoal-rt-)' || true); do
  [[ $pid == "$$" ]] && continue
  note "process $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100)"
  kill -KILL "$pid" 2>/dev/null
done
awk '$5 ~ "^/tmp/(sh-|shoal-rt-)" { print length($5), $5 }' /proc/self/mountinfo | sort -rn | cut -d' ' -f2 |
  while IFS= read -r m; do
    note "mount $m"
    umount -l "$m" 2>/dev/null
  done
for d in /sys/fs/cgroup/*/shoal-t-*; do
  [[ -d $d ]] || continue
  note "cgroup $d"
  # Processes still in it (a container whose shim was killed) go first.
  find "$d" -name cgroup.procs -exec cat {} + 2>/dev/null | xargs -r kill -KILL 2>/dev/null
done
sleep 0.2
for d in /sys/fs/cgroup/*/shoal-t-*; do
  [[ -d $d ]] && find "$d" -depth -type d -exec rmdir {} \; 2>/dev/null
done
for d in /tmp/sh-* /tmp/shoal-rt-*; do
  [[ -e $d ]] || continue
  note "directory $d"
  rm -rf --one-file-system "$d"
done
for n in $(ip netns list 2>/dev/null | awk '/^shoal-t-/ { print $1 }'); do
  note "netns $n"
  ip netns del "$n"
done
exit 0
