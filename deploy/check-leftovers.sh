#!/usr/bin/env bash
# After the test suite: nothing of ours may remain. Test resources are named so they can be
# found: daemon roots /tmp/sh-*, runtime bundles /tmp/shoal-rt-*, cgroups shoal-t-*. Each test
# daemon runs in a network namespace of its own, so none of its bridges, veths (vsh*) or nft
# tables may show up in the host's.
set -uo pipefail

problems=()
mounts=$(grep -E ' /tmp/(sh-|shoal-rt-)|shoal-t-' /proc/self/mountinfo || true)
[ -n "$mounts" ] && problems+=("mounts left:\n$mounts")
cgroups=$(ls -d /sys/fs/cgroup/*/shoal-t-* 2>/dev/null || true)
[ -n "$cgroups" ] && problems+=("cgroups left:\n$cgroups")
procs=$(pgrep -af 'shoal-shim|shoald|shoal-runc' | grep -E '/tmp/(sh-|shoal-rt-)' || true)
[ -n "$procs" ] && problems+=("processes left:\n$procs")
dirs=$(ls -d /tmp/sh-* /tmp/shoal-rt-* 2>/dev/null || true)
[ -n "$dirs" ] && problems+=("directories left:\n$dirs")
netns=$(ip netns list 2>/dev/null | grep -E '^shoal-t-' || true)
[ -n "$netns" ] && problems+=("network namespaces left:\n$netns")
links=$(ip -o link show 2>/dev/null | awk -F': ' '{print $2}' | grep -E '^(vsh|shoal)' || true)
[ -n "$links" ] && problems+=("links left in the host's namespace:\n$links")
tables=$(nft list tables 2>/dev/null | grep -E ' shoal' || true)
[ -n "$tables" ] && problems+=("nft tables left in the host's namespace:\n$tables")

if [ ${#problems[@]} -gt 0 ]; then
  echo "the test suite left things behind:" >&2
  for p in "${problems[@]}"; do printf '%b\n' "$p" >&2; done
  exit 1
fi
echo "no leftovers: no mounts, cgroups, processes, directories, netns, links or nft tables of the tests remain"
