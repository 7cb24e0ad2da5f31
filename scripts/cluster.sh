#!/usr/bin/env bash
# A real local Kubernetes control plane for development and tests: etcd,
# kube-apiserver, kube-controller-manager, kube-scheduler and KWOK (fake nodes
# that run pods, complete Job pods and bind volumes), all on loopback.
#
#   scripts/cluster.sh up          start (idempotent); builds binaries once
#   scripts/cluster.sh up --real-node
#                                  the same control plane and one real node
#                                  (containerd, kubelet, kube-proxy, CoreDNS,
#                                  kube-router's NetworkPolicy controller, local
#                                  volumes), the only node pods schedule on; as
#                                  root (scripts/lib/real-node.sh tells how)
#   scripts/cluster.sh down        stop every process it started, remove state
#                                  (and on a real node every pod, mount,
#                                  namespace, cgroup and route it made)
#   scripts/cluster.sh status      print what runs and whether it is healthy
#   scripts/cluster.sh kubeconfig  print the admin kubeconfig path
#   scripts/cluster.sh sa-kubeconfig <namespace> <serviceaccount>
#                                  write a kubeconfig that authenticates as the
#                                  ServiceAccount (a token from the TokenRequest
#                                  API, `kubectl create token`) and print its
#                                  path: the operator runs on the host with the
#                                  chart's RBAC, as it would in a pod
#   scripts/cluster.sh restart-apiserver [seconds]
#                                  stop kube-apiserver only, wait (default 10 s),
#                                  start it again and wait until it is ready
#   scripts/cluster.sh bin         print the directory holding kubectl & co.
#   scripts/cluster.sh containerd-socket
#                                  print the real node's containerd socket, for
#                                  `scripts/images.sh --import <socket> <names>`
#
# State lives in $APPSTACK_CLUSTER_DIR (default: .cluster in the checkout), and
# every port is picked free at start, so two checkouts run side by side. The
# script marks a state directory it creates (.appstack-cluster) and refuses to
# start in, or remove, a non-empty directory without that mark: pointing the
# variable at a directory of yours never deletes it.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
STATE="${APPSTACK_CLUSTER_DIR:-$ROOT/.cluster}"
MARKER=.appstack-cluster
NODES="${APPSTACK_CLUSTER_NODES:-3}"
SERVICE_CIDR=10.96.0.0/16
FIRST_SERVICE_IP=10.96.0.1
APISERVER_HOST=127.0.0.1
COMPONENTS=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
# kube-controller-manager's controllers. The two protection controllers remove
# the kubernetes.io/pvc-protection and kubernetes.io/pv-protection finalizers
# (the API server's StorageObjectInUseProtection admission adds them), without
# which a deleted PVC or PV never goes away. KWOK's volume stages stand in for
# the PV binder and a provisioner: they bind, release and delete the volumes.
# A StatefulSet's persistentVolumeClaimRetentionPolicy (whenDeleted: Delete) is
# the statefulset controller owning the PVCs and the garbage collector deleting
# them. The clusterrole-aggregation controller fills the built-in view, edit
# and admin roles from ClusterRoles labelled to aggregate into them (the
# chart's appstack-view and appstack-edit). The disruption controller fills in
# which pods a PodDisruptionBudget covers.
CONTROLLERS=(
  deployment-controller replicaset-controller statefulset-controller job-controller
  garbage-collector-controller namespace-controller serviceaccount-controller
  serviceaccount-token-controller endpointslice-controller ttl-after-finished-controller
  root-ca-certificate-publisher-controller
  persistentvolumeclaim-protection-controller persistentvolume-protection-controller
  clusterrole-aggregation-controller
  disruption-controller
)

log() { echo "[cluster] $*" >&2; }
die() { log "error: $*"; exit 1; }

# shellcheck source=scripts/lib/real-node.sh
source "$ROOT/scripts/lib/real-node.sh"

# On a real node, the API server and Services take the node's addresses.
mode_settings() {
  if real_node; then
    load_real_node
    APISERVER_HOST="$HOST_IP"
  fi
}

# Whether $STATE is a state directory this script made: it carries the
# marker, or the layout of one made before the marker existed (ports, PKI and
# the binaries' path), which then gets the marker.
ours() {
  [[ -f "$STATE/$MARKER" ]] && return 0
  if [[ -f "$STATE/ports.env" && -f "$STATE/bin-dir" && -d "$STATE/pki" ]]; then
    mark
    return 0
  fi
  return 1
}

mark() {
  echo "State of scripts/cluster.sh (appstack-operator); 'scripts/cluster.sh down' removes this directory." \
    >"$STATE/$MARKER"
}

# Stops here unless $STATE is absent, empty, or ours.
guard_state() {
  [[ -e "$STATE" ]] || return 0
  [[ -d "$STATE" ]] || die "$STATE exists and is not a directory; set APPSTACK_CLUSTER_DIR to a new directory"
  ours && return 0
  [[ -z "$(ls -A "$STATE")" ]] && return 0
  die "$STATE was not created by scripts/cluster.sh (no $MARKER file in it); refusing to use or remove it. Set APPSTACK_CLUSTER_DIR to a new or empty directory"
}

bin_dir() {
  if [[ -f "$STATE/bin-dir" && -x "$(cat "$STATE/bin-dir")/kube-apiserver" ]]; then
    cat "$STATE/bin-dir"
  else
    "$ROOT/scripts/build-control-plane.sh"
  fi
}

node_bin_dir() {
  if [[ -f "$STATE/node-bin-dir" && -x "$(cat "$STATE/node-bin-dir")/coredns" ]]; then
    cat "$STATE/node-bin-dir"
  else
    "$ROOT/scripts/build-real-node.sh"
  fi
}

# free_ports <n>: n distinct free loopback ports, one a line, from one Python
# start (each start costs most of a second on a busy machine).
free_ports() {
  python3 -c 'import socket, sys
socks = [socket.socket() for _ in range(int(sys.argv[1]))]
for s in socks: s.bind(("127.0.0.1", 0))
print("\n".join(str(s.getsockname()[1]) for s in socks))' "$1"
}

pid_alive() { [[ -f "$STATE/$1.pid" ]] && kill -0 "$(cat "$STATE/$1.pid")" 2>/dev/null; }

kubectl_() { "$BIN/kubectl" --kubeconfig "$STATE/admin.kubeconfig" "$@"; }

apiserver_ready() {
  [[ -f "$STATE/ports.env" ]] || return 1
  # shellcheck disable=SC1091
  source "$STATE/ports.env"
  curl -fsS --max-time 2 --cacert "$STATE/pki/ca.crt" --cert "$STATE/pki/admin.crt" \
    --key "$STATE/pki/admin.key" "https://${APISERVER_HOST:-127.0.0.1}:$APISERVER_PORT/readyz" >/dev/null 2>&1
}

start_apiserver() {
  mode_settings
  # KWOK's cluster has no endpoints for the kubernetes Service (its address is
  # loopback); a real node's pods reach the API server through it.
  local mode_args=(--authorization-mode RBAC --endpoint-reconciler-type none)
  if real_node; then
    real_node_apiserver_args
    mode_args=("${REAL_NODE_APISERVER_ARGS[@]}")
  fi
  start kube-apiserver "$BIN/kube-apiserver" \
    --etcd-servers "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --bind-address "$APISERVER_HOST" --advertise-address "$APISERVER_HOST" --secure-port "$APISERVER_PORT" \
    --tls-cert-file "$STATE/pki/apiserver.crt" --tls-private-key-file "$STATE/pki/apiserver.key" \
    --client-ca-file "$STATE/pki/ca.crt" \
    --service-account-key-file "$STATE/pki/sa.pub" \
    --service-account-signing-key-file "$STATE/pki/sa.key" \
    --service-account-issuer https://kubernetes.default.svc \
    --service-cluster-ip-range "$SERVICE_CIDR" \
    "${mode_args[@]}" \
    --disable-admission-plugins TaintNodesByCondition \
    --audit-policy-file "$STATE/audit-policy.yaml" --audit-log-path "$STATE/logs/audit.log" \
    --audit-log-maxsize 200
}

# restart-apiserver <seconds>: stops kube-apiserver (etcd and the rest keep
# running), waits, starts it again and waits for /readyz. Tests use it to
# show clients rejoin a restarted API server.
restart_apiserver() {
  local pause="${1:-10}"
  pid_alive kube-apiserver || die "kube-apiserver is not running in $STATE"
  BIN="$(bin_dir)"
  # shellcheck disable=SC1091
  source "$STATE/ports.env"
  local pid; pid="$(cat "$STATE/kube-apiserver.pid")"
  # A graceful stop waits for open requests up to a minute; after 3 s the
  # rest is a crash, which clients must survive too.
  kill "$pid"
  local deadline=$((SECONDS + 3))
  while kill -0 "$pid" 2>/dev/null; do
    if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null || true; fi
    sleep 0.1
  done
  log "kube-apiserver stopped; starting it again in ${pause} s"
  sleep "$pause"
  start_apiserver
  wait_for "kube-apiserver /readyz" 60 apiserver_ready
  log "kube-apiserver ready again"
}

all_running() {
  for c in "${COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
  if real_node; then real_node_running || return 1; fi
  apiserver_ready
}

# Certificates: every one X.509 v3 (rustls rejects v1 certificates).
CLIENT_EXT="basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=clientAuth"

# The new key of each certificate sign_cert makes.
CERT_KEY_ARGS=(-newkey rsa:2048)

sign_cert() { # sign_cert <name> <subject> <extensions>: in $STATE/pki, by the CA
  (
    cd "$STATE/pki"
    openssl req "${CERT_KEY_ARGS[@]}" -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
    printf '%s\n' "$3" >"$1.ext"
    openssl x509 -req -in "$1.csr" -CA ca.crt -CAkey ca.key -CAcreateserial -days 3650 \
      -extfile "$1.ext" -out "$1.crt" 2>/dev/null
  )
}

make_pki() {
  local pki="$STATE/pki"
  mkdir -p "$pki"
  (
    cd "$pki"
    openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj "/CN=appstack-local-ca" \
      -keyout ca.key -out ca.crt -addext "basicConstraints=critical,CA:TRUE" \
      -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
    sign_cert apiserver "/CN=kube-apiserver" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:127.0.0.1,IP:$APISERVER_HOST,IP:$FIRST_SERVICE_IP,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local"
    sign_cert admin "/O=system:masters/CN=appstack-admin" "$CLIENT_EXT"
    openssl genrsa -out sa.key 2048 2>/dev/null
    openssl rsa -in sa.key -pubout -out sa.pub 2>/dev/null
  )
}

write_kubeconfig() { # write_kubeconfig <cert name> <user name>: $STATE/<cert name>.kubeconfig
  local cert="$1" user="$2"
  kubeconfig_for "$user" "client-certificate: $STATE/pki/$cert.crt
    client-key: $STATE/pki/$cert.key" >"$STATE/$cert.kubeconfig"
}

kubeconfig_for() { # kubeconfig_for <user name> <user fields>: a kubeconfig on standard output
  cat <<KCFG
apiVersion: v1
kind: Config
clusters:
- name: appstack-local
  cluster:
    server: https://$APISERVER_HOST:$APISERVER_PORT
    certificate-authority: $STATE/pki/ca.crt
users:
- name: $1
  user:
    $2
contexts:
- name: appstack-local
  context: {cluster: appstack-local, user: $1}
current-context: appstack-local
KCFG
}

# sa-kubeconfig <namespace> <serviceaccount>: a kubeconfig holding a token of
# the ServiceAccount, so a process on the host has exactly the rights RBAC
# gives that account (as user system:serviceaccount:<namespace>:<name>).
sa_kubeconfig() {
  local namespace="${1:?namespace}" account="${2:?service account}"
  all_running || die "no cluster running in $STATE"
  BIN="$(bin_dir)"
  mode_settings
  local token file="$STATE/tokens/$namespace.$account.kubeconfig"
  token="$(kubectl_ create token "$account" -n "$namespace" --duration 24h)"
  mkdir -p "$STATE/tokens"
  kubeconfig_for "system:serviceaccount:$namespace:$account" "token: $token" >"$file.tmp"
  mv "$file.tmp" "$file"
  echo "$file"
}

start() { # start <name> <binary args...>: runs in its own session, logs to state
  local name="$1"; shift
  setsid "$@" >"$STATE/logs/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/$name.pid"
}

wait_for() { # wait_for <what> <seconds> <command...>
  local what="$1" limit="$2"; shift 2
  local deadline=$((SECONDS + limit))
  until "$@"; do
    if ((SECONDS >= deadline)); then
      log "timed out waiting for $what; last log lines:"
      tail -n 20 "$STATE"/logs/*.log >&2 || true
      return 1
    fi
    sleep 0.2
  done
}

up() {
  local want_real_node=0
  case "${1:-}" in
    "") ;;
    --real-node) want_real_node=1 ;;
    *) die "unknown option $1 (up takes --real-node)" ;;
  esac
  guard_state
  BIN="$(bin_dir)"
  if ((want_real_node)); then
    real_node_requirements
    NODE_BIN="$(node_bin_dir)"
  fi
  local have_real_node=0
  real_node && have_real_node=1
  if all_running && ((have_real_node == want_real_node)); then
    log "already running; kubeconfig: $STATE/admin.kubeconfig"
    return
  fi
  if [[ -f "$STATE/$MARKER" ]]; then
    if ((have_real_node != want_real_node)); then
      log "stopping the cluster in $STATE to start it in the other mode"
    else
      log "found a partial cluster in $STATE; restarting it"
    fi
    down
  fi
  local started=$SECONDS
  mkdir -p "$STATE"
  mark
  mkdir -p "$STATE/logs" "$STATE/etcd"
  echo "$BIN" >"$STATE/bin-dir"
  if ((want_real_node)); then
    echo "$NODE_BIN" >"$STATE/node-bin-dir"
    real_node_network
    mode_settings
    # containerd needs no API server: it starts now, beside the control plane.
    real_node_start_runtime
  fi
  make_pki
  local ports
  mapfile -t ports < <(free_ports 6)
  cat >"$STATE/ports.env" <<PORTS
APISERVER_HOST=$APISERVER_HOST
ETCD_CLIENT_PORT=${ports[0]}
ETCD_PEER_PORT=${ports[1]}
APISERVER_PORT=${ports[2]}
CONTROLLER_MANAGER_PORT=${ports[3]}
SCHEDULER_PORT=${ports[4]}
KWOK_PORT=${ports[5]}
PORTS
  # shellcheck disable=SC1091
  source "$STATE/ports.env"
  write_kubeconfig admin admin
  real_node && real_node_pki

  start etcd "$BIN/etcd" --name local --data-dir "$STATE/etcd" \
    --listen-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --advertise-client-urls "http://127.0.0.1:$ETCD_CLIENT_PORT" \
    --listen-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls "http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster "local=http://127.0.0.1:$ETCD_PEER_PORT" \
    --unsafe-no-fsync --log-level warn

  # Audit only writes, at Metadata level, for every user and every resource
  # (Events included): tests count the operator's mutating requests from
  # outside the operator, by user.username (its ServiceAccount) and namespace.
  cat >"$STATE/audit-policy.yaml" <<'POLICY'
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
- level: Metadata
  verbs: [create, update, patch, delete, deletecollection]
- level: None
POLICY
  start_apiserver
  wait_for "etcd" 30 pid_alive etcd
  wait_for "kube-apiserver /readyz" 60 apiserver_ready

  # On a real node no KWOK stage binds volumes: the PersistentVolume binder
  # does, as in any cluster.
  local controllers=("${CONTROLLERS[@]}")
  real_node && controllers+=(persistentvolume-binder-controller)
  start kube-controller-manager "$BIN/kube-controller-manager" \
    --kubeconfig "$STATE/admin.kubeconfig" --authentication-kubeconfig "$STATE/admin.kubeconfig" \
    --authorization-kubeconfig "$STATE/admin.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$CONTROLLER_MANAGER_PORT" --leader-elect=false \
    --service-account-private-key-file "$STATE/pki/sa.key" --root-ca-file "$STATE/pki/ca.crt" \
    --kube-api-qps 1000 --kube-api-burst 2000 \
    --concurrent-deployment-syncs 20 --concurrent-replicaset-syncs 20 \
    --concurrent-statefulset-syncs 20 --concurrent-job-syncs 20 --concurrent-gc-syncs 40 \
    --controllers "$(IFS=,; echo "${controllers[*]}")"

  cat >"$STATE/scheduler.yaml" <<SCHED
apiVersion: kubescheduler.config.k8s.io/v1
kind: KubeSchedulerConfiguration
clientConnection:
  kubeconfig: $STATE/admin.kubeconfig
  qps: 1000
  burst: 2000
leaderElection:
  leaderElect: false
SCHED
  start kube-scheduler "$BIN/kube-scheduler" --config "$STATE/scheduler.yaml" \
    --authentication-kubeconfig "$STATE/admin.kubeconfig" \
    --authorization-kubeconfig "$STATE/admin.kubeconfig" \
    --bind-address 127.0.0.1 --secure-port "$SCHEDULER_PORT"

  if real_node; then
    real_node_up
    log "ready in $((SECONDS - started)) s; kubeconfig: $STATE/admin.kubeconfig"
    return
  fi

  local stage_args=()
  for f in "$BIN"/stages/*.yaml; do
    [[ "$(basename "$f")" == storage-class.yaml ]] || stage_args+=(--config "$f")
  done
  # This project's stages: what a kubelet reports of pods that cannot run
  # (hack/kwok-stages/README.md).
  for f in "$ROOT"/hack/kwok-stages/*.yaml; do stage_args+=(--config "$f"); done
  start kwok "$BIN/kwok" --kubeconfig "$STATE/admin.kubeconfig" --manage-all-nodes=true \
    --server-address "127.0.0.1:$KWOK_PORT" --cidr 10.128.0.1/12 "${stage_args[@]}"

  kubectl_ apply -f "$BIN/stages/storage-class.yaml" >/dev/null
  for i in $(seq 0 $((NODES - 1))); do
    cat <<NODE
apiVersion: v1
kind: Node
metadata:
  name: kwok-node-$i
  annotations: {kwok.x-k8s.io/node: fake, node.alpha.kubernetes.io/ttl: "0"}
  labels: {type: kwok, kubernetes.io/hostname: kwok-node-$i, kubernetes.io/os: linux}
status:
  capacity: {cpu: "64", memory: 256Gi, pods: "10000"}
  allocatable: {cpu: "64", memory: 256Gi, pods: "10000"}
---
NODE
  done | kubectl_ apply -f - >/dev/null
  wait_for "ready nodes" 60 nodes_ready
  wait_for "the default service account" 60 default_service_account
  log "ready in $((SECONDS - started)) s; kubeconfig: $STATE/admin.kubeconfig"
}

nodes_ready() {
  local ready
  ready="$(kubectl_ get nodes -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' 2>/dev/null | grep -c True || true)"
  [[ "$ready" -ge "$NODES" ]]
}

default_service_account() { kubectl_ get serviceaccount default -n default -o name >/dev/null 2>&1; }

down() {
  [[ -d "$STATE" ]] || { log "no cluster in $STATE"; return; }
  guard_state
  if [[ ! -f "$STATE/$MARKER" ]]; then
    log "no cluster in $STATE (an empty directory, left as it is)"
    return
  fi
  # Reverse start order, so controllers do not fight a dying API server.
  local pids=()
  # An operator started against this cluster (scripts/demo.sh) stops first.
  if pid_alive operator; then
    pids+=("$(cat "$STATE/operator.pid")")
    kill "${pids[0]}" 2>/dev/null || true
  fi
  if real_node; then
    # Nothing may make or place a pod while the node's pods are deleted; then
    # the node goes, while the API server still answers its kubelet.
    stop_components 20 operator kube-scheduler kube-controller-manager kwok
    # shellcheck disable=SC1091
    [[ -f "$STATE/ports.env" ]] && source "$STATE/ports.env"
    BIN="$(cat "$STATE/bin-dir" 2>/dev/null || true)"
    real_node_stop
    # The API server stops while its address (the host's end of the node's
    # link) exists: it talks to itself there as it shuts down.
    stop_components 20 kube-apiserver
    real_node_remove
  fi
  for ((i = ${#COMPONENTS[@]} - 1; i >= 0; i--)); do
    local c="${COMPONENTS[$i]}"
    if pid_alive "$c"; then
      local pid; pid="$(cat "$STATE/$c.pid")"
      kill "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
  done
  # Wait until every process has exited: a lingering etcd still holds its
  # ports and data directory.
  local deadline=$((SECONDS + 20))
  for pid in "${pids[@]}"; do
    while kill -0 "$pid" 2>/dev/null; do
      if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null || true; fi
      sleep 0.1
    done
  done
  rm -rf "$STATE"
  log "stopped"
}

status() {
  [[ -d "$STATE" ]] || { echo "no cluster in $STATE"; return 1; }
  local healthy=0
  for c in "${COMPONENTS[@]}"; do
    if pid_alive "$c"; then echo "$c: running (pid $(cat "$STATE/$c.pid"))"; else echo "$c: stopped"; healthy=1; fi
  done
  if apiserver_ready; then echo "kube-apiserver: ready at https://$APISERVER_HOST:$APISERVER_PORT"; else echo "kube-apiserver: not ready"; healthy=1; fi
  if real_node; then
    BIN="$(cat "$STATE/bin-dir")"
    real_node_status || healthy=1
  fi
  echo "kubeconfig: $STATE/admin.kubeconfig"
  return $healthy
}

case "${1:-}" in
  up) up "${2:-}" ;;
  down) down ;;
  status) status ;;
  kubeconfig) echo "$STATE/admin.kubeconfig" ;;
  sa-kubeconfig) sa_kubeconfig "${2:-}" "${3:-}" ;;
  restart-apiserver) restart_apiserver "${2:-10}" ;;
  bin) bin_dir ;;
  containerd-socket)
    real_node || die "no real node in $STATE (scripts/cluster.sh up --real-node starts one)"
    load_real_node
    echo "$CONTAINERD_SOCKET"
    ;;
  *) echo "usage: $0 up [--real-node]|down|status|kubeconfig|sa-kubeconfig <namespace> <serviceaccount>|restart-apiserver [seconds]|bin|containerd-socket" >&2; exit 2 ;;
esac
