#!/usr/bin/env bash
# Stage D on several nodes under Slurm: one task per node, each starting accelerate with its own rank.
#   sbatch --nodes 2 configs/slurm-multinode-finetune.sh --model_id meta-llama/Meta-Llama-3.1-8B --min_difficulty 1
# Arguments go to finetune.py. Set GPUS_PER_NODE if the nodes do not have 8 GPUs.
#SBATCH --job-name=distil-finetune
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --exclusive
#SBATCH --output=results/logs/finetune-%j.log
set -euo pipefail
repo=${SLURM_SUBMIT_DIR:-$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)}
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
main_ip=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
cd "$repo"
# single quotes: each task expands its own SLURM_NODEID
srun bash -c 'accelerate launch --config_file configs/deep_speed2_multinode.yaml \
    --num_machines '"$SLURM_NNODES"' --num_processes '"$((SLURM_NNODES * GPUS_PER_NODE))"' \
    --machine_rank $SLURM_NODEID --main_process_ip '"$main_ip"' --main_process_port 29500 \
    finetune.py "$@"' finetune "$@"
