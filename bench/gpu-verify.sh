#!/usr/bin/env bash
# The GPU path checked with the real SmolLM2-135M-Instruct weights, through the project's scripts, on any
# GPU node after `pip install -r requirements.txt && pip install -e .` and `make setup` (the converted model).
# Its data (data/gpu-eval: the three sample evaluation sets combined, 322 prompts, and the demo's stage C
# output) is built by the first step, `data`, from the bundled samples. Writes its results to $OUT.
#
#   bash bench/gpu-verify.sh [STEP ...]     (default: all steps, in this order)
#   data             data/gpu-eval from the samples (the demo's stages 0-C and the three preprocess notebooks)
#   engines          stage A and eval-inference, vLLM against the transformers engine, greedy, both float32
#   structured-a     stage A with structured output on vLLM, greedy: share of replies that parse, first
#                    without retries (*_first), then with the stage's default retries
#   structured-a-sampled  the same at the stage's own sampling (temperature 0.7, top-p 0.95)
#   structured-eval  eval-inference with structured output on vLLM: share of answers that parse
#   finetune         finetune.py (4-bit NF4 on CUDA) into /tmp/ft-smol
#   adapter          the stage E merge of that adapter, then eval-inference with --adapter (vLLM LoRA)
#                    against the merged folder; ADAPTER_DTYPE=float16 merges and serves both in float16
#                    (default bfloat16, the merge's and the engines' default; vLLM's LoRA kernels refuse float32)
# Each engine run has STEP_LIMIT seconds (default 300): a vLLM start with LoRA takes about two minutes.
set -uo pipefail
export HF_HUB_OFFLINE=1
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
M=models/SmolLM2-135M-Instruct
D=/tmp/gd
LIMIT=${STEP_LIMIT:-300}
step() { echo "== $(date +%T) $*"; }
compare() { python3 bench/compare_engines.py --first "$1" --second "$2" --model $M --unparsed "$OUT/$3_unparsed.csv" | tee "$OUT/$3.json"; }
A="timeout $LIMIT python3 a-generate-synthetic-training-data/synthetic-a-create.py --model_id $M --dataset 24
   --data_dir $D --questions_per_type 2 --chunk_size 8"
E="timeout $LIMIT python3 eval-inference.py --dataset_name combined --input_file prompts --data_dir data/gpu-eval"
data() {
  [ -e data/gpu-eval/eval-data/combined/prompts.csv ] && return
  step "data/gpu-eval"
  python3 run-pipeline.py --config configs/demo.yaml --data_dir data/gpu-eval --to_stage prep_training --engine auto \
      --reports_dir /tmp/gv-reports
  python3 run-pipeline.py --config configs/demo.yaml --data_dir data/gpu-eval --from_stage preprocess \
      --to_stage preprocess --reports_dir /tmp/gv-reports
  python3 -c "
import pandas as pd
from clinical_distil import layout
root = layout.data_root('data/gpu-eval')
files = [layout.eval_file(root, task, name) for task, name in (('annotated-synthetic', 'prompts'), ('i2b2', 'test'), ('apixaban', 'prompts'))]
frame = pd.concat([pd.read_csv(path, keep_default_na=False)[['id', 'label', 'prompt']] for path in files])
path = layout.eval_file(root, 'combined', 'prompts'); path.parent.mkdir(parents=True, exist_ok=True)
frame.to_csv(path, index=False); print(len(frame), 'prompts ->', path)"
}
notes() {
  [ -e $D/mimic/notes_24.csv.gz ] || python3 a-generate-synthetic-training-data/synthetic-0-select-notes.py \
      --source data/samples/mimic-iii/NOTEEVENTS.csv.gz --num_notes 24 --data_dir $D
}

engines() {
  notes
  step "stage A vllm fp32";         $A --temperature 0 --max_tokens 512 --engine vllm --dtype float32 \
                                       --output_dir /tmp/a_vllm32
  step "stage A transformers fp32"; $A --temperature 0 --max_tokens 512 --engine transformers --dtype float32 \
                                       --batch_size 96 \
                                       --output_dir /tmp/a_hf32
  compare /tmp/a_vllm32 /tmp/a_hf32 stage_a_vllm_vs_transformers
  step "eval vllm fp32";            $E --model_id $M --engine vllm --dtype float32 --output_dir /tmp/e_vllm32
  step "eval transformers fp32";    $E --model_id $M --engine transformers --dtype float32 --batch_size 64 \
                                       --output_dir /tmp/e_hf32
  compare /tmp/e_vllm32 /tmp/e_hf32 eval_vllm_vs_transformers
}
structured-a() {
  notes
  step "stage A vllm structured, no retries"; $A --temperature 0 --max_tokens 2048 --engine vllm \
                                                 --structured_output --retries 0 --output_dir /tmp/a_json_first
  compare /tmp/a_json_first /tmp/a_json_first stage_a_structured_first
  step "stage A vllm structured"; $A --temperature 0 --max_tokens 2048 --engine vllm --structured_output \
                                     --output_dir /tmp/a_json
  compare /tmp/a_json /tmp/a_json stage_a_structured
  cp /tmp/a_json/manifest.json "$OUT/stage_a_structured_manifest.json"
}
structured-a-sampled() {
  notes
  step "stage A vllm structured, sampled, no retries"; $A --max_tokens 2048 --engine vllm --structured_output \
                                                          --retries 0 --output_dir /tmp/a_json_sampled_first
  compare /tmp/a_json_sampled_first /tmp/a_json_sampled_first stage_a_structured_sampled_first
  step "stage A vllm structured, sampled"; $A --max_tokens 2048 --engine vllm --structured_output \
                                              --output_dir /tmp/a_json_sampled
  compare /tmp/a_json_sampled /tmp/a_json_sampled stage_a_structured_sampled
  cp /tmp/a_json_sampled/manifest.json "$OUT/stage_a_structured_sampled_manifest.json"
}
structured-eval() {
  step "eval vllm structured"; $E --model_id $M --engine vllm --structured_output --output_dir /tmp/e_json
  compare /tmp/e_json /tmp/e_json eval_structured
}
finetune() {
  step "finetune 4-bit"
  python3 finetune.py --model_id $M --data_dir data/gpu-eval --input_file all --min_difficulty 1 \
      --num_train_epochs 8 --logging_steps 5 --max_seq_length 4096 --output_dir /tmp/ft-smol --overwrite 2>&1 | tail -2
  cp /tmp/ft-smol/training_summary.json "$OUT/finetune_summary.json"
}
adapter() {
  local dtype=${ADAPTER_DTYPE:-bfloat16}
  step "merge ($dtype)"
  python3 a-generate-synthetic-training-data/synthetic-e-convert-peft.py --adapter_dir /tmp/ft-smol/final \
      --output_dir /tmp/smol-merged-$dtype --dtype "$dtype" --overwrite | tee "$OUT/merge_$dtype.txt"
  step "eval adapter (vLLM LoRA, $dtype)"
  $E --model_id $M --adapter /tmp/ft-smol/final --engine vllm --dtype "$dtype" --output_dir /tmp/e_adapter_$dtype
  step "eval merged ($dtype)"
  $E --model_id /tmp/smol-merged-$dtype --engine vllm --dtype "$dtype" --output_dir /tmp/e_merged_$dtype
  compare /tmp/e_adapter_$dtype /tmp/e_merged_$dtype eval_adapter_vs_merged_$dtype
}

steps=("$@"); [ ${#steps[@]} -gt 0 ] || steps=(data engines structured-a structured-eval finetune adapter)
for name in "${steps[@]}"; do
  case "$name" in
    data|engines|structured-a|structured-a-sampled|structured-eval|finetune|adapter) "$name" ;;
    *) echo "unknown step $name; choose data engines structured-a structured-a-sampled structured-eval finetune adapter" >&2
       exit 2 ;;
  esac
done
for f in /tmp/e_*/manifest_prompts.json; do
  [ -e "$f" ] && echo "$f $(python3 -c "import json; m=json.load(open('$f')); print(m['engine'], m['seconds_per_example'], m['output_tokens_per_second'])")"
done | tee "$OUT/eval_manifests.txt"
step done
