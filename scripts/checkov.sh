#!/usr/bin/env bash
# checkov on the children `appstack render` prints for every example stack in
# deploy/examples/: no check may fail except those the checkov table of
# docs/src/concepts/least-privilege.md lists (read from there, so a check is
# never skipped without a reason written down).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
CACHE="${APPSTACK_CACHE_DIR:-$HOME/.cache/appstack-operator}"
CHECKOV="${CHECKOV:-$(command -v checkov || echo "$CACHE/checkov/bin/checkov")}"
if [ ! -x "$CHECKOV" ]; then
  echo "checkov is not installed: pip install checkov (scripts/prerequisites.sh installs it into $CACHE/checkov)" >&2
  exit 1
fi

skipped=$(grep -o '^| `CKV[A-Z0-9_]*`' docs/src/concepts/least-privilege.md | tr -d '|` ' | paste -sd, -)
[ -n "$skipped" ] || { echo "the checkov table of docs/src/concepts/least-privilege.md is missing" >&2; exit 1; }

rendered=$(mktemp -d)
trap 'rm -rf "$rendered"' EXIT
cargo build --quiet --bin appstack
for example in deploy/examples/*.yaml; do
  target/debug/appstack render -f "$example" -n checkov >"$rendered/$(basename "$example")"
done
echo "checkov $("$CHECKOV" --version) on $(ls "$rendered" | paste -sd' ' -), skipping $skipped"
# --skip-download: no request to the vendor's platform; the checks are local.
"$CHECKOV" --directory "$rendered" --framework kubernetes --skip-download \
  --compact --quiet --skip-check "$skipped"
