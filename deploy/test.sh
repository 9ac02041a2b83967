#!/usr/bin/env bash
# Runs every test of shoal: format check, clippy with -D warnings, unit tests, and the
# integration tests against the real kernel (namespaces, mounts, cgroups) as root, then
# checks that the suite left nothing behind.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" != 0 ]; then
  echo "the tests create namespaces, mounts and cgroups: run as root (sudo $0)" >&2
  exit 1
fi
deploy/install-deps.sh
deploy/clean-stale.sh

# A fresh clone builds once: incremental caches would only take disk space.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi

cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --bins --locked
cargo test --workspace --locked
deploy/check-leftovers.sh
