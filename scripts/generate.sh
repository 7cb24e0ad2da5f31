#!/usr/bin/env bash
# Regenerates every generated file from the Rust types. CI runs the same
# generators and fails when the committed output differs.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
cargo run --quiet --bin appstack -- crd >crds/appstack.dev_appstacks.yaml
echo "crds/appstack.dev_appstacks.yaml"
