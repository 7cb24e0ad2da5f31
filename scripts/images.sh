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
#   operator       appstack.test/operator:dev      target/test-image/appstack
#
# The seed app's source is tests/fixtures/seed-app/; docs/src/reference/
# images.md says what each image holds and expects.
#
# How: mmdebstrap (run as root) installs Debian bookworm's packages into a
# directory; the script trims it (no docs, no apt lists), packs it as one
# gzip'd layer and writes an OCI image layout (layers, config, manifest, and
# an index naming the image with `io.containerd.image.name` and
# `org.opencontainers.image.ref.name`) as a tar. The operator image runs
# `cargo build --profile test-image --locked --bin appstack` first (a no-op
# when the binary is fresh; cargo's own variables, such as CARGO_BUILD_JOBS,
# apply): the release profile without its fat LTO, which costs a fresh CI
# machine minutes the tests gain nothing from. The published image is built
# by the Dockerfile with the release profile.
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
# Builds run inside command substitutions: their failures must stop the run.
shopt -s inherit_errexit

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

# Empties a work directory, first unmounting what an interrupted build
# left mounted inside it (mmdebstrap mounts /proc, /sys and /dev there).
clear_dir() {
  local dir=$1 mount
  while read -r mount; do
    [[ "$mount" == "$dir"/* ]] && umount --lazy "$mount"
  done < <(findmnt --list --noheadings --output TARGET | LC_ALL=C sort -r)
  rm -rf --one-file-system "$dir"
}

# Runs a command, showing its output only when it fails.
quietly() {
  local output
  output=$("$@" 2>&1) || { printf '%s\n' "$output" >&2; return 1; }
}

# Installs a newly built layer and removes the older layers of that name.
keep_layer() {
  local built=$1 layer=$2 name=$3
  mv "$built" "$layer"
  mv "$built.diffid" "$layer.diffid"
  find "$CACHE/layers" -regextype posix-extended \
    -regex ".*/$name-[0-9a-f]{32}\.tar\.gz(\.diffid|\.digest)?" ! -name "${layer##*/}*" -delete
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
    # The compressed layer's digest, computed once per layer.
    [[ -s "$layer.digest" ]] || sha256sum <"$layer" | cut -d' ' -f1 >"$layer.digest"
    digest=$(cat "$layer.digest")
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
# man pages, translations, apt's lists and caches, logs. The merged-usr
# hook merges /usr with symlinks instead of installing usrmerge, which
# would bring Perl.
debian_rootfs() {
  local dir=$1 packages=$2
  shift 2
  mkdir -p "$CACHE/debs"
  mmdebstrap --quiet --mode=root --variant=essential --architectures="$ARCH" \
    --aptopt='APT::Install-Recommends "false"' \
    --dpkgopt=force-unsafe-io \
    --dpkgopt='path-exclude=/usr/share/doc/*' \
    --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' \
    --dpkgopt='path-exclude=/usr/share/lintian/*' \
    --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr \
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
    "$dir"/var/cache/ldconfig/aux-cache "$dir"/var/log/* "$dir"/etc/machine-id \
    "$dir"/etc/dpkg/dpkg.cfg.d/99mmdebstrap
}

# debian_layer NAME PACKAGES BUILDER: the cached base layer NAME holding
# Debian's essential set plus PACKAGES, shaped by the function BUILDER
# (called with the root directory after the install); prints its path.
debian_layer() {
  local name=$1 packages=$2 builder=$3
  local key
  key=$(key_of "debian_rootfs pack_layer $builder" \
    "$SUITE" "$ARCH" "$packages")
  local layer="$CACHE/layers/$name-$key.tar.gz"
  if [[ ! -f "$layer" ]]; then
    log "building the $name root filesystem (Debian $SUITE: $packages)"
    local dir="$CACHE/tmp/$name-rootfs"
    clear_dir "$dir"
    "$builder" "$dir" "$packages"
    pack_layer "$dir" "$CACHE/tmp/$name.tar.gz"
    keep_layer "$CACHE/tmp/$name.tar.gz" "$layer" "$name"
    clear_dir "$dir"
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
  key=$(key_of "pack_layer $builder $functions" "${inputs[@]}")
  local layer="$CACHE/layers/$name-$key.tar.gz"
  if [[ ! -f "$layer" ]]; then
    local dir="$CACHE/tmp/$name-layer"
    rm -rf "$dir"
    mkdir -p "$dir"
    "$builder" "$dir"
    pack_layer "$dir" "$CACHE/tmp/$name.tar.gz"
    keep_layer "$CACHE/tmp/$name.tar.gz" "$layer" "$name"
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
# With /usr merged, /lib/x/y is usr/lib/x/y behind the link lib -> usr/lib:
# both the link and the real path are listed.
package_files() {
  local from=$1
  shift
  local package path top
  for package; do
    while read -r path; do
      path=${path#/}
      top=${path%%/*}
      if [[ "$path" == */* && -L "$from/$top" ]]; then
        printf '%s\n' "$top"
        path="$(readlink "$from/$top")/${path#*/}"
        path=${path#/}
      fi
      if [[ -e "$from/$path" || -L "$from/$path" ]]; then printf '%s\n' "$path"; fi
    done < <(cat "$from/var/lib/dpkg/info/$package.list" 2>/dev/null ||
      cat "$from/var/lib/dpkg/info/$package:$ARCH.list")
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
# appstack.test/postgres:15

POSTGRES_PACKAGES=postgresql-15,libnss-wrapper
POSTGRES_VERSION=15

# Debian's postgresql-15 with a postgres user of a fixed UID (999, as in
# the official Debian-based image), no cluster created, and without what
# the server never loads here: LLVM for JIT (the server runs without JIT
# when its provider is absent), Perl (postgresql-common's wrappers; the
# image calls the server's binaries directly) and the locale sources
# (C.UTF-8 is built into the C library).
postgres_rootfs() {
  local dir=$1 packages=$2
  debian_rootfs "$dir" "$packages" \
    --essential-hook='echo "postgres:x:999:999:PostgreSQL administrator:/var/lib/postgresql:/bin/sh" >>"$1/etc/passwd"' \
    --essential-hook='echo "postgres:x:999:" >>"$1/etc/group"' \
    --essential-hook='mkdir -p "$1/etc/postgresql-common" && echo "create_main_cluster = false" >"$1/etc/postgresql-common/createcluster.conf"'
  quietly chroot "$dir" dpkg --purge --force-depends \
    libllvm14 libz3-4 perl perl-modules-5.36 libperl5.36 locales
  local lib="$dir/usr/lib/postgresql/$POSTGRES_VERSION/lib"
  rm -rf "$lib"/llvmjit*.so "$lib/bitcode"
  # Every address of the pod: the sample initdb copies.
  sed -i "s/^#listen_addresses = 'localhost'/listen_addresses = '*'/" \
    "$dir/usr/share/postgresql/$POSTGRES_VERSION/postgresql.conf.sample"
  grep -q "^listen_addresses = '\*'" "$dir/usr/share/postgresql/$POSTGRES_VERSION/postgresql.conf.sample"
  # Writable by any UID when no volume is mounted and the root is writable.
  # (/var/run links to /run: an absolute link, which on this side of the
  # chroot would point at the build machine's own /run.)
  install -d -o 999 -g 999 -m 1777 "$dir/var/lib/postgresql"
  install -d -o 999 -g 999 -m 3777 "$dir/run/postgresql"
  install -d -m 0755 "$dir/docker-entrypoint-initdb.d"
}

postgres_entrypoint() {
  install -D -m 0755 "$ROOT/tests/fixtures/images/postgres/docker-entrypoint.sh" \
    "$1/usr/local/bin/docker-entrypoint.sh"
}

build_postgres() {
  local base top
  base=$(debian_layer postgres "$POSTGRES_PACKAGES" postgres_rootfs)
  top=$(directory_layer postgres-entrypoint "" \
    "$ROOT/tests/fixtures/images/postgres/docker-entrypoint.sh" -- postgres_entrypoint)
  # SIGINT: a fast shutdown (SIGTERM would wait for every client to leave).
  image postgres "$POSTGRES_VERSION" "$(image_config user=999:999 port=5432 stopsignal=SIGINT \
    env=PATH=/usr/lib/postgresql/$POSTGRES_VERSION/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    env=PGDATA=/var/lib/postgresql/data env=LANG=C.UTF-8 \
    entrypoint=docker-entrypoint.sh cmd=postgres)" "$base" "$top"
}

# ---------------------------------------------------------------------------
# The seed app: appstack.test/seed-backend and appstack.test/seed-frontend,
# on one Python base layer (containerd stores it once)

PYTHON_PACKAGES=python3,python3-fastapi,uvicorn,python3-sqlalchemy,alembic,python3-psycopg2,python3-prometheus-client
# The image's user; the pod may run it as any other.
SEED_USER=10001:10001
SEED_ENV=(env=PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
  env=PYTHONDONTWRITEBYTECODE=1 env=PYTHONUNBUFFERED=1 env=LANG=C.UTF-8)

python_rootfs() {
  debian_rootfs "$1" "$2"
}

# The backend's files for tag SEED_TAG: the app, the release module of
# its code, and the Alembic revisions up to its own.
seed_backend_files() {
  local release revisions=(0001_create_items)
  case $SEED_TAG in
    1) release=1 ;;
    2) release=2 revisions+=(0002_add_description) ;;
    broken) release=2 revisions+=(0002_add_description 0003_broken) ;;
    2-contract) release=2 revisions+=(0002_add_description 0003c_drop_note) ;;
    *) die "no seed-backend tag $SEED_TAG" ;;
  esac
  local source="$SEED_APP/backend"
  echo "$source/main.py app/main.py"
  echo "$source/settings.py app/settings.py"
  echo "$source/alembic.ini app/alembic.ini"
  echo "$source/migrations/env.py app/migrations/env.py"
  echo "$source/releases/$release.py app/release.py"
  local revision
  for revision in "${revisions[@]}"; do
    echo "$source/migrations/versions/$revision.py app/migrations/versions/$revision.py"
  done
}

seed_backend_layer_files() {
  local source destination
  while read -r source destination; do
    install -D -m 0644 "$source" "$1/$destination"
  done < <(seed_backend_files)
}

build_seed_backend() {
  SEED_TAG=$1
  local base top sources
  base=$(debian_layer python "$PYTHON_PACKAGES" python_rootfs)
  mapfile -t sources < <(seed_backend_files | cut -d' ' -f1)
  top=$(directory_layer "seed-backend-$SEED_TAG" seed_backend_files "$SEED_TAG" "${sources[@]}" \
    -- seed_backend_layer_files)
  image seed-backend "$SEED_TAG" "$(image_config user=$SEED_USER workdir=/app port=8000 "${SEED_ENV[@]}" \
    cmd='uvicorn main:app --host 0.0.0.0 --port 8000')" "$base" "$top"
}

seed_frontend_layer_files() {
  install -D -m 0644 "$SEED_APP/frontend/server.py" "$1/app/server.py"
}

build_seed_frontend() {
  local base top
  base=$(debian_layer python "$PYTHON_PACKAGES" python_rootfs)
  top=$(directory_layer seed-frontend "" "$SEED_APP/frontend/server.py" -- seed_frontend_layer_files)
  image seed-frontend 1 "$(image_config user=$SEED_USER workdir=/app port=3000 "${SEED_ENV[@]}" \
    cmd='python3 /app/server.py')" "$base" "$top"
}

# ---------------------------------------------------------------------------
# appstack.test/operator:dev

# What a Rust binary linked against glibc needs, and nothing else (no
# shell, no package manager), as in distroless/cc: the C library and
# libgcc_s, the CA certificates, a passwd with the non-root user 65532.
operator_base_files() {
  local dir=$1 base="$CACHE/tmp/small-unpacked"
  rm -rf "$base"
  unpack_small "$base"
  local files
  mapfile -t files < <(package_files "$base" libc6 libgcc-s1)
  copy_paths "$base" "$dir" "${files[@]}" etc/ssl/certs/ca-certificates.crt etc/os-release usr/lib/os-release
  rm -rf "$base"
  printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' \
    >"$dir/etc/passwd"
  printf 'root:x:0:\nnonroot:x:65532:\n' >"$dir/etc/group"
  printf 'hosts: files dns\n' >"$dir/etc/nsswitch.conf"
  install -d -m 1777 "$dir/tmp"
  install -d -m 0700 -o 65532 -g 65532 "$dir/home/nonroot"
}

operator_binary_files() {
  install -D -m 0755 "$OPERATOR_BINARY" "$1/usr/local/bin/appstack"
}

build_operator() {
  OPERATOR_BINARY="$ROOT/target/test-image/appstack"
  log "cargo build --profile test-image --locked --bin appstack"
  (cd "$ROOT" && cargo build --profile test-image --locked --bin appstack >&2)
  local base top
  base=$(directory_layer operator-base "unpack_small small_layer small_rootfs package_files copy_paths" \
    "$SMALL_PACKAGES" -- operator_base_files)
  top=$(directory_layer operator-binary "" "$OPERATOR_BINARY" -- operator_binary_files)
  # The Dockerfile's settings: the chart passes `run` and its flags as args.
  image operator dev "$(image_config user=65532:65532 port=8080 port=8081 \
    env=PATH=/usr/local/bin:/usr/bin:/bin \
    env=_RJEM_MALLOC_CONF=dirty_decay_ms:1000,muzzy_decay_ms:0 \
    entrypoint=/usr/local/bin/appstack cmd=run)" "$base" "$top"
}

# ---------------------------------------------------------------------------

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
  # One build at a time per cache: concurrent runs wait for each other.
  exec 9>"$CACHE/lock"
  flock 9

  local archives=()
  for name in "${NAMES[@]}"; do
    case $name in
      pause) archives+=("$(build_pause)") ;;
      postgres) archives+=("$(build_postgres)") ;;
      seed-backend)
        local tag
        for tag in 1 2 broken 2-contract; do archives+=("$(build_seed_backend "$tag")"); done
        ;;
      seed-frontend) archives+=("$(build_seed_frontend)") ;;
      operator) archives+=("$(build_operator)") ;;
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
