"""`convert_peft` (stage E): a fine-tuned LoRA adapter merged into its unquantized base.

The merge is checked against base + adapter on a probe prompt, written beside its target and renamed
into place, with a model card (README.md) and a record of the merge (merge.json) that marks the folder
as a merged model of this project: the only kind of existing folder a later merge may replace.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clinical_distil import layout
from clinical_distil.chat import render_ids
from clinical_distil.files import InputError, check_adapter_folder, check_model, check_output_folder, model_location
from clinical_distil.training_folder import checkpoints

PROBE = [{"role": "system", "content": "You extract facts from clinical notes."},
         {"role": "user", "content": "Note: creatinine 1.4 on admission, 2.1 on day 2. Question: highest creatinine?"}]


def check_adapter(adapter_dir: Path) -> dict[str, Any]:
    """An adapter folder of finetune.py: its adapter_config.json (a JSON object), read, and its weights there;
    one clear line otherwise (files.check_adapter_folder)."""
    return check_adapter_folder(adapter_dir)


# Written by stage E into every merged folder: what was merged and how it was checked. It is how a folder is known
# to hold a merged model of this project, the only kind of existing folder a merge may replace (with --overwrite).
MERGE_RECORD = "merge.json"
MERGE_WRITER = "clinical_distil stage E (synthetic-e-convert-peft.py)"


def is_merged_model(folder: Path) -> bool:
    """Whether `folder` holds a merged model of this project: a model (config.json) with stage E's merge.json."""
    if not (folder / "config.json").is_file() or not (folder / MERGE_RECORD).is_file():
        return False
    try:
        record = json.loads((folder / MERGE_RECORD).read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return isinstance(record, dict) and record.get("written_by") == MERGE_WRITER


def check_merge_target(target: Path, overwrite: bool) -> None:
    """Where a merge may go: a new folder, an empty one, or (with `overwrite`) one that holds a merged model of
    this project. Anything else that exists (a fine-tuning run's folder, a base model, one's own files) is never
    replaced, with or without --overwrite: one line, before a model loads."""
    check_output_folder(target)
    if not target.exists() or not any(target.iterdir()):
        return
    if is_merged_model(target):
        if overwrite:
            return
        raise InputError(f"{target} exists and holds a merged model; pass --overwrite to replace it, or give another "
                         "--output_dir")
    run = [path.name for path in (layout.final_adapter(target), layout.training_summary(target)) if path.exists()] + \
        [path.name for path in checkpoints(target)][:1]
    what = f"a fine-tuning run's folder ({', '.join(run)})" if run else \
        f"a folder that holds no merged model of this project (no {MERGE_RECORD} of stage E)"
    raise InputError(f"--output_dir {target} is {what}; a merge replaces only an earlier merge (with --overwrite): "
                     "give a new --output_dir, e.g. models/NAME-merged")


def merge_base(adapter_dir: Path, base_model_id: str | None = None) -> str:
    """The base model a merge loads: --base_model_id, else the one the adapter records; a local path must be a
    model folder (config.json). Checked before anything loads, with the adapter's own tokenizer, which the merged
    folder keeps (the chat template and pad token of training)."""
    config = check_adapter(adapter_dir)
    if not (adapter_dir / "tokenizer_config.json").is_file():
        raise InputError(f"adapter folder {adapter_dir} has no tokenizer (tokenizer_config.json), which finetune.py "
                         "saves beside the adapter and the merged model keeps; give a checkpoint-N or final/ folder "
                         "of finetune.py")
    base_id = base_model_id or config.get("base_model_name_or_path")
    if not base_id or not isinstance(base_id, str):
        raise InputError(f"{adapter_dir}/adapter_config.json names no base model; pass --base_model_id")
    source = "--base_model_id" if base_model_id else f"the base model (from {adapter_dir}/adapter_config.json)"
    check_model(base_id, source)
    return base_id


def model_card(adapter_dir: Path, merge: dict[str, Any]) -> str:
    """A model card for a merged student (Hugging Face convention: YAML header, then sections): base, adapter,
    the training data (its dataset card where stage C wrote one), training settings and losses, how it was
    merged and checked, how to evaluate it, limits and the protected-health-information notice."""
    inside_run = adapter_dir == layout.final_adapter(adapter_dir.parent) or adapter_dir.match(layout.CHECKPOINT_GLOB)
    run_dir = adapter_dir.parent if inside_run else adapter_dir
    summary_path = layout.training_summary(run_dir)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    config, lora, plan = summary.get("config", {}), summary.get("lora", {}), summary.get("plan", {})
    lines = ["---", f"base_model: {merge['base_model']}", "library_name: transformers", "pipeline_tag: text-generation",
             "tags:", "- clinical", "- information-extraction", "- synthetic-data-distillation", "- lora",
             "license: other", "---", "", f"# {Path(merge.get('output_dir', adapter_dir)).name}", "",
             f"A student fine-tuned (LoRA, merged) from {merge['base_model']} on question/answer pairs a teacher "
             "wrote about clinical notes, to answer questions about a note in the JSON answer format "
             "(synthetic data distillation, Woo et al.). Ask it with the answer prompt it was trained on: "
             "eval-inference.py for the evaluation sets, extract.py for a criteria file over any notes.", "",
             "## Training data", ""]
    card_path = None
    if summary.get("train_dataset"):
        train_path = Path(summary["train_dataset"])
        name = train_path.name.removeprefix("train_").removesuffix(".arrow")
        card_path = layout.dataset_card(train_path.parent, name)
    if card_path is not None and card_path.exists():
        card = card_path.read_text()
        teacher = next((line for line in card.splitlines() if line.startswith("- teacher:")), None)
        lines.append(f"Dataset card: `{card_path}`" + (f" ({teacher.removeprefix('- ')})" if teacher else "") + ".")
    else:
        lines.append("No dataset card was found beside the training data.")
    if summary:
        lines.append(f"{summary['train_examples']} training and {summary['test_examples']} test examples "
                     f"({summary['notes_shortened']['train']} training notes shortened to fit "
                     f"{config.get('max_length') or 'the context'} tokens).")
        lines += ["", "## Training", "",
                  f"- adapter: `{adapter_dir}`; LoRA r {lora.get('r')}, alpha {lora.get('alpha')}, on "
                  f"{lora.get('target_modules')}",
                  f"- {summary['global_step']} optimizer steps, {config.get('num_train_epochs')} epochs, learning "
                  f"rate {config.get('learning_rate')} ({config.get('lr_scheduler_type')}), "
                  f"{plan.get('per_device_train_batch_size', config.get('per_device_train_batch_size'))} examples "
                  f"per device x {plan.get('gradient_accumulation_steps', config.get('gradient_accumulation_steps'))} "
                  f"accumulated, optimizer {summary.get('optimizer')}, 4-bit base: {summary.get('load_in_4bit')}, "
                  f"preset {plan.get('preset', 'paper')}",
                  f"- eval loss {summary.get('eval_loss_before')} before training, {summary.get('eval_loss')} after; "
                  f"{summary.get('trained_tokens')} tokens at {summary.get('tokens_per_second')} tokens/s"]
    else:
        lines += ["", "## Training", "", f"No training_summary.json in {run_dir}."]
    lines += ["", "## Merge", "",
              f"Folded into the unquantized base and saved in {merge['dtype']}; checked in float32 on a probe "
              f"prompt: largest next-token logit difference to base + adapter {merge['max_logit_difference']:.2e} "
              f"(tolerance {merge['tolerance']}), same top token: {merge['same_top_token']}.", "",
              "## Evaluation", "",
              "Score it on the three tasks with eval-inference.py and the evaluate notebooks, or run-pipeline.py "
              "(its report compares it with its base); on simulated patients, experiments/known_answer.py.", "",
              "## Limits", "",
              "- It learned the teacher's answers, right or wrong; its quotes are checked against the note by "
              "extract.py, its answers are not.",
              "- Trained on the notes of one source and era; other hospitals' notes may differ.", "",
              "## Protected health information", "",
              "Trained on clinical notes under a data-use agreement. A model can reproduce text it was trained on: "
              "share it only where that agreement allows.", ""]
    return "\n".join(lines)


def merge_adapter(adapter_dir: Path, output_dir: Path, base_model_id: str | None = None,
                  dtype: str = "bfloat16", tolerance: float = 1e-3, overwrite: bool = False) -> dict[str, Any]:
    """Merge a LoRA adapter into its unquantized base and save a plain model folder.

    The base is loaded unquantized (merging into 4-bit weights would round the update away),
    the adapter applied and folded in with merge_and_unload, and the result saved in `dtype`
    with the tokenizer and chat template used in training. The merge is checked in float32:
    on a probe prompt the next-token logits of the merged model and of base + adapter must
    agree within `tolerance` (largest absolute difference) with the same top token. (In bf16
    the two differ by rounding alone, about 0.3 for an 8B model, which would hide a wrong merge.)
    The folder is written beside its target and renamed into place; an existing `output_dir` is replaced
    only when it holds an earlier merge and `overwrite` is given (check_merge_target).
    """
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_merge_target(output_dir, overwrite)
    base_id = merge_base(adapter_dir, base_model_id)
    torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
        # on the GPU where there is one: an 8B merge and its check take minutes on a CPU
        base = AutoModelForCausalLM.from_pretrained(model_location(base_id), dtype=torch.float32,
                                                    device_map="cuda" if torch.cuda.is_available() else None)
    except OSError as error:
        raise InputError(f"cannot load base model {base_id!r}; pass --base_model_id with a local folder") from error
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    ids = torch.tensor([render_ids(tokenizer, PROBE)], device=base.device)
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits[0, -1].float()
    merged = model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits[0, -1].float()
    difference = float((adapter_logits - merged_logits).abs().max())
    same_top = int(adapter_logits.argmax()) == int(merged_logits.argmax())
    if difference > tolerance or not same_top:
        raise RuntimeError(f"merged model disagrees with base + adapter (max logit difference {difference:.4f})")
    merged = merged.to(torch_dtype)
    staging = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted merge (the caller holds the target's lock)
    merged.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    report = {"base_model": base_id, "adapter": str(adapter_dir), "max_logit_difference": difference,
              "tolerance": tolerance, "same_top_token": same_top, "dtype": dtype, "output_dir": str(output_dir)}
    (staging / "README.md").write_text(model_card(adapter_dir, report))
    (staging / MERGE_RECORD).write_text(json.dumps({"written_by": MERGE_WRITER, **report}, indent=2) + "\n")
    check_merge_target(output_dir, overwrite)  # what is there now, after the minutes of the merge
    if output_dir.exists():  # an earlier merge (or an empty folder): set aside, the new one renamed in, then removed
        earlier = output_dir.with_name(output_dir.name + ".replaced")
        shutil.rmtree(earlier, ignore_errors=True)
        output_dir.rename(earlier)
        staging.rename(output_dir)
        shutil.rmtree(earlier)
    else:
        staging.rename(output_dir)
    return report
