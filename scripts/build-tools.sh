#!/usr/bin/env bash
# Builds the pinned upstream tools the chart, workflow and GitOps tests use
# (helm, actionlint, kstatus: a minimal command over the kstatus library
# that Helm 4 and Flux use, promtool, and promql-metrics: a minimal command
# over Prometheus' PromQL parser) from the Go module proxy through the wrapper
# modules in hack/tools/, and caches them like the control plane, keyed by
# version and go.sum. Prints the directory holding the binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HACK="$ROOT/hack/tools"
CACHE="${APPSTACK_CACHE_DIR:-$HOME/.cache/appstack-operator}"

HELM_VERSION=v4.3.1
ACTIONLINT_VERSION=v1.7.12
# The fluxcd/cli-utils version helm.sh/helm/v4 $HELM_VERSION requires.
KSTATUS_VERSION=v1.2.2
# Prometheus 3.16.0, whose Go module is versioned v0.316.0.
PROMETHEUS_VERSION=v0.316.0

log() { echo "[build-tools] $*" >&2; }

# shellcheck source=scripts/lib/go-build.sh
source "$ROOT/scripts/lib/go-build.sh"

helm_dir="$(LDFLAGS="-X helm.sh/helm/v4/internal/version.version=$HELM_VERSION" build helm "$HELM_VERSION" helm -- helm.sh/helm/v4/cmd/helm)"
actionlint_dir="$(build actionlint "$ACTIONLINT_VERSION" actionlint -- github.com/rhysd/actionlint/cmd/actionlint)"
kstatus_dir="$(build kstatus "$KSTATUS_VERSION" kstatus -- appstack.dev/hack/tools/kstatus)"
promtool_dir="$(LDFLAGS="-X github.com/prometheus/common/version.Version=3.16.0" build promtool "$PROMETHEUS_VERSION" promtool promql-metrics -- \
  github.com/prometheus/prometheus/cmd/promtool appstack.dev/hack/tools/promtool/promql-metrics)"

bin="$CACHE/bin/tools-$(echo "$helm_dir $actionlint_dir $kstatus_dir $promtool_dir" | sha256sum | cut -c1-12)"
mkdir -p "$bin"
for f in "$helm_dir"/helm "$actionlint_dir"/actionlint "$kstatus_dir"/kstatus "$promtool_dir"/promtool "$promtool_dir"/promql-metrics; do
  ln -sfn "$f" "$bin/$(basename "$f")"
done
echo "$bin"
