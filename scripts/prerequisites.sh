#!/usr/bin/env bash
# Installs what the test suite needs and a fresh machine lacks: openssl,
# curl, mmdebstrap, the PostgreSQL server binaries, Lua 5.1, the real node's
# runtime (containerd, runc, CNI plugins, iptables, ipset), rustfmt and
# clippy, and checkov. System packages come from apt (as root); checkov goes
# into a venv of its own under the tool cache. Run by scripts/test.sh; does
# nothing when everything is there.
set -euo pipefail
command -v openssl >/dev/null || { apt-get update -qq && apt-get install -y -qq openssl; }
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
# PostgreSQL server binaries: the database tests start throwaway servers of
# their own, so the package must not create (and start) a cluster.
if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  mkdir -p /etc/postgresql-common
  echo 'create_main_cluster = false' >/etc/postgresql-common/createcluster.conf
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get install -y -qq \
    -o Dpkg::Options::=--force-confold postgresql </dev/null
fi
# mmdebstrap builds the test images from Debian's packages (scripts/images.sh).
command -v mmdebstrap >/dev/null || { apt-get update -qq && apt-get install -y -qq mmdebstrap; }
# Lua 5.1, the dialect Argo CD embeds, runs the AppStack health check.
command -v lua5.1 >/dev/null || { apt-get update -qq && apt-get install -y -qq lua5.1; }
# The real node (scripts/cluster.sh up --real-node): Debian's containerd, runc
# and CNI plugins, iptables for kube-proxy, ipset for kube-router's policies.
# Installing must start nothing: the script runs containerd with a config of
# its own, in the node's namespaces, and no service manager runs here anyway.
real_node_packages=()
command -v containerd >/dev/null || real_node_packages+=(containerd)
command -v runc >/dev/null || real_node_packages+=(runc)
[ -x /usr/lib/cni/bridge ] || real_node_packages+=(containernetworking-plugins)
command -v iptables >/dev/null || real_node_packages+=(iptables)
command -v ipset >/dev/null || real_node_packages+=(ipset)
if [ "${#real_node_packages[@]}" -gt 0 ]; then
  no_start=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod +x /usr/sbin/policy-rc.d
    no_start=1
  fi
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    "${real_node_packages[@]}" </dev/null
  [ -z "$no_start" ] || rm -f /usr/sbin/policy-rc.d
fi
rustup component add rustfmt clippy >/dev/null 2>&1 || true
# checkov (scripts/checkov.sh), pinned so a new release's checks change nothing
# unannounced; in a venv of its own under the tool cache.
CHECKOV_HOME="${APPSTACK_CACHE_DIR:-$HOME/.cache/appstack-operator}/checkov"
if ! command -v checkov >/dev/null && [ ! -x "$CHECKOV_HOME/bin/checkov" ]; then
  python3 -c 'import ensurepip' 2>/dev/null || { apt-get update -qq && apt-get install -y -qq python3 python3-venv; }
  python3 -m venv "$CHECKOV_HOME"
  "$CHECKOV_HOME/bin/pip" install --quiet checkov==3.3.30
fi
