"""QLoRA supervised fine-tuning of the student on stage C's datasets (TRL 1.x).

    python finetune.py --model_id meta-llama/Meta-Llama-3.1-8B --input_file all --min_difficulty 5
    accelerate launch --config_file configs/deep_speed2.yaml finetune.py ...   (several GPUs)
reads data/synthetic-raw/{train,test}_{input_file}_{min_difficulty}.arrow and writes
results/{model}_{input_file}_{min_difficulty}_{r}_{alpha}/ (checkpoints, final/ adapter, training_summary.json).
"""

import shutil
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clinical_distil import finetuning  # noqa: E402
from clinical_distil.cli import run  # noqa: E402
from clinical_distil.files import REPO_ROOT, check_model_folder, data_root, model_location, resolve  # noqa: E402


def main(model_id: str = "meta-llama/Meta-Llama-3.1-8B", input_file: str = "all", min_difficulty: int = 5,
         max_seq_length: int = 12000, data_dir: str | None = None, output_dir: str | None = None,
         num_train_epochs: float = 1.0, max_steps: int = -1, per_device_train_batch_size: int = 1,
         gradient_accumulation_steps: int = 2, learning_rate: float = 2e-4, lora_r: int = 8, lora_alpha: int = 16,
         load_in_4bit: bool | None = None, packing: bool = False, padding_free: bool = False,
         gradient_checkpointing: bool = True,
         save_steps: int = 500, save_total_limit: int = 20, logging_steps: int = 10, report_to: str = "none",
         resume_from_checkpoint: str | None = None, seed: int = 42, overwrite: bool = False,
         train_sampling_strategy: str = "random") -> None:
    """Fine-tune `model_id` with LoRA (4-bit NF4 base on CUDA) on synthetic-raw/train_{input_file}_{min_difficulty}.arrow.

    Args:
        model_id: base model (hub id on a GPU node, or a local folder).
        input_file: dataset combination: all, bool or bool_num.
        min_difficulty: minimum teacher-assigned difficulty of the training items.
        max_seq_length: longest training example in tokens (notes are shortened to fit; responses never).
        data_dir: data root (default data/ in the repository, or $CLINICAL_DISTIL_DATA).
        output_dir: run folder (default results/{model}_{input_file}_{min_difficulty}_{r}_{alpha}).
        num_train_epochs: passes over the training set.
        max_steps: stop after this many optimizer steps (-1: use the epochs).
        per_device_train_batch_size: examples per device and step.
        gradient_accumulation_steps: steps accumulated per optimizer update.
        learning_rate: constant learning rate.
        lora_r: LoRA rank.
        lora_alpha: LoRA alpha.
        load_in_4bit: NF4 base weights (default: on when CUDA is present).
        packing: pack several examples into one sequence of max_seq_length tokens (fewer optimizer steps).
        padding_free: concatenate a batch's examples without padding (with --per_device_train_batch_size 2
            and accumulation 1 it does the paper's two examples per update in one pass).
        gradient_checkpointing: recompute activations (non-reentrant) to save memory.
        save_steps: checkpoint every N steps.
        save_total_limit: keep at most N checkpoints.
        logging_steps: log every N steps.
        report_to: none or wandb (set WANDB_MODE=offline to keep runs local; note text is never logged).
        resume_from_checkpoint: a checkpoint folder, or "last" for the newest in the run folder.
        seed: training seed.
        overwrite: delete an earlier run in the output folder and start again.
        train_sampling_strategy: random (the paper's), sequential, group_by_length, or batch_rebalance (each
            step's examples shared out so every GPU gets a like number of tokens; for several processes).
    """
    train_path, test_path = finetuning.dataset_paths(data_root(data_dir), input_file, min_difficulty)
    name = finetuning.run_name(model_id, input_file, min_difficulty, lora_r, lora_alpha)
    target = resolve(output_dir) if output_dir else REPO_ROOT / "results" / name
    check_model_folder(model_id)
    finetuning.check_sampling_strategy(train_sampling_strategy)  # before an --overwrite removes anything
    if finetuning.check_run_folder(target, resume_from_checkpoint, overwrite):
        from accelerate import PartialState

        state = PartialState()
        if state.is_main_process:
            shutil.rmtree(target)
        state.wait_for_everyone()
    summary = finetuning.train(
        model_location(model_id), train_path, test_path, target,
        max_seq_length=max_seq_length, num_train_epochs=num_train_epochs, max_steps=max_steps,
        per_device_train_batch_size=per_device_train_batch_size,
        gradient_accumulation_steps=gradient_accumulation_steps, learning_rate=learning_rate, lora_r=lora_r,
        lora_alpha=lora_alpha, load_in_4bit=load_in_4bit, packing=packing, padding_free=padding_free,
        gradient_checkpointing=gradient_checkpointing, save_steps=save_steps, save_total_limit=save_total_limit,
        logging_steps=logging_steps, report_to=report_to, resume_from_checkpoint=resume_from_checkpoint, seed=seed,
        train_sampling_strategy=train_sampling_strategy)
    from accelerate import PartialState

    if not PartialState().is_main_process:  # one line per run, not one per GPU
        return
    before = summary["eval_loss_before"]
    print(f"trained {summary['global_step']} steps in {summary['seconds']:.0f}s: train loss "
          f"{summary['train_loss']:.4f}, eval loss {'' if before is None else f'{before:.4f} -> '}"
          f"{summary['eval_loss']:.4f}, {summary['tokens_per_second']} tokens/s -> {target}/final")


if __name__ == "__main__":
    run(main)
