#!/usr/bin/env bash
# The feature pass of a frozen-backbone config on Slurm: an array of workers, each computing its
# share of the features into one cache on a shared filesystem (`graft features --shard auto` reads
# SLURM_ARRAY_TASK_ID and SLURM_ARRAY_TASK_COUNT), then the head job once they all succeeded.
#   sbatch --array=0-7 examples/cluster/slurm.sh graft.toml
# graft must be on the nodes' PATH (a module, or the image of examples/cluster/Dockerfile through
# your container runtime), and the config's [train] cache_dir, data and model on shared storage.
#SBATCH --job-name=graft-features
#SBATCH --cpus-per-task=2
#SBATCH --mem=2G
set -euo pipefail
config="${1:?usage: sbatch --array=0-N slurm.sh CONFIG}"
graft features "$config" --shard auto
# The last task to start queues the head job, to run once every task of the array succeeded.
if [ "${SLURM_ARRAY_TASK_ID}" = "${SLURM_ARRAY_TASK_MAX:-}" ]; then
  sbatch --dependency="afterok:${SLURM_ARRAY_JOB_ID}" --job-name=graft-head \
    --cpus-per-task=2 --mem=2G --wrap "graft train '$config'"
fi
