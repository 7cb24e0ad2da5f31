#!/usr/bin/env bash
# Sets up everything and shows the AppStack API on a local control plane:
# builds the pinned binaries once, starts the cluster, installs the CRD,
# applies the example stack and shows it.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/cluster.sh up
BIN="$(scripts/cluster.sh bin)"
export KUBECONFIG="$(scripts/cluster.sh kubeconfig)"
kubectl() { "$BIN/kubectl" "$@"; }
cargo run --quiet --bin appstack -- crd | kubectl apply --server-side -f -
kubectl wait --for=condition=Established crd/appstacks.appstack.dev --timeout=60s
kubectl apply --server-side -f deploy/examples/shop.yaml
kubectl get appstacks
# The API server publishes the new type's OpenAPI a moment after the CRD is
# Established; explain retries until it is there.
for _ in $(seq 1 50); do
  kubectl explain appstack.spec 2>/dev/null && break
  sleep 0.2
done
echo
echo "The cluster keeps running; use it with: export KUBECONFIG=$KUBECONFIG"
echo "kubectl is at $BIN/kubectl; stop everything with: scripts/cluster.sh down"
