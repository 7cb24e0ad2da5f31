#!/usr/bin/env bash
# Builds the pinned upstream control-plane binaries (etcd, kube-apiserver,
# kube-controller-manager, kube-scheduler, kubectl, kwok) from the Go module
# proxy and caches them outside git, keyed by version and go.sum, so a warm
# machine never rebuilds. Prints the directory holding the binaries.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
HACK="$ROOT/hack/control-plane"
CACHE="${APPSTACK_CACHE_DIR:-$HOME/.cache/appstack-operator}"

K8S_VERSION=v1.37.2
ETCD_VERSION=v3.7.3
KWOK_VERSION=v0.8.0

log() { echo "[build-control-plane] $*" >&2; }

# shellcheck source=scripts/lib/go-build.sh
source "$ROOT/scripts/lib/go-build.sh"

etcd_dir="$(build etcd "$ETCD_VERSION" etcd -- go.etcd.io/etcd/server/v3)"
kwok_dir="$(build kwok "$KWOK_VERSION" kwok -- sigs.k8s.io/kwok/cmd/kwok)"
# The API server reports its version (kubectl version, Helm's kubeVersion
# checks) from these variables, which upstream's release build stamps.
K8S_MINOR="${K8S_VERSION#v1.}"; K8S_MINOR="${K8S_MINOR%%.*}"
k8s_dir="$(LDFLAGS="-X k8s.io/component-base/version.gitVersion=$K8S_VERSION -X k8s.io/component-base/version.gitMajor=1 -X k8s.io/component-base/version.gitMinor=$K8S_MINOR -X k8s.io/component-base/version.gitTreeState=clean" build kubernetes "$K8S_VERSION" kube-apiserver kube-controller-manager kube-scheduler kubectl kubelet kube-proxy -- \
  k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kube-controller-manager \
  k8s.io/kubernetes/cmd/kube-scheduler k8s.io/kubernetes/cmd/kubectl \
  k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy)"

# KWOK's upstream Stage definitions travel with its binary, so starting a
# cluster never depends on the Go module cache.
stages="$kwok_dir/stages"
if [[ ! -d "$stages" ]]; then
  src="$(cd "$HACK/kwok" && go list -m -f '{{.Dir}}' sigs.k8s.io/kwok)/kustomize/stage"
  mkdir -p "$stages.tmp"
  for f in node/fast/node-initialize.yaml node/heartbeat/node-heartbeat.yaml \
    pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml \
    pod/chaos/pod-container-running-failed.yaml \
    volume/fast/pvc-provision.yaml volume/fast/pv-bind.yaml volume/fast/pv-delete.yaml \
    volume/fast/pvc-delete.yaml volume/fast/storage-class.yaml; do
    cp "$src/$f" "$stages.tmp/$(basename "$f")"
  done
  mv "$stages.tmp" "$stages"
fi

# One directory with every binary, so callers put a single entry on PATH.
bin="$CACHE/bin/current-$(echo "$etcd_dir $kwok_dir $k8s_dir" | sha256sum | cut -c1-12)"
mkdir -p "$bin"
for f in "$etcd_dir"/etcd "$kwok_dir"/kwok "$kwok_dir"/stages "$k8s_dir"/*; do ln -sfn "$f" "$bin/$(basename "$f")"; done
echo "$bin"
