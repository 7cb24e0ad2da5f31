#!/usr/bin/env bash
# The whole test suite: what a fresh machine lacks installed
# (scripts/prerequisites.sh), formatting, lints, checkov on the rendered examples,
# unit tests, then the integration tests against a fresh local control plane
# that this script starts and stops, and the test images (scripts/images.sh).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/prerequisites.sh
export APPSTACK_CLUSTER_DIR="${APPSTACK_CLUSTER_DIR:-$PWD/.cluster-test}"

cargo fmt --check
cargo clippy --all-targets -- -D warnings
# helm, actionlint and kstatus, built once from the Go module proxy and cached.
export APPSTACK_TEST_TOOLS="$(scripts/build-tools.sh)"
scripts/checkov.sh
# The book builds and every link in it resolves (mdBook and lychee, pinned,
# installed once into the tool cache).
scripts/docs.sh
scripts/cluster.sh down >/dev/null 2>&1 || true
scripts/cluster.sh up
trap 'scripts/cluster.sh down' EXIT
# The tests read the cluster's state dir for ServiceAccount tokens and the
# API server's audit log, and run its kubectl.
export APPSTACK_TEST_KUBECONFIG="$(scripts/cluster.sh kubeconfig)"
export APPSTACK_TEST_CLUSTER_DIR="$APPSTACK_CLUSTER_DIR"
export APPSTACK_TEST_KUBECTL="$(scripts/cluster.sh bin)/kubectl"
# APPSTACK_FAULTS=full runs the fault suite at full size
# (docs/src/contributing/tests.md): the killed-operator scenario then runs
# alone, after the rest.
full_faults=()
if [[ "${APPSTACK_FAULTS:-}" == full ]]; then full_faults=(--skip a_killed_operator); fi
cargo test --no-fail-fast --all-targets -- --include-ignored --test-threads 4 --skip disruption_ --skip cluster_wide_ \
  --skip images:: --skip real_node --skip real_stack --skip real_schema "${full_faults[@]}"
if [[ "${APPSTACK_FAULTS:-}" == full ]]; then
  cargo test --test suite -- --include-ignored --test-threads 1 --nocapture faults::a_killed_operator
fi
# The test images, built from Debian's packages (cached), then run as a
# restricted pod would run them, against a real PostgreSQL.
scripts/images.sh >/dev/null
cargo test --test suite -- --ignored --test-threads 2 images::
# An operator watching every namespace would reconcile the other tests'
# stacks too: the cluster-wide install runs after them, alone.
cargo test --test suite -- --include-ignored --test-threads 1 --nocapture install::cluster_wide_
# Disruptions take the API server away from every other test: run them last,
# one at a time, printing what they measured.
cargo test --test suite -- --include-ignored --test-threads 1 --nocapture disruption::

# The real node: the same control plane with one real node (containerd,
# kubelet, kube-proxy, CoreDNS, kube-router), pods from the project's images.
scripts/cluster.sh down
scripts/cluster.sh up --real-node
scripts/images.sh --import "$(scripts/cluster.sh containerd-socket)" \
  postgres seed-backend seed-frontend operator >/dev/null
cargo test --test suite -- --ignored --test-threads 2 real_node::
# The design's stack on it, the operator installed by its chart: one test at
# a time, so the traffic measured during upgrades shares the machine with
# nothing but its own stack.
cargo test --test suite -- --ignored --test-threads 1 --nocapture real_stack::
# Schema-aware delivery with the real PostgreSQL and Alembic: backups
# restored, a rollback downgraded, a contract after the old pods are gone.
cargo test --test suite -- --ignored --test-threads 1 --nocapture real_schema::
scripts/cluster.sh down
# With no cluster of its own left, down must leave nothing on the host.
cargo test --test suite -- --ignored --test-threads 1 real_node_teardown::
