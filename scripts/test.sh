#!/usr/bin/env bash
# Runs every test (release profile, the one profile this workspace builds) after the setup, then
# prints one closing line with the totals over all test binaries.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
./scripts/setup.sh --tests
export GRAFT_MLFLOW="${GRAFT_MLFLOW:-${GRAFT_MLFLOW_VENV:-$HOME/.cache/graft-mlflow-venv}/bin/mlflow}"
log="$(mktemp)"
trap 'rm -f "$log"' EXIT
status=0
cargo test --release --workspace --no-fail-fast 2>&1 | tee "$log" || status=$?
totals="$(grep '^test result:' "$log" | awk '{p += $4; f += $6} END {printf "%d passed, %d failed", p, f}')"
echo "tests: $totals"
exit "$status"
