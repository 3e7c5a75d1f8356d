#!/usr/bin/env bash
# The runs of one nvidia-h100-x4 lease (4 x H100), after `bash bench/gpu-setup.sh install` with the
# .whl-smol parts stashed and data/gpu-eval + data/bench-ft carried. One device call per step:
#
#   bash bench/gpu-x4.sh tp        Llama-3.1-70B shape (vLLM dummy weights), tensor parallel 4: stage A
#                                  (32 notes), eval-inference (128 examples), batch-1 decode
#   bash bench/gpu-x4.sh multi     finetune.py under configs/deep_speed2.yaml with 4 processes (8B shape,
#                                  the 240 examples of the 1- and 2-GPU runs); then synthetic-a-create.py
#                                  as 4 data-parallel shards, one GPU each (256 notes, 8B shape)
#   bash bench/gpu-x4.sh single    four one-GPU jobs side by side: the 1-GPU finetune baseline (GPU 0),
#                                  stage A against LLM.generate (GPU 1), `vllm bench throughput` (GPU 2),
#                                  SmolLM2 checks: 4-bit finetune, float16 adapter vs merge, structured
#                                  stage A at the stage's sampling (GPU 3)
#
# SAMPLING=batch_rebalance (or group_by_length) sets finetune.py's --train_sampling_strategy (default random).
# Each step builds the 8B-shape model first if it is missing (models/ is kept between calls) and leaves
# its logs, JSON rows and summaries in $OUT/<step>.tgz and $OUT/<step>.log (the lease returns 8 files).
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# the lent hosts share their NVLink switch: no NVLink multicast (NCCL, PyTorch, vLLM)
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 VLLM_ALLREDUCE_USE_SYMM_MEM=0
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
LOGS=/tmp/x4-logs; mkdir -p $LOGS
M8=models/random-llama-3.1-8b
step() { echo "== $(date +%T) $*"; }
build8() { [ -e $M8/config.json ] || python3 bench/gpu_throughput.py build --shape llama-3.1-8b; }
finetune8() {  # $1 processes, $2 config, $3 steps, $4 output folder, $5 time limit (s)
  CONFIG=$2 NUM_PROCESSES=$1 MODEL_ID=$M8 INPUT_FILE=bench LOG_DIR=$LOGS \
    timeout "$5" bash a-generate-synthetic-training-data/synthetic-d-run-finetune.sh --data_dir data/bench-ft --output_dir "$4" \
    --max_steps "$3" --save_steps $(($3 / 2)) --logging_steps 5 --max_seq_length 4096 --overwrite \
    --train_sampling_strategy "${SAMPLING:-random}"
  cp "$4/training_summary.json" "$LOGS/$(basename "$4")_summary.json"
}

tp() {
  step "70B shape, tensor parallel 4"
  python3 bench/gpu_throughput.py build --shape llama-3.1-70b --weights False
  timeout 540 python3 bench/gpu_throughput.py run --config vllm_stages --shape llama-3.1-70b \
      --tensor_parallel_size 4 --notes 32 --eval_examples 128 2>&1 | grep -v "it/s\]" | tail -40
}

multi() {
  build8
  step "finetune, 4 processes, ZeRO-2"
  finetune8 4 configs/deep_speed2.yaml 30 /tmp/r8ds4 300 2>&1 | grep -v "it/s\]" | tail -15
  step "stage A, 4 data-parallel shards"
  python3 bench/gpu_throughput.py notes --count 256 --data_dir /tmp/bench-notes
  for shard in 0 1 2 3; do
    CUDA_VISIBLE_DEVICES=$shard timeout 300 python3 a-generate-synthetic-training-data/synthetic-a-create.py \
        --model_id $M8 --dataset 256 --data_dir /tmp/bench-notes --chunk_size 64 --num_shards 4 \
        --shard_index $shard --max_tokens 512 --max_model_len 8192 --tensor_parallel_size 1 --retries 0 \
        >"$LOGS/shard$shard.log" 2>&1 &
  done
  wait
  tail -n 2 $LOGS/shard*.log
  cp /tmp/bench-notes/synthetic-output/256/manifest_shard*.json $LOGS/
}

single() {
  build8
  step "four one-GPU jobs"
  (CUDA_VISIBLE_DEVICES=0 finetune8 1 configs/single_gpu.yaml 120 /tmp/r8 420 >$LOGS/finetune1.log 2>&1) &
  (CUDA_VISIBLE_DEVICES=1 timeout 420 python3 bench/gpu_throughput.py run --config vllm_overhead --notes 32 \
      >$LOGS/overhead.log 2>&1) &
  (CUDA_VISIBLE_DEVICES=2 timeout 420 python3 bench/gpu_throughput.py cli >$LOGS/cli.log 2>&1) &
  (CUDA_VISIBLE_DEVICES=3 STEP_LIMIT=200 ADAPTER_DTYPE=float16 OUT=$LOGS \
      bash bench/gpu-verify.sh structured-a-sampled finetune adapter >$LOGS/verify.log 2>&1) &
  wait
  grep -h "^{" $LOGS/overhead.log $LOGS/cli.log; cat $LOGS/*.json 2>/dev/null | head -40
}

for name in "$@"; do
  case "$name" in
    tp|multi|single) "$name" 2>&1 | tee "$OUT/$name.log" ;;
    *) echo "unknown step $name; choose tp multi single" >&2; exit 2 ;;
  esac
  cp bench/out/gpu_throughput.jsonl $LOGS/ 2>/dev/null
  tar czf "$OUT/$name.tgz" -C $LOGS . 2>/dev/null
done
