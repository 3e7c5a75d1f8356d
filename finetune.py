"""QLoRA supervised fine-tuning of the student on stage C's datasets (TRL 1.x).

    python finetune.py --model_id meta-llama/Meta-Llama-3.1-8B --input_file all --min_difficulty 5
    accelerate launch --config_file configs/deep_speed2.yaml finetune.py ...   (several GPUs)
reads data/synthetic-raw/{train,test}_{input_file}_{min_difficulty}.arrow and writes
results/{model}_{input_file}_{min_difficulty}_{r}_{alpha}/ (checkpoints, final/ adapter, training_summary.json).
--help lists every flag; the defaults are the paper's.
"""

import shutil

from clinical_distil import finetune, layout, training_folder
from clinical_distil.cli import run_stage
from clinical_distil.files import FolderLock, check_model, check_output_folder, model_location
from clinical_distil.stages import FinetuneSettings


def main(settings: FinetuneSettings) -> None:
    training = layout.training_name(settings.input_file, settings.min_difficulty, settings.variant)
    raw = layout.raw_dir(layout.data_root(settings.data_dir))
    target = layout.resolve(settings.output_dir) if settings.output_dir else layout.RESULTS / layout.run_name(
        settings.model_id, training, settings.lora_r, settings.lora_alpha)
    train_path = layout.training_dataset(raw, "train", training)
    test_path = layout.training_dataset(raw, "test", training)
    # everything a run could fail on is checked before a model loads and before an earlier run is cleared
    check_model(settings.model_id)
    finetune.check_datasets(train_path, test_path)
    check_output_folder(target)
    training_folder.resumed_checkpoint(target, settings.resume_from_checkpoint)
    clear = training_folder.check_run_folder(target, settings.resume_from_checkpoint, settings.overwrite)
    # a second run on the folder is refused before anything prints (loading the tokenizer may warn)
    lock = FolderLock(target, "this run")  # noqa: F841 (held to the end; the first process of several)
    # the prompt templates, and every example against --max_seq_length, with the tokenizer alone
    examples = finetune.prepare_examples(settings, model_location(settings.model_id), train_path, test_path)
    if clear:
        state = finetune.process_state()
        if state.is_main_process:  # the earlier run goes; the lock this run holds stays
            for path in target.iterdir():
                if path.name != layout.lock_name():
                    shutil.rmtree(path) if path.is_dir() else path.unlink()
        state.wait_for_everyone()
    summary = finetune.train(settings, model_location(settings.model_id), train_path, test_path, target,
                               examples=examples)
    state = finetune.process_state()
    # every process leaves the process group before it exits: one left to exit with gloo's threads running can
    # abort ("terminate called without an active exception") and fail a finished run
    state.wait_for_everyone()
    state.destroy_process_group()
    if not state.is_main_process:  # one line per run, not one per GPU
        return
    before = summary["eval_loss_before"]
    print(f"trained {summary['global_step']} steps in {summary['seconds']:.0f}s: train loss "
          f"{summary['train_loss']:.4f}, eval loss {'' if before is None else f'{before:.4f} -> '}"
          f"{summary['eval_loss']:.4f}, {summary['tokens_per_second']} tokens/s -> {target}/final")


if __name__ == "__main__":
    run_stage(FinetuneSettings, main)
