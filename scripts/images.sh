#!/usr/bin/env bash
# Builds the project's test images from Debian's packages, without a Docker
# engine or a registry, as OCI image archives that containerd imports.
#
#   scripts/images.sh [--import <containerd socket>] [names...]
#
# Builds the named images (all when none are named) and prints the path of
# each one's archive, one a line, in the order asked. With --import, each
# archive is then imported into the k8s.io namespace of the containerd at
# that socket (`ctr --address <socket> -n k8s.io images import`), where the
# kubelet finds it. Names and the images they build:
#
#   pause          appstack.test/pause:1           the pod sandbox (catatonit -P)
#   postgres       appstack.test/postgres:15       Debian's postgresql-15
#   seed-backend   appstack.test/seed-backend:1, :2, :broken, :2-contract
#   seed-frontend  appstack.test/seed-frontend:1   a page that shows REACT_APP_API_URL
#   operator       appstack.test/operator:dev      target/release/appstack
#
# The seed app's source is tests/fixtures/seed-app/; docs/src/reference/
# images.md says what each image holds and expects.
#
# How: mmdebstrap (run as root) installs Debian bookworm's packages into a
# directory; the script trims it (no docs, no apt lists), packs it as one
# gzip'd layer and writes an OCI image layout (layers, config, manifest, and
# an index naming the image with `io.containerd.image.name` and
# `org.opencontainers.image.ref.name`) as a tar. The operator image runs
# `cargo build --release --locked --bin appstack` first (a no-op when the
# binary is fresh; cargo's own variables, such as CARGO_BUILD_JOBS, apply).
#
# Cache, under ${APPSTACK_CACHE_DIR:-~/.cache/appstack-operator}/images/:
#   debs/     the downloaded .deb files, so a rebuild downloads nothing new
#   layers/   each layer, named by a key: a hash of the code that builds it
#             (this script's functions) and what goes in (the package list,
#             the app's source files, the operator binary)
#   *.tar     the archives, named by image, tag and manifest digest
# A second run with nothing changed builds nothing and takes seconds.
# Debian's archive moves on (security updates): to rebuild from today's
# packages, delete the cache directory.
#
# Environment: APPSTACK_DEBIAN_MIRROR and APPSTACK_DEBIAN_SECURITY_MIRROR
# (the Debian mirrors, deb.debian.org by default).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SCRIPT="$ROOT/scripts/images.sh"
CACHE="${APPSTACK_CACHE_DIR:-$HOME/.cache/appstack-operator}/images"
SUITE=bookworm
MIRROR="${APPSTACK_DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SECURITY_MIRROR="${APPSTACK_DEBIAN_SECURITY_MIRROR:-http://deb.debian.org/debian-security}"
SEED_APP="$ROOT/tests/fixtures/seed-app"
# Every image is named under appstack.test, a name that never resolves: a
# node missing an image fails at once instead of reaching out.
REGISTRY=appstack.test

log() { echo "images: $*" >&2; }
die() { log "$*"; exit 1; }

usage() {
  sed -n '2,/^set -euo/p' "$SCRIPT" | sed -e '$d' -e 's/^# \{0,1\}//' >&2
  exit "${1:-2}"
}

# ---------------------------------------------------------------------------
# Keys, layers and archives

# A key for `inputs...`: the hash of the named functions' code and of the
# inputs (words, and the content of the files among them). Changing either
# changes the key; changing an unrelated part of the script does not.
key_of() {
  local functions=$1
  shift
  {
    local function
    for function in $functions; do declare -f "$function"; done
    local input
    for input in "$@"; do
      if [[ -f "$input" ]]; then
        printf 'file %s ' "${input#"$ROOT"/}"
        sha256sum <"$input"
      else
        printf 'word %s\n' "$input"
      fi
    done
  } | sha256sum | cut -c1-32
}

# Every file under `dirs...`, sorted, as inputs for key_of.
files_under() {
  find "$@" -type f | LC_ALL=C sort
}

# Packs directory `dir` as layer `out` (a gzip'd tar) and writes the layer's
# diff ID (the digest of the uncompressed tar) to `out.diffid`. Entries are
# sorted and carry numeric owners, so the same tree packs the same way.
pack_layer() {
  local dir=$1 out=$2
  local entries
  mapfile -t entries < <(cd "$dir" && LC_ALL=C ls -A)
  tar --create --sort=name --numeric-owner --format=posix \
    --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
    --directory "$dir" -- "${entries[@]}" >"$out.tar.tmp"
  sha256sum <"$out.tar.tmp" | cut -d' ' -f1 >"$out.diffid.tmp"
  gzip -n -6 <"$out.tar.tmp" >"$out.tmp"
  rm "$out.tar.tmp"
  mv "$out.diffid.tmp" "$out.diffid"
  mv "$out.tmp" "$out"
}

json_string() {
  local value=${1//\\/\\\\}
  printf '"%s"' "${value//\"/\\\"}"
}

json_array() {
  local first=1 item
  printf '['
  for item; do
    ((first)) || printf ','
    first=0
    json_string "$item"
  done
  printf ']'
}

# Writes a blob holding stdin into layout `dir`; prints its digest and size.
write_blob() {
  local dir=$1 tmp
  tmp="$(mktemp "$dir/blob.XXXXXX")"
  cat >"$tmp"
  local digest size
  digest=$(sha256sum <"$tmp" | cut -d' ' -f1)
  size=$(stat -c %s "$tmp")
  mv "$tmp" "$dir/blobs/sha256/$digest"
  echo "sha256:$digest $size"
}

# image NAME TAG CONFIG LAYER...: the OCI archive of image
# $REGISTRY/NAME:TAG, with CONFIG (the image config's "config" object, as
# JSON) and the layers (bottom first); prints its path. The archive is named
# by the manifest's digest, so an unchanged image is found, not rewritten.
image() {
  local name=$1 tag=$2 config=$3
  shift 3
  local reference="$REGISTRY/$name:$tag"
  local work
  work="$(mktemp -d "$CACHE/tmp/layout.XXXXXX")"
  mkdir -p "$work/blobs/sha256"
  local layer digest size layers="" diff_ids="" history=""
  for layer; do
    digest=$(sha256sum <"$layer" | cut -d' ' -f1)
    size=$(stat -c %s "$layer")
    ln -f "$layer" "$work/blobs/sha256/$digest" 2>/dev/null || cp "$layer" "$work/blobs/sha256/$digest"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$digest\",\"size\":$size}"
    diff_ids+="${diff_ids:+,}\"sha256:$(cat "$layer.diffid")\""
    history+="${history:+,}{\"created_by\":\"scripts/images.sh: $(basename "$layer")\"}"
  done
  local config_blob manifest_blob
  config_blob=$(printf '{"architecture":"%s","os":"linux","config":%s,"rootfs":{"type":"layers","diff_ids":[%s]},"history":[%s]}' \
    "$ARCH" "$config" "$diff_ids" "$history" | write_blob "$work")
  manifest_blob=$(printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"%s","size":%s},"layers":[%s]}' \
    "${config_blob% *}" "${config_blob#* }" "$layers" | write_blob "$work")
  local manifest_digest=${manifest_blob% *}
  local archive="$CACHE/$name-$tag.${manifest_digest:7:16}.tar"
  if [[ ! -f "$archive" ]]; then
    printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json","manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"%s","size":%s,"platform":{"architecture":"%s","os":"linux"},"annotations":{"io.containerd.image.name":"%s","org.opencontainers.image.ref.name":"%s"}}]}' \
      "$manifest_digest" "${manifest_blob#* }" "$ARCH" "$reference" "$tag" >"$work/index.json"
    printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci-layout"
    tar --create --sort=name --owner=0 --group=0 --numeric-owner --mtime=@0 --format=posix \
      --pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime \
      --directory "$work" --file "$archive.tmp" oci-layout index.json blobs
    mv "$archive.tmp" "$archive"
    log "built $reference: $archive ($(du -h "$archive" | cut -f1))"
    # Older archives of the same image are stale: keep the cache to one.
    find "$CACHE" -maxdepth 1 -name "$name-$tag.*.tar" ! -path "$archive" -delete
  fi
  rm -rf "$work"
  echo "$archive"
}

# The image config's "config" object. Arguments are KEY=VALUE with KEY one
# of user, workdir, stopsignal, port, env (repeatable), entrypoint and cmd
# (space-separated words).
image_config() {
  local user="" workdir="" stopsignal="" entrypoint="" cmd="" ports="" env=()
  local setting
  for setting; do
    case $setting in
      user=*) user=${setting#*=} ;;
      workdir=*) workdir=${setting#*=} ;;
      stopsignal=*) stopsignal=${setting#*=} ;;
      port=*) ports+="${ports:+,}\"${setting#*=}/tcp\":{}" ;;
      env=*) env+=("${setting#*=}") ;;
      entrypoint=*) entrypoint=${setting#*=} ;;
      cmd=*) cmd=${setting#*=} ;;
      *) die "unknown image setting $setting" ;;
    esac
  done
  local words
  printf '{"User":%s' "$(json_string "$user")"
  printf ',"Env":%s' "$(json_array "${env[@]}")"
  read -ra words <<<"$entrypoint"
  printf ',"Entrypoint":%s' "$(json_array "${words[@]}")"
  if [[ -n "$cmd" ]]; then
    read -ra words <<<"$cmd"
    printf ',"Cmd":%s' "$(json_array "${words[@]}")"
  fi
  [[ -z "$workdir" ]] || printf ',"WorkingDir":%s' "$(json_string "$workdir")"
  [[ -z "$ports" ]] || printf ',"ExposedPorts":{%s}' "$ports"
  [[ -z "$stopsignal" ]] || printf ',"StopSignal":%s' "$(json_string "$stopsignal")"
  printf '}'
}

# ---------------------------------------------------------------------------
# Debian root filesystems

# debian_rootfs DIR PACKAGES [mmdebstrap options...]: Debian's essential
# set plus PACKAGES (comma-separated, no recommends) installed into DIR,
# then trimmed of what no container reads: docs (copyright files stay),
# man pages, translations, apt's lists and caches, logs.
debian_rootfs() {
  local dir=$1 packages=$2
  shift 2
  mkdir -p "$CACHE/debs"
  mmdebstrap --quiet --mode=root --variant=essential --architectures="$ARCH" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --skip=essential/unlink \
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
    --setup-hook="sync-in $CACHE/debs /var/cache/apt/archives/" \
    --customize-hook="sync-out /var/cache/apt/archives $CACHE/debs" \
    --include="$packages" "$@" \
    "$SUITE" "$dir" \
    "deb $MIRROR $SUITE main" "deb $MIRROR $SUITE-updates main" \
    "deb $SECURITY_MIRROR $SUITE-security main"
  # The essential packages were unpacked before the path filters applied.
  find "$dir/usr/share/doc" -mindepth 1 ! -type d ! -name copyright -delete
  find "$dir/usr/share/doc" -mindepth 1 -type d -empty -delete
  rm -rf "$dir"/usr/share/{man,info,locale,lintian}/* \
    "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/* "$dir"/var/cache/debconf/*-old \
    "$dir"/var/cache/ldconfig/aux-cache "$dir"/var/log/* "$dir"/etc/machine-id
}

# debian_layer NAME PACKAGES BUILDER: the cached base layer NAME holding
# Debian's essential set plus PACKAGES, shaped by the function BUILDER
# (called with the root directory after the install); prints its path.
debian_layer() {
  local name=$1 packages=$2 builder=$3
  local key
  key=$(key_of "debian_rootfs debian_layer pack_layer $builder" \
    "$SUITE" "$ARCH" "$packages")
  local layer="$CACHE/layers/$name-$key.tar.gz"
  if [[ ! -f "$layer" ]]; then
    log "building the $name root filesystem (Debian $SUITE: $packages)"
    local dir="$CACHE/tmp/$name-rootfs"
    rm -rf "$dir"
    "$builder" "$dir" "$packages"
    pack_layer "$dir" "$layer"
    rm -rf "$dir"
  fi
  echo "$layer"
}

# directory_layer NAME FUNCTIONS INPUTS... -- BUILDER: a cached layer from
# a directory BUILDER fills (called with the directory); its key covers
# FUNCTIONS' code and INPUTS.
directory_layer() {
  local name=$1 functions=$2
  shift 2
  local inputs=()
  while [[ $1 != -- ]]; do inputs+=("$1"); shift; done
  local builder=$2
  local key
  key=$(key_of "directory_layer pack_layer $builder $functions" "${inputs[@]}")
  local layer="$CACHE/layers/$name-$key.tar.gz"
  if [[ ! -f "$layer" ]]; then
    local dir="$CACHE/tmp/$name-layer"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$builder" "$dir"
    pack_layer "$dir" "$layer"
    rm -rf "$dir"
  fi
  echo "$layer"
}

# ---------------------------------------------------------------------------
# The small images: pause and operator, cut out of one Debian install

SMALL_PACKAGES=ca-certificates,catatonit

small_rootfs() {
  debian_rootfs "$1" "$2"
}

small_layer() {
  debian_layer small "$SMALL_PACKAGES" small_rootfs
}

# Copies `paths...` (relative to root directory `from`) into `to`, keeping
# modes, owners and symlinks.
copy_paths() {
  local from=$1 to=$2
  shift 2
  (cd "$from" && tar --create --no-recursion --null --files-from=<(printf '%s\0' "$@")) |
    tar --extract --directory "$to" --same-owner --preserve-permissions
}

# The files dpkg installed for `packages...` in root directory `from`,
# relative to it, parent directories included, diverted and missing ones not.
package_files() {
  local from=$1
  shift
  local package path
  for package; do
    while read -r path; do
      [[ -e "$from$path" || -L "$from$path" ]] && printf '%s\n' "${path#/}"
    done <"$from/var/lib/dpkg/info/$package.list"
  done | LC_ALL=C sort -u
}

# Unpacks the small base layer into `dir` (for cutting images out of it).
unpack_small() {
  mkdir -p "$1"
  tar --extract --gzip --file "$(small_layer)" --directory "$1" --same-owner --preserve-permissions
}

pause_files() {
  local dir=$1 base="$CACHE/tmp/small-unpacked"
  rm -rf "$base"
  unpack_small "$base"
  local files
  mapfile -t files < <(package_files "$base" catatonit)
  copy_paths "$base" "$dir" "${files[@]}"
  rm -rf "$base"
}

# appstack.test/pause:1: catatonit (static, from Debian) in pause mode. As
# PID 1 of the pod it reaps orphans; it exits at once on SIGTERM or SIGINT.
# Nothing else in the image: no shell, no libc.
build_pause() {
  local layer
  layer=$(directory_layer pause "unpack_small small_layer small_rootfs package_files copy_paths" \
    "$SMALL_PACKAGES" -- pause_files)
  image pause 1 "$(image_config user=65535:65535 entrypoint='/usr/bin/catatonit -P')" "$layer"
}

# ---------------------------------------------------------------------------

want() {
  local name
  for name in "${NAMES[@]}"; do [[ "$name" == "$1" ]] && return 0; done
  return 1
}

main() {
  local socket=""
  NAMES=()
  while (($#)); do
    case $1 in
      --import)
        [[ $# -ge 2 ]] || usage
        socket=$2
        shift 2
        ;;
      -h | --help) usage 0 ;;
      -*) usage ;;
      *)
        NAMES+=("$1")
        shift
        ;;
    esac
  done
  local all=(pause postgres seed-backend seed-frontend operator)
  ((${#NAMES[@]})) || NAMES=("${all[@]}")
  local name
  for name in "${NAMES[@]}"; do
    [[ " ${all[*]} " == *" $name "* ]] || die "unknown image $name (known: ${all[*]})"
  done
  [[ $(id -u) == 0 ]] || die "run as root: mmdebstrap installs packages into a chroot"
  command -v mmdebstrap >/dev/null || die "mmdebstrap is missing (scripts/prerequisites.sh installs it)"
  if [[ -n "$socket" ]]; then
    command -v ctr >/dev/null || die "ctr is missing: --import needs containerd's client"
  fi
  ARCH=$(dpkg --print-architecture)
  mkdir -p "$CACHE/layers" "$CACHE/tmp"

  local archives=()
  for name in "${NAMES[@]}"; do
    case $name in
      pause) archives+=("$(build_pause)") ;;
      *) die "$name: not built yet" ;;
    esac
  done
  local archive
  for archive in "${archives[@]}"; do
    echo "$archive"
    if [[ -n "$socket" ]]; then
      ctr --address "$socket" -n k8s.io images import "$archive" >&2
    fi
  done
}

main "$@"
