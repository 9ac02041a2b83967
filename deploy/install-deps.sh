#!/usr/bin/env bash
# Installs the Debian packages shoal needs to build, run and test. Idempotent: only missing
# packages are installed. Needs root.
set -euo pipefail

packages=(
  busybox-static   # the test image and the quickstart's demo image are built from it
  iproute2         # ip, for looking at links and routes in tests
  nftables         # nft: shoald loads its NAT and filter rules with it
  iptables         # tests play docker's FORWARD-DROP policy; shoald keeps its accepts there
  util-linux       # nsenter and unshare, for the tests' stand-in hosts
  procps           # ps, used by `shoal-runc ps`
  docker.io        # the interoperability test: docker load/save against shoal's archives
  docker-registry  # registry tests: a real OCI distribution registry (2.8) on loopback
  skopeo           # registry tests: copies images into the registry and reads shoal's back
  gcc libc6-dev    # zstd-sys compiles a little C
  libseccomp-dev pkg-config  # shoal-runtime links libseccomp for seccomp filters
  ca-certificates
)

missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "installing: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

if ! command -v cargo >/dev/null 2>&1; then
  echo "cargo not found: install a Rust toolchain (1.88 or newer), e.g. with rustup, then re-run" >&2
  exit 1
fi
