#!/usr/bin/env bash
# Runs every test (release profile, the one profile this workspace builds) after the setup.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
./scripts/setup.sh
cargo test --release --workspace
