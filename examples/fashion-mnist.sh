#!/usr/bin/env bash
# Fashion-MNIST on a frozen ImageNet EfficientNet-Lite0: fetch the data (Debian's
# dataset-fashion-mnist) and the weights, convert both, train a new 10-class head, evaluate,
# predict and export. Run from the repository root after ./scripts/setup.sh.
set -euo pipefail
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
GRAFT="${GRAFT:-$CARGO_TARGET_DIR/release/graft}"
PER_CLASS="${PER_CLASS:-1000}"   # training images per class (6000 = all of them)

./scripts/prepare-vision.sh      # models/efficientnet-lite0/model.safetensors from the .pth

data=datasets/fashion-mnist
if [ ! -d "$data/train" ]; then
  tmp="$(mktemp -d)"
  (cd "$tmp" && apt-get download dataset-fashion-mnist >/dev/null && dpkg-deb -x ./*.deb x)
  idx="$tmp/x/usr/share/datasets/fashion-mnist"
  cargo run --release --quiet --example idx_to_folder -- \
    "$idx/train-images-idx3-ubyte.gz" "$idx/train-labels-idx1-ubyte.gz" "$data/train" \
    --per-class "$PER_CLASS"
  cargo run --release --quiet --example idx_to_folder -- \
    "$idx/t10k-images-idx3-ubyte.gz" "$idx/t10k-labels-idx1-ubyte.gz" "$data/test"
  rm -rf "$tmp"
fi

"$GRAFT" train configs/fashion-mnist-effnet-lite0.toml
"$GRAFT" eval --model runs/fashion-mnist --data "$data/test" --output runs/fashion-mnist/report.json
"$GRAFT" predict --model runs/fashion-mnist --input "$(ls -d "$data"/test/bag/* | head -1)"
# torchvision / timm names: timm.create_model("tf_efficientnet_lite0", num_classes=10)
"$GRAFT" export --model runs/fashion-mnist --out runs/fashion-mnist/export
