# shellcheck shell=bash
# The real node of `scripts/cluster.sh up --real-node`: containerd, kubelet,
# kube-proxy (iptables), CoreDNS and kube-router's NetworkPolicy controller,
# beside the control plane. Sourced by scripts/cluster.sh, which defines
# STATE, BIN, log, die, start, wait_for, pid_alive, kubectl_, sign_cert,
# write_kubeconfig and CLIENT_EXT.
#
# What this machine taught us, and what the script does about it:
#
# - Everything of the node lives in a network namespace of its own, joined to
#   the host by one veth pair (appstack<slot> on the host, eth0 in the node).
#   kube-proxy's and kube-router's iptables chains, the ipsets, the CNI bridge
#   and the pods' veths are all inside it, so the host's own rules are never
#   touched. The namespace is held by the node's processes, not by a file, so
#   it goes with them and takes all of that along. It has no default route: a
#   pod reaches the node, other pods, Services and the API server, and
#   nothing else, so no packet leaves the machine.
# - Addresses come from 198.18.0.0/15 (set aside for benchmarking networks):
#   slot s (1..63, the first free one, taken under a lock so clusters of other
#   checkouts run beside this one) gets the link 198.19.255.4s/30 (host .4s+1,
#   node .4s+2), pods 198.18.s.0/24 and Services 198.19.s.0/24. The API
#   server listens on the host's end of the link, the only address both the
#   host and the pods reach; etcd stays on loopback.
# - The node's daemons share one mount namespace (held by a `sleep` process)
#   with a tmpfs on /run and the state directory's log dir on /var/log: every
#   mount kubelet and containerd make (kubelet's bind of its root dir onto
#   itself, container root filesystems, secret tmpfs, the pods' network
#   namespace files) stays in it and disappears with its last process, so
#   nothing is ever left mounted on the host.
# - cgroups are v1 (hybrid). kubelet refuses them unless `failCgroupV1: false`;
#   with the cgroupfs driver it manages pods under a cgroup root of this
#   node's own (/appstack-node-<slot>), so two nodes on one host never take
#   each other's pod cgroups for orphans.
# - `oom_score_adj` cannot be lowered here, even as root: containerd's
#   `restrict_oom_score_adj` keeps the pause container's -998 from failing the
#   sandbox, and kubelet and kube-proxy are told not to lower their own.
# - kubelet sets host-wide kernel tunables (vm.overcommit_memory=1,
#   kernel.panic=10, kernel.panic_on_oops=1) unless they already hold; on a
#   shared machine it must not. Inside the node's mount namespace those
#   /proc/sys files are bind-mounted over by files holding the values kubelet
#   expects, so it finds nothing to change.
# - Swap is off, but `failSwapOn: false` keeps a machine with swap working.
# - No registry is reachable: the sandbox (pause) image and every image a pod
#   uses are imported into containerd's k8s.io namespace, named under
#   appstack.test/ (a reserved name that never resolves).
# - CoreDNS serves cluster.local and the reverse zones of the node's ranges
#   only; any other name is refused, never forwarded. kubelet gives pods a
#   resolv.conf naming it and nothing else (no host search domains).
# - KWOK runs as in the KWOK cluster but manages only nodes annotated
#   kwok.x-k8s.io/node=fake, and none are made: with --manage-all-nodes it
#   would mark the real node's pods Running even when their sandbox failed.
# - Storage: local PersistentVolumes under the state directory, created by
#   the script for a default StorageClass with WaitForFirstConsumer binding.
#   Their directories belong to root (0755), as a real disk does, so a pod
#   running as non-root writes only if its fsGroup makes the volume its own,
#   which kubelet applies to local volumes as a CSI driver would.
# - `down` stops the schedulers of new pods first, deletes every pod and lets
#   kubelet stop their sandboxes (so CNI releases addresses and libcni its
#   cache), then kills the rest, deletes the namespace (bridge, veths,
#   iptables chains, ipsets, routes), removes the cgroups and checks nothing is
#   mounted under the state directory before removing it.

REAL_NODE_NAME=appstack-real-node
# local PersistentVolumes made at start: every one is Retained after its claim
# goes, so this is how many claims a cluster's life can bind.
REAL_NODE_VOLUMES="${APPSTACK_REAL_NODE_VOLUMES:-32}"
REAL_NODE_LOCK=/run/lock/appstack-real-node.lock
# The values kubelet's container manager wants for these kernel tunables
# (k8s.io/component-helpers/node/util/sysctl), shown to it in its own mount
# namespace.
REAL_NODE_SYSCTLS=(
  vm/overcommit_memory=1 vm/panic_on_oom=0 kernel/panic=10 kernel/panic_on_oops=1
  kernel/keys/root_maxkeys=1000000 kernel/keys/root_maxbytes=25000000
)
NODE_COMPONENTS=(node-namespace containerd kubelet kube-proxy coredns kube-router)

real_node() { [[ -f "$STATE/real-node.env" ]]; }

load_real_node() {
  # shellcheck disable=SC1091
  source "$STATE/real-node.env"
}

# Stops here unless this machine can run the node; names what is missing.
real_node_requirements() {
  [[ "$(id -u)" == 0 ]] || die "--real-node needs root (network namespaces, mounts, cgroups)"
  local missing=()
  for c in containerd runc ctr ip iptables iptables-save ipset nsenter unshare flock; do
    command -v "$c" >/dev/null || missing+=("$c")
  done
  for p in bridge host-local portmap loopback; do
    [[ -x /usr/lib/cni/$p ]] || missing+=("/usr/lib/cni/$p")
  done
  ((${#missing[@]} == 0)) || die "missing ${missing[*]}: run scripts/prerequisites.sh"
  [[ -d /sys/fs/cgroup/memory && -d /sys/fs/cgroup/cpu ]] ||
    die "--real-node expects cgroup v1 controllers under /sys/fs/cgroup"
  local sock="$STATE/node/containerd.sock"
  # A unix socket's path holds at most 107 bytes (and containerd adds .ttrpc).
  ((${#sock} <= 100)) || die "$sock is too long for a unix socket; set APPSTACK_CLUSTER_DIR to a shorter path"
}

# The real node's namespaces and network: a free slot; a process holding a
# new network and mount namespace for the node (so the namespaces need no
# file on the host and vanish with the node's last process); the veth pair,
# the addresses and the host's routes to the node's pods and Services. Writes
# $STATE/real-node.env.
real_node_network() {
  local fd slot=""
  # A slot is taken while its host link exists; the lock covers the moment
  # between choosing a slot and making its link.
  exec {fd}>"$REAL_NODE_LOCK"
  flock "$fd"
  for s in $(seq 1 63); do
    if ! ip link show "appstack$s" >/dev/null 2>&1 &&
      ! ip -4 addr show | grep -q "inet 198\.19\.255\.$((4 * s + 1))/"; then
      slot=$s
      break
    fi
  done
  [[ -n "$slot" ]] || { exec {fd}>&-; die "no free real-node slot (63 real nodes run on this machine)"; }
  cat >"$STATE/real-node.env" <<ENV
SLOT=$slot
HOST_IF=appstack$slot
HOST_IP=198.19.255.$((4 * slot + 1))
NODE_IP=198.19.255.$((4 * slot + 2))
POD_CIDR=198.18.$slot.0/24
POD_GATEWAY=198.18.$slot.1
SERVICE_CIDR=198.19.$slot.0/24
FIRST_SERVICE_IP=198.19.$slot.1
NODE_NAME=$REAL_NODE_NAME
CGROUP_ROOT=appstack-node-$slot
CNI_NETWORK=appstack-node-$slot
CONTAINERD_SOCKET=$STATE/node/containerd.sock
ENV
  load_real_node
  real_node_namespaces
  # The node's end is its eth0. Neither end gets an IPv6 address: nothing but
  # loopback and 198.18.0.0/15 is ever bound.
  ip link add "$HOST_IF" type veth peer name eth0 netns "$(cat "$STATE/node-namespace.pid")"
  exec {fd}>&-
  echo 1 >"/proc/sys/net/ipv6/conf/$HOST_IF/disable_ipv6"
  ip addr add "$HOST_IP/30" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  in_node_net sh -ec '
    echo 1 >/proc/sys/net/ipv6/conf/all/disable_ipv6
    echo 1 >/proc/sys/net/ipv6/conf/default/disable_ipv6
    echo 1 >/proc/sys/net/ipv4/ip_forward
    echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables'
  in_node_net ip link set lo up
  in_node_net ip addr add "$NODE_IP/30" dev eth0
  in_node_net ip link set eth0 up
  # Locally made packets to a Service need a route before kube-proxy's DNAT
  # picks the pod.
  in_node_net ip route add "$SERVICE_CIDR" dev eth0
  # The host reaches pods and Services through the node. Both routes go with
  # the veth when the namespace goes.
  ip route add "$POD_CIDR" via "$NODE_IP" dev "$HOST_IF"
  ip route add "$SERVICE_CIDR" via "$NODE_IP" dev "$HOST_IF"
}

# The process that holds the node's network and mount namespaces, which every
# program of the node joins. Its mount namespace has a tmpfs on /run (the
# runtime's sockets, runc's state, the iptables lock), the state's log dir on
# /var/log (kubelet's /var/log/pods and /var/log/containers) and the kernel
# tunables kubelet checks.
real_node_namespaces() {
  local node="$STATE/node"
  mkdir -p "$node"/{log,sysctl}
  local masks=""
  for entry in "${REAL_NODE_SYSCTLS[@]}"; do
    local key="${entry%%=*}"
    local file="$node/sysctl/${key//\//.}"
    echo "${entry#*=}" >"$file"
    masks+="mount --bind '$file' '/proc/sys/$key'
"
  done
  rm -f "$node/namespace.ready"
  start node-namespace unshare --net --mount --propagation private -- sh -ec "
mount -t tmpfs -o mode=0755 appstack-node-run /run
mount --bind '$node/log' /var/log
$masks
touch '$node/namespace.ready'
exec sleep infinity"
  wait_for "the node's namespaces" 10 test -e "$node/namespace.ready"
  local holder; holder="$(cat "$STATE/node-namespace.pid")"
  readlink "/proc/$holder/ns/mnt" >"$node/mount-namespace"
  readlink "/proc/$holder/ns/net" >"$node/network-namespace"
}

# Runs a command in the node's network namespace only (the host's files).
in_node_net() { nsenter --target "$(cat "$STATE/node-namespace.pid")" --net -- "$@"; }

# Runs a command in the node's network and mount namespaces.
in_node() { nsenter --target "$(cat "$STATE/node-namespace.pid")" --mount --net -- "$@"; }
# The same as a command line, for start.
node_enter() { NODE_ENTER=(nsenter --target "$(cat "$STATE/node-namespace.pid")" --mount --net --); }

# The node's certificates: kubelet's client (system:node:<name>) and serving
# certificate (the API server verifies it for logs and exec), the API server's
# client for kubelet, and the identities of kube-proxy, CoreDNS and
# kube-router.
real_node_pki() {
  # P-256 keys: made in a millisecond where RSA takes most of a second on a
  # busy machine, and every client here (Go, rustls) takes them.
  # shellcheck disable=SC2034 # read by sign_cert
  local CERT_KEY_ARGS=(-newkey ec -pkeyopt ec_paramgen_curve:prime256v1)
  sign_cert kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$CLIENT_EXT"
  sign_cert kubelet-serving "/CN=$NODE_NAME" "basicConstraints=CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=serverAuth
subjectAltName=IP:$NODE_IP,DNS:$NODE_NAME"
  sign_cert apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$CLIENT_EXT"
  sign_cert kube-proxy "/CN=system:kube-proxy" "$CLIENT_EXT"
  sign_cert coredns "/CN=appstack:coredns" "$CLIENT_EXT"
  sign_cert kube-router "/CN=appstack:kube-router" "$CLIENT_EXT"
  for c in kubelet kube-proxy coredns kube-router; do write_kubeconfig "$c" "$c"; done
}

# The API server's flags that differ on a real node, in REAL_NODE_APISERVER_ARGS:
# kubelet is authorized as a node, and the API server reaches it (logs, exec)
# at its InternalIP, verifying its certificate.
real_node_apiserver_args() {
  # shellcheck disable=SC2034,SC2054 # read by cluster.sh; Node,RBAC is one value
  REAL_NODE_APISERVER_ARGS=(
    --authorization-mode Node,RBAC --enable-admission-plugins NodeRestriction
    --kubelet-certificate-authority "$STATE/pki/ca.crt"
    --kubelet-client-certificate "$STATE/pki/apiserver-kubelet-client.crt"
    --kubelet-client-key "$STATE/pki/apiserver-kubelet-client.key"
    --kubelet-preferred-address-types InternalIP
  )
}

# containerd, in the node's namespaces, with its CNI configuration.
real_node_start_runtime() {
  local node="$STATE/node"
  mkdir -p "$node"/{containerd,cni/net.d,ipam,kubelet,volumes}
  cat >"$node/containerd.toml" <<TOML
version = 2
root = "$node/containerd/root"
state = "$node/containerd/state"
disabled_plugins = [
  "io.containerd.internal.v1.opt", "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs", "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs", "io.containerd.tracing.processor.v1.otlp",
]

[grpc]
  address = "$CONTAINERD_SOCKET"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "appstack.test/pause:1"
  # oom_score_adj cannot be lowered on this machine; without this the pause
  # container (-998) fails to start.
  restrict_oom_score_adj = true
  netns_mounts_under_state_dir = true
  stream_server_address = "127.0.0.1"
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "$node/cni/net.d"
    max_conf_num = 1
TOML

  # bridge + host-local give each pod an address in the node's pod range and a
  # default route to the bridge, which is where every packet for anything
  # outside the cluster dies; portmap serves hostPort. containerd brings up
  # each pod's loopback itself (the loopback plugin).
  cat >"$node/cni/net.d/10-appstack.conflist" <<CNI
{
  "cniVersion": "1.0.0",
  "name": "$CNI_NETWORK",
  "plugins": [
    {
      "type": "bridge",
      "bridge": "cni0",
      "isGateway": true,
      "ipMasq": false,
      "hairpinMode": true,
      "ipam": {
        "type": "host-local",
        "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$POD_GATEWAY"}]],
        "routes": [{"dst": "0.0.0.0/0"}],
        "dataDir": "$node/ipam"
      }
    },
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
CNI
  [[ -d /var/lib/cni ]] || touch "$node/created-var-lib-cni"
  node_enter
  start containerd "${NODE_ENTER[@]}" containerd --config "$node/containerd.toml"
}

containerd_ready() { ctr --address "$CONTAINERD_SOCKET" version >/dev/null 2>&1; }

# kubelet's cgroup root, made in every v1 hierarchy it uses (cpuset needs
# its CPUs and memory nodes before a task may join a child).
real_node_cgroups() {
  for h in /sys/fs/cgroup/*/; do
    [[ -f "$h/cgroup.procs" ]] || continue
    [[ "$(basename "$h")" == unified ]] && continue
    mkdir -p "$h$CGROUP_ROOT"
    if [[ -f "$h/cpuset.cpus" ]]; then
      cat "$h/cpuset.cpus" >"$h$CGROUP_ROOT/cpuset.cpus"
      cat "$h/cpuset.mems" >"$h$CGROUP_ROOT/cpuset.mems"
    fi
  done
}

real_node_start() {
  local node="$STATE/node"
  real_node_cgroups
  node_enter
  # The only resolver pods (and pods with dnsPolicy Default) are given.
  echo "nameserver $NODE_IP" >"$node/resolv.conf"
  cat >"$node/kubelet.yaml" <<KUBELET
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
failCgroupV1: false
cgroupDriver: cgroupfs
cgroupRoot: /$CGROUP_ROOT
failSwapOn: false
# Lowering oom_score_adj is refused here.
oomScoreAdj: 0
containerRuntimeEndpoint: unix://$CONTAINERD_SOCKET
address: $NODE_IP
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
tlsCertFile: $STATE/pki/kubelet-serving.crt
tlsPrivateKeyFile: $STATE/pki/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $STATE/pki/ca.crt}
authorization:
  mode: Webhook
clusterDomain: cluster.local
clusterDNS: [$NODE_IP]
resolvConf: $node/resolv.conf
# Test pods are never evicted for the shared disk filling up.
evictionHard: {memory.available: 100Mi, nodefs.available: 1%, imagefs.available: 1%, nodefs.inodesFree: 1%}
# The images were imported, not pulled: never collect them.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 99
KUBELET
  start kubelet "${NODE_ENTER[@]}" "$BIN/kubelet" --config "$node/kubelet.yaml" \
    --kubeconfig "$STATE/kubelet.kubeconfig" --root-dir "$node/kubelet" \
    --hostname-override "$NODE_NAME" --node-ip "$NODE_IP"

  cat >"$node/kube-proxy.yaml" <<PROXY
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
mode: iptables
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
bindAddress: $NODE_IP
clusterCIDR: $POD_CIDR
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
nodePortAddresses: [$NODE_IP/32]
oomScoreAdj: 0
# nf_conntrack_max is host-wide: leave it as it is.
conntrack: {maxPerCore: 0, min: 0}
iptables: {localhostNodePorts: false}
PROXY
  start kube-proxy "${NODE_ENTER[@]}" "$BIN/kube-proxy" --config "$node/kube-proxy.yaml"

  local pod_zone service_zone
  pod_zone="$(echo "$POD_CIDR" | awk -F. '{print $3"."$2"."$1".in-addr.arpa"}')"
  service_zone="$(echo "$SERVICE_CIDR" | awk -F. '{print $3"."$2"."$1".in-addr.arpa"}')"
  cat >"$node/Corefile" <<COREFILE
cluster.local:53 $pod_zone:53 $service_zone:53 {
    bind $NODE_IP
    errors
    kubernetes cluster.local $pod_zone $service_zone {
        kubeconfig $STATE/coredns.kubeconfig appstack-local
        pods insecure
        ttl 5
    }
    cache 5
    ready 127.0.0.1:8181
}
COREFILE
  start coredns "${NODE_ENTER[@]}" "$NODE_BIN/coredns" -conf "$node/Corefile"

}

# kube-router exits at start unless its node is registered: it starts once
# kubelet has registered the node.
real_node_start_policies() {
  node_enter
  start kube-router "${NODE_ENTER[@]}" "$NODE_BIN/kube-router" --kubeconfig "$STATE/kube-router.kubeconfig" \
    --hostname-override "$NODE_NAME" --run-firewall=true --run-router=false \
    --run-service-proxy=false --enable-cni=false --enable-ipv6=false \
    --service-cluster-ip-range "$SERVICE_CIDR" --health-port 0 --metrics-port 0
}

# What the node's programs may read, the default StorageClass and its local
# PersistentVolumes.
real_node_objects() {
  {
    cat <<RBAC
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "appstack:node-addons"}
rules:
- apiGroups: [""]
  resources: [pods, namespaces, services, endpoints, nodes]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [get, list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "appstack:node-addons"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "appstack:node-addons"}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "appstack:coredns"}
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: "appstack:kube-router"}
---
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata:
  name: local
  annotations: {storageclass.kubernetes.io/is-default-class: "true"}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
---
RBAC
    for i in $(seq -w 1 "$REAL_NODE_VOLUMES"); do
      mkdir -p "$STATE/node/volumes/pv-$i"
      cat <<PV
apiVersion: v1
kind: PersistentVolume
metadata: {name: local-pv-$i}
spec:
  capacity: {storage: 100Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: local
  local: {path: $STATE/node/volumes/pv-$i}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions:
        - {key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}
---
PV
    done
  } | kubectl_ apply -f - >/dev/null
}

node_ready() {
  [[ "$(kubectl_ get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' 2>/dev/null)" == True ]]
}
coredns_ready() { in_node_net curl -fsS --max-time 1 http://127.0.0.1:8181/ready >/dev/null 2>&1; }
kube_proxy_ready() { in_node_net curl -fsS --max-time 1 http://127.0.0.1:10256/healthz >/dev/null 2>&1; }
kube_router_ready() { in_node iptables -n -L KUBE-ROUTER-FORWARD >/dev/null 2>&1; }

real_node_wait() {
  wait_for "the real node Ready" 90 node_ready
  real_node_start_policies
  wait_for "kube-proxy's first sync" 60 kube_proxy_ready
  wait_for "CoreDNS" 60 coredns_ready
  wait_for "kube-router's policy chains" 60 kube_router_ready
}

real_node_running() {
  for c in "${NODE_COMPONENTS[@]}"; do pid_alive "$c" || return 1; done
}

# Processes of the node: those in its namespaces (the daemons and the
# containerd shims) and those in its pod cgroups (the containers).
real_node_pids() {
  local mnt="" net=""
  [[ -f "$STATE/node/mount-namespace" ]] && mnt="$(cat "$STATE/node/mount-namespace")"
  [[ -f "$STATE/node/network-namespace" ]] && net="$(cat "$STATE/node/network-namespace")"
  local links=()
  # A namespace link reads like mnt:[4026532345]; -lname takes a pattern.
  [[ -n "$mnt" ]] && links+=(-name mnt -lname "${mnt//[/\\[}")
  [[ -n "$mnt" && -n "$net" ]] && links+=(-o)
  [[ -n "$net" ]] && links+=(-name net -lname "${net//[/\\[}")
  if ((${#links[@]})); then
    find /proc/[0-9]*/ns -maxdepth 1 \( "${links[@]}" \) 2>/dev/null | cut -d/ -f3
  fi
  if [[ -n "${CGROUP_ROOT:-}" && -d /sys/fs/cgroup/pids/$CGROUP_ROOT ]]; then
    find "/sys/fs/cgroup/pids/$CGROUP_ROOT" -name cgroup.procs -exec cat {} + 2>/dev/null
  fi
}

# Deletes every pod and waits until kubelet has stopped their sandboxes, so
# CNI releases their addresses and network namespaces. Runs only with the API
# server, kubelet and containerd alive, after the controllers and scheduler
# stopped (nothing makes new pods).
real_node_drain() {
  kubectl_ delete pods --all --all-namespaces --force --grace-period=0 --wait=false >/dev/null 2>&1 || true
  local netns_dir="$STATE/node/containerd/state/io.containerd.grpc.v1.cri/netns"
  local deadline=$((SECONDS + 30))
  while ((SECONDS < deadline)); do
    if [[ -z "$(ctr --address "$CONTAINERD_SOCKET" -n k8s.io tasks ls -q 2>/dev/null)" &&
      -z "$(ls -A "$netns_dir" 2>/dev/null)" ]]; then
      return 0
    fi
    sleep 0.2
  done
  log "pods still running after 30 s; stopping them by force"
}

# Whether a process runs: a zombie has exited. (This machine's init reaps
# orphans a second or two late, and kill -0 still finds them until then.)
running() {
  local stat
  stat="$(cat "/proc/$1/stat" 2>/dev/null)" || return 1
  stat="${stat##*) }"
  [[ "${stat%% *}" != Z ]]
}

stop_pids() { # stop_pids <seconds> <pid...>: TERM all, then KILL what is left after the grace
  local grace="$1"; shift
  (($# == 0)) && return 0
  kill "$@" 2>/dev/null || true
  local deadline=$((SECONDS + grace))
  for pid in "$@"; do
    while running "$pid"; do
      if ((SECONDS >= deadline)); then kill -9 "$pid" 2>/dev/null || true; fi
      sleep 0.05
    done
  done
}

stop_components() { # stop_components <seconds> <name...>: those running, together
  local grace="$1" pids=(); shift
  for c in "$@"; do pid_alive "$c" && pids+=("$(cat "$STATE/$c.pid")"); done
  stop_pids "$grace" "${pids[@]}"
}

# Stops the node's pods and programs, while the API server still runs.
real_node_stop() {
  load_real_node
  if pid_alive kubelet && containerd_ready && apiserver_ready; then
    real_node_drain
  fi
  stop_components 10 kube-router coredns kube-proxy kubelet
  stop_components 10 containerd
}

# Removes all the node made on the host, after the API server stopped (its
# address goes with the node's link). Safe on a partly started node: each step
# checks what exists.
real_node_remove() {
  load_real_node
  # Whatever is left in the node's namespaces or pod cgroups: shims,
  # containers, the namespace holder.
  local left
  for _ in 1 2 3; do
    mapfile -t left < <(real_node_pids | sort -u)
    ((${#left[@]} == 0)) && break
    stop_pids 5 "${left[@]}"
  done
  # With its last process the node's network namespace goes, and with it the
  # bridge, the veths, every iptables chain and ipset, and the host's routes
  # through the veth. The kernel does that a moment later.
  local deadline=$((SECONDS + 10))
  while ip link show "$HOST_IF" >/dev/null 2>&1 && ((SECONDS < deadline)); do sleep 0.1; done
  ip link delete "$HOST_IF" 2>/dev/null || true
  for h in /sys/fs/cgroup/*/; do
    [[ -d "$h$CGROUP_ROOT" ]] || continue
    find "$h$CGROUP_ROOT" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  # libcni's result cache lives in /var/lib/cni whatever the config says:
  # CNI DEL empties it; a forced stop may leave this network's entries.
  rm -f /var/lib/cni/results/"$CNI_NETWORK"-* 2>/dev/null || true
  if [[ -f "$STATE/node/created-var-lib-cni" ]]; then
    rmdir /var/lib/cni/results /var/lib/cni 2>/dev/null || true
  fi
  # A mount under the state directory in the host's namespace would mean rm -rf
  # reaches through it; none should exist, since the node mounted only in its
  # own namespace.
  local mounts
  mounts="$(awk -v s="$STATE/" 'index($5, s) == 1 {print $5}' /proc/self/mountinfo)"
  if [[ -n "$mounts" ]]; then
    echo "$mounts" | sort -r | while read -r m; do umount -l "$m" || true; done
  fi
}

real_node_status() {
  load_real_node
  local healthy=0
  for c in "${NODE_COMPONENTS[@]}"; do
    if pid_alive "$c"; then echo "$c: running (pid $(cat "$STATE/$c.pid"))"; else echo "$c: stopped"; healthy=1; fi
  done
  if node_ready; then echo "node $NODE_NAME: Ready at $NODE_IP"; else echo "node $NODE_NAME: not ready"; healthy=1; fi
  echo "node address: $NODE_IP (pods $POD_CIDR, Services $SERVICE_CIDR, host link $HOST_IF)"
  echo "containerd socket: $CONTAINERD_SOCKET"
  return $healthy
}

# After the control plane is up: KWOK told to leave the real node alone, the
# sandbox image, the node's programs, its objects, and every wait.
real_node_up() {
  local stage_args=()
  for f in node-initialize node-heartbeat pod-ready pod-complete pod-delete pod-container-running-failed; do
    stage_args+=(--config "$BIN/stages/$f.yaml")
  done
  start kwok "$BIN/kwok" --kubeconfig "$STATE/admin.kubeconfig" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --server-address "127.0.0.1:$KWOK_PORT" --cidr 198.18.255.0/24 "${stage_args[@]}"
  wait_for "containerd" 30 containerd_ready
  "$ROOT/scripts/images.sh" --import "$CONTAINERD_SOCKET" pause
  # The programs' rights first, so none of them starts by being refused.
  real_node_objects
  real_node_start
  real_node_wait
  wait_for "the default service account" 60 default_service_account
}
