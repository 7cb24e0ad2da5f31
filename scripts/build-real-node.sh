#!/usr/bin/env bash
# Builds the pinned upstream programs that run beside the real node of
# `scripts/cluster.sh up --real-node` (CoreDNS for the cluster domain,
# kube-router as the NetworkPolicy enforcer) from the Go module proxy through
# the wrapper modules in hack/real-node/, cached like the control plane, keyed
# by version and go.sum. Prints the directory holding the binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HACK="$ROOT/hack/real-node"
CACHE="${APPSTACK_CACHE_DIR:-$HOME/.cache/appstack-operator}"

COREDNS_VERSION=v1.15.0
# The newest kube-router the module proxy serves.
KUBE_ROUTER_VERSION=v2.1.0

log() { echo "[build-real-node] $*" >&2; }

# shellcheck source=scripts/lib/go-build.sh
source "$ROOT/scripts/lib/go-build.sh"

coredns_dir="$(build coredns "$COREDNS_VERSION" coredns -- github.com/coredns/coredns)"
# kube-router prints its version, stamped by its release build, at start.
kube_router_dir="$(LDFLAGS="-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=$KUBE_ROUTER_VERSION" build kube-router "$KUBE_ROUTER_VERSION" kube-router -- github.com/cloudnativelabs/kube-router/v2/cmd/kube-router)"

bin="$CACHE/bin/real-node-$(echo "$coredns_dir $kube_router_dir" | sha256sum | cut -c1-12)"
mkdir -p "$bin"
for f in "$coredns_dir"/coredns "$kube_router_dir"/kube-router; do ln -sfn "$f" "$bin/$(basename "$f")"; done
echo "$bin"
