# Shared by the scripts that build pinned upstream tools from the Go module
# proxy: each tool has a wrapper module (go.mod, go.sum, tools.go) under
# $HACK, and its binaries are cached under $CACHE/bin keyed by version and
# go.sum. The caller sets ROOT, HACK, CACHE and defines log().

# key <module dir> <version>: a cache directory name that changes whenever the
# pinned module graph, the wrapper's own Go files (its commands in
# subdirectories included) or the link flags ($LDFLAGS) change. Only contents
# count, not where the checkout is, so every clone shares the cache.
key() {
  local sum
  sum="$({ cat "$HACK/$1/go.mod" "$HACK/$1/go.sum"; find "$HACK/$1" -name '*.go' -print0 | LC_ALL=C sort -z | xargs -0 cat; echo "${LDFLAGS:-}"; } | sha256sum | cut -c1-12)"
  echo "$CACHE/bin/$1-$2-$sum"
}

# build <module dir> <version> <binary names...> -- <packages...>, linked with
# $LDFLAGS added (for example -X flags stamping the upstream version, which a
# build from the module proxy otherwise lacks).
build() {
  local module="$1" version="$2"; shift 2
  local names=() packages=()
  while [[ "$1" != "--" ]]; do names+=("$1"); shift; done
  shift
  packages=("$@")
  local dir; dir="$(key "$module" "$version")"
  local missing=0
  for n in "${names[@]}"; do [[ -x "$dir/$n" ]] || missing=1; done
  if [[ "$missing" == 0 ]]; then
    echo "$dir"
    return
  fi
  command -v go >/dev/null || { log "go is required to build ${names[*]}"; exit 1; }
  log "building ${names[*]} ($version) into $dir; this takes minutes on a cold cache"
  local tmp="$dir.tmp.$$"
  mkdir -p "$tmp"
  local out="$tmp/"
  # A single package is named explicitly: etcd's main package sits at a
  # module root ending in /v3, which go build would name after the path.
  [[ "${#packages[@]}" == 1 ]] && out="$tmp/${names[0]}"
  (cd "$HACK/$module" && GOFLAGS=-buildvcs=false go build -trimpath -ldflags="-s -w ${LDFLAGS:-}" -o "$out" "${packages[@]}")
  rm -rf "$dir"
  mv "$tmp" "$dir"
  log "built ${names[*]}"
  echo "$dir"
}

