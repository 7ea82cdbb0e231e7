#!/usr/bin/env bash
# Converts the fetched EfficientNet-Lite0 checkpoint (a legacy-format .pth) into its model folder's
# model.safetensors with graft's safe reader (no pickled code runs). Needs the release build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
lite0=models/efficientnet-lite0
if [ ! -f "$lite0/model.safetensors" ]; then
  cargo build --release --workspace --quiet
  "$CARGO_TARGET_DIR/release/graft" convert "$lite0/efficientnet-lite0-57934424.pth" \
    "$lite0/model.safetensors"
fi
