#!/usr/bin/env bash
# Stage A over several GPU nodes: one Slurm array task per shard, vLLM tensor parallel inside each node.
# Submit from the repository root; arguments after the script go to synthetic-a-create.py:
#
#   sbatch --array=0-3 a-generate-synthetic-training-data/synthetic-a-slurm-array.sh --dataset 100000
#
# Each task runs shard $SLURM_ARRAY_TASK_ID of $SLURM_ARRAY_TASK_COUNT; shards take the chunks round-robin,
# so together they cover every note exactly once, and a resubmitted task skips its finished chunks.
#SBATCH --job-name=synthetic-a
#SBATCH --nodes=1
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=32
#SBATCH --time=48:00:00
#SBATCH --output=logs/synthetic-a-%A_%a.log
set -euo pipefail
cd "${SLURM_SUBMIT_DIR:-$(dirname "$0")/..}"
mkdir -p logs
shards=${SLURM_ARRAY_TASK_COUNT:-1}
shard=${SLURM_ARRAY_TASK_ID:-0}
echo "shard ${shard} of ${shards} on $(hostname), GPUs: ${CUDA_VISIBLE_DEVICES:-all}"
exec python a-generate-synthetic-training-data/synthetic-a-create.py --engine vllm \
    --num_shards "${shards}" --shard_index "${shard}" "$@"
