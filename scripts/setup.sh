#!/usr/bin/env bash
# Installs what graft's quick start and tests need on a fresh Debian/Ubuntu machine: a Vulkan
# driver for wgpu (Mesa's, which also gives a software device on machines without a GPU) and the
# pretrained weights; with --tests, also the MLflow server the tracking tests talk to. Safe to run
# again.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
for_tests=0
[ "${1:-}" = "--tests" ] && for_tests=1

if ! ls /usr/share/vulkan/icd.d/*.json >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing a Vulkan driver (mesa-vulkan-drivers)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq mesa-vulkan-drivers libvulkan1 >/dev/null
  else
    echo "warning: no Vulkan driver found; install mesa-vulkan-drivers (or your GPU's driver) for the wgpu backend" >&2
  fi
fi

"$root/scripts/fetch-models.sh"

# An MLflow tracking server for the tracking tests, in its own virtual environment outside the
# clone (graft itself talks to MLflow over HTTP and needs no Python).
mlflow_venv="${GRAFT_MLFLOW_VENV:-$HOME/.cache/graft-mlflow-venv}"
if [ "$for_tests" = 1 ] && [ ! -x "$mlflow_venv/bin/mlflow" ]; then
  echo "installing MLflow 3.17.2 into $mlflow_venv (for the tracking tests)"
  if ! { python3 -m venv "$mlflow_venv" &&
         "$mlflow_venv/bin/pip" install --quiet --disable-pip-version-check mlflow==3.17.2; }; then
    echo "warning: could not install MLflow; the tracking test will be skipped" >&2
  fi
fi
