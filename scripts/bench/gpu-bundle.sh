#!/usr/bin/env bash
# Prepares what scripts/bench/gpu.sh needs on an NVIDIA machine that may have no Rust toolchain
# and no network: graft built here and stripped, the Vulkan loader as Debian packages (amd64),
# and MiniLM's tokenizer (the GPU runs use random weights of the real shapes: speed does not
# depend on the weights, and the 87 MB checkpoint need not travel). Run on a CPU build machine
# with network, from anywhere; writes .gpu-bundle/ (about 25 MB: the binary travels xz-compressed)
# in the repository root. The binary is built with graft's `vulkan` feature (SPIR-V kernels on
# Vulkan: cooperative matrices, f16 and bf16) into a target folder of its own, so the default
# build's dependencies are not rebuilt; VULKAN=0 builds the default (WGSL) binary instead.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/graft-target}"
bundle=.gpu-bundle
rm -rf "$bundle" && mkdir -p "$bundle/gl" "$bundle/tokenizer" /tmp/graft-apt-amd64/partial
if [ "${VULKAN:-1}" = 1 ]; then
  export CARGO_TARGET_DIR="$CARGO_TARGET_DIR-vulkan"
  cargo build --release --workspace --features graft/vulkan
else
  cargo build --release --workspace
fi
strip -o "$bundle/graft" "$CARGO_TARGET_DIR/release/graft"
xz -T0 -6 "$bundle/graft"
for f in tokenizer.json tokenizer_config.json vocab.txt special_tokens_map.json; do
  cp "models/all-MiniLM-L6-v2/$f" "$bundle/tokenizer/"
done
apt_opts=(-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/graft-apt-amd64)
apt-get "${apt_opts[@]}" update >/dev/null
(cd "$bundle/gl" && apt-get "${apt_opts[@]}" download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2 >/dev/null)
du -sh "$bundle"
