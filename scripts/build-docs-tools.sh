#!/usr/bin/env bash
# Installs the pinned tools that build and check the docs (mdBook, and lychee
# as an offline link checker) with `cargo install --locked`, cached under the
# tool cache keyed by version, so a warm machine never rebuilds. Prints the
# directory holding the binaries.
set -euo pipefail

CACHE="${APPSTACK_CACHE_DIR:-$HOME/.cache/appstack-operator}"

MDBOOK_VERSION=0.5.4
LYCHEE_VERSION=0.24.2

log() { echo "[build-docs-tools] $*" >&2; }

# install <crate> <version> <binary> [cargo install flags...]: installs into
# a directory of its own, named after the version and the flags, and links
# the binary into the shared bin directory.
install() {
  local crate="$1" version="$2" binary="$3"; shift 3
  local key
  key="$(echo "$*" | sha256sum | cut -c1-12)"
  local root="$CACHE/cargo/$crate-$version-$key"
  if [[ ! -x "$root/bin/$binary" ]]; then
    log "installing $crate $version into $root; this takes minutes on a cold cache"
    local tmp="$root.tmp.$$"
    rm -rf "$tmp"
    cargo install --quiet --locked --root "$tmp" "$crate@$version" "$@" >&2
    rm -rf "$root"
    mv "$tmp" "$root"
    log "installed $crate $version"
  fi
  echo "$root/bin/$binary"
}

# Neither `mdbook serve` nor `mdbook watch` is used: their web server and file
# watcher are left out.
mdbook="$(install mdbook "$MDBOOK_VERSION" mdbook --no-default-features --features search)"
# Links are checked offline (files and anchors of the built book): no mail
# server checks either.
lychee="$(install lychee "$LYCHEE_VERSION" lychee --no-default-features)"

bin="$CACHE/bin/docs-tools-$(echo "$mdbook $lychee" | sha256sum | cut -c1-12)"
mkdir -p "$bin"
ln -sfn "$mdbook" "$bin/mdbook"
ln -sfn "$lychee" "$bin/lychee"
echo "$bin"
