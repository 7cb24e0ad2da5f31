#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit tests, then the integration
# tests against a fresh local control plane that this script starts and stops.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
export APPSTACK_CLUSTER_DIR="${APPSTACK_CLUSTER_DIR:-$PWD/.cluster-test}"

cargo fmt --check
cargo clippy --all-targets -- -D warnings
scripts/cluster.sh down >/dev/null 2>&1 || true
scripts/cluster.sh up
trap 'scripts/cluster.sh down' EXIT
APPSTACK_TEST_KUBECONFIG="$(scripts/cluster.sh kubeconfig)" \
  cargo test --all-targets -- --include-ignored --test-threads 4
