#!/usr/bin/env bash
# Stage D: fine-tune the student with accelerate + DeepSpeed ZeRO-2 (the published launch), from any directory.
#
#   bash a-generate-synthetic-training-data/synthetic-d-run-finetune.sh            # 8 GPUs, min difficulty 1, all
#   NUM_PROCESSES=2 MODEL_ID=meta-llama/Llama-3.2-1B bash .../synthetic-d-run-finetune.sh --max_steps 300
#
#   CONFIG=configs/multi_gpu.yaml bash .../synthetic-d-run-finetune.sh             # plain DDP: faster (bench/RESULTS.md)
#
# Environment overrides: MODEL_ID, INPUT_FILE, MIN_DIFFICULTY, NUM_PROCESSES, CONFIG (accelerate config),
# LOG_DIR. Arguments after the script go to finetune.py. The log goes to $LOG_DIR/finetune-<time>.log.
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
MODEL_ID=${MODEL_ID:-meta-llama/Llama-3.2-1B}
INPUT_FILE=${INPUT_FILE:-all}
MIN_DIFFICULTY=${MIN_DIFFICULTY:-1}
NUM_PROCESSES=${NUM_PROCESSES:-8}
CONFIG=${CONFIG:-$repo/configs/deep_speed2.yaml}
LOG_DIR=${LOG_DIR:-$repo/results/logs}
mkdir -p "$LOG_DIR"
log="$LOG_DIR/finetune-$(date +%Y%m%d-%H%M%S).log"
echo "logging to $log"
cd "$repo"
accelerate launch --config_file "$CONFIG" --num_machines 1 --num_processes "$NUM_PROCESSES" \
    finetune.py --model_id "$MODEL_ID" --input_file "$INPUT_FILE" --min_difficulty "$MIN_DIFFICULTY" "$@" \
    2>&1 | tee "$log"
