#!/usr/bin/env bash
# Measures the operator's memory on the local control plane, to size the
# chart's requests and limits: installs the chart's RBAC, runs the release
# build as the chart's ServiceAccount over N copies of the example stack
# (default 100), waits until every one is Ready, and prints the process's
# peak resident memory (VmHWM) and the CPU it used.
#
#   scripts/measure-memory.sh [stacks]     (the cluster must be up)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
STACKS="${1:-100}"
NAMESPACE=memory
BIN="$(scripts/cluster.sh bin)"
export KUBECONFIG="$(scripts/cluster.sh kubeconfig)"
kubectl() { "$BIN/kubectl" "$@"; }
HELM="$(scripts/build-tools.sh)/helm"

cargo build --quiet --release --bin appstack
kubectl create namespace "$NAMESPACE" --dry-run=client -o yaml | kubectl apply -f - >/dev/null
"$HELM" upgrade --install appstack-operator charts/appstack-operator --namespace "$NAMESPACE" \
  --set "watchNamespaces={$NAMESPACE}" --set replicaCount=1 --take-ownership --wait >/dev/null
kubectl -n "$NAMESPACE" create secret generic sendgrid --from-literal=api-key=SG.measure \
  --dry-run=client -o yaml | kubectl apply -f - >/dev/null

KUBECONFIG="$(scripts/cluster.sh sa-kubeconfig "$NAMESPACE" appstack-operator)" LOG_LEVEL=warn \
  POD_NAMESPACE="$NAMESPACE" target/release/appstack run --namespace "$NAMESPACE" --leader-elect \
  --metrics-addr 127.0.0.1:0 --health-addr 127.0.0.1:0 &
operator=$!
trap 'kill $operator 2>/dev/null || true' EXIT
started=$SECONDS

for i in $(seq 1 "$STACKS"); do
  sed -e "s/^  name: shop$/  name: shop-$i/" -e 's/size: 10Gi/size: 1Gi/' deploy/examples/shop.yaml
  echo ---
done | kubectl -n "$NAMESPACE" apply --server-side -f - >/dev/null

until [[ "$(kubectl -n "$NAMESPACE" get appstacks -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c True)" -ge "$STACKS" ]]; do
  sleep 2
done
echo "$STACKS stacks Ready after $((SECONDS - started)) s"
sleep 30 # a few resyncs and watch events after convergence
grep -E 'VmHWM|VmRSS' "/proc/$operator/status"
ticks="$(awk '{print $14 + $15}' "/proc/$operator/stat")"
echo "CPU: $((ticks / $(getconf CLK_TCK))) s over $((SECONDS - started)) s"
