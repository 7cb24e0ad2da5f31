#!/usr/bin/env bash
# The demo on a fresh machine: builds the pinned control-plane binaries and
# tools once, starts the local cluster, installs the Helm chart (CRD, RBAC,
# the operator Deployment, whose pods KWOK only pretends to run), runs the
# real operator on this machine as the chart's ServiceAccount, applies the
# example AppStack and waits until it is Ready.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/cluster.sh up
STATE="${APPSTACK_CLUSTER_DIR:-$PWD/.cluster}"
BIN="$(scripts/cluster.sh bin)"
export KUBECONFIG="$(scripts/cluster.sh kubeconfig)"
kubectl() { "$BIN/kubectl" "$@"; }
step() { printf '\n== %s\n' "$*"; }

step "building the operator"
cargo build --quiet --bin appstack
APPSTACK="$PWD/target/debug/appstack"

step "installing the chart into namespace appstack-system"
HELM="$(scripts/build-tools.sh)/helm"
# --take-ownership: on a cluster the tests used, the CRD exists already.
"$HELM" upgrade --install appstack-operator charts/appstack-operator \
  --namespace appstack-system --create-namespace --take-ownership --wait --timeout 2m

step "starting the operator (as ServiceAccount appstack-system/appstack-operator; log: $STATE/logs/operator.log)"
if [[ -f "$STATE/operator.pid" ]] && kill -0 "$(cat "$STATE/operator.pid")" 2>/dev/null; then
  kill "$(cat "$STATE/operator.pid")"
  sleep 1
fi
# On the host, outside the (fake) pod network: connect to external
# databases only, never to the managed one's Service.
KUBECONFIG="$(scripts/cluster.sh sa-kubeconfig appstack-system appstack-operator)" LOG_FORMAT=text \
  POD_NAMESPACE=appstack-system APPSTACK_DATABASE_CHECKS=external \
  nohup "$APPSTACK" run --leader-elect >"$STATE/logs/operator.log" 2>&1 &
echo $! >"$STATE/operator.pid"

step "applying deploy/examples/shop.yaml to namespace demo"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
# The example references this Secret for SENDGRID_API_KEY.
kubectl -n demo create secret generic sendgrid --from-literal=api-key=SG.demo-key \
  --dry-run=client -o yaml | kubectl apply -f -
kubectl -n demo apply --server-side -f deploy/examples/shop.yaml
kubectl -n demo wait --for=condition=Ready appstack/shop --timeout=180s

step "the stack"
kubectl -n demo get appstacks,deploy,jobs,sts,secrets
echo
kubectl -n demo get appstack shop \
  -o jsonpath='{range .status.conditions[*]}{.type}={.status} ({.reason}) {.message}{"\n"}{end}'

step "kubectl explain appstack.spec (first lines)"
# The API server publishes the new type's OpenAPI a moment after the CRD is
# Established; explain retries until it is there.
for _ in $(seq 1 50); do
  kubectl explain appstack.spec 2>/dev/null | head -20 && break
  sleep 0.2
done
echo
echo "The cluster and the operator keep running; use them with: export KUBECONFIG=$KUBECONFIG"
echo "kubectl is at $BIN/kubectl; stop everything with: scripts/cluster.sh down"
