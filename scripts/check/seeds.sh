#!/usr/bin/env bash
# Runs one graft config at several seeds, one after the other, each into its own output folder
# (the config's `dir` with `-seed-N` appended), and prints each run's test metrics. For the
# multi-seed comparisons against the Python references in BENCHMARKS.md.
#
#     scripts/check/seeds.sh configs/conll-minilm.toml 42 1 2 3 4
set -euo pipefail
config=$1
shift
graft=${GRAFT:-${CARGO_TARGET_DIR:-target}/release/graft}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for seed in "$@"; do
  copy="$work/$(basename "$config" .toml)-seed-$seed.toml"
  sed -e "s/^seed = .*/seed = $seed/" -e "s|^dir = \"\(.*\)\"|dir = \"\1-seed-$seed\"|" "$config" > "$copy"
  grep -q "^seed = $seed$" "$copy" || { echo "$config: no \`seed = \` line to set" >&2; exit 1; }
  dir=$(sed -n 's/^dir = "\(.*\)"/\1/p' "$copy")
  started=$(date +%s)
  "$graft" train --force "$copy" > "$work/log" 2>&1 || { cat "$work/log" >&2; exit 1; }
  echo "seed $seed ($(( $(date +%s) - started )) s): $(cat "$dir/eval.json" 2>/dev/null || tail -5 "$work/log")"
done
