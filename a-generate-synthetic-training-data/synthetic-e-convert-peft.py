"""Stage E: merge a fine-tuned LoRA adapter into its base model and save a deployable folder.

    python a-generate-synthetic-training-data/synthetic-e-convert-peft.py \
        --adapter_dir results/Llama-3.2-1B_all_1_8_16/final --output_dir models/llama-3.2-1b-distilled
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clinical_distil import finetuning  # noqa: E402
from clinical_distil.cli import run  # noqa: E402
from clinical_distil.files import InputError, resolve  # noqa: E402


def main(adapter_dir: str | None = None, output_dir: str | None = None, base_model_id: str | None = None,
         dtype: str = "bfloat16", overwrite: bool = False) -> None:
    """Merge `adapter_dir` into its base (unquantized, `dtype`) and save weights + tokenizer + chat template.

    Args:
        adapter_dir: a checkpoint-N or final/ folder written by finetune.py.
        output_dir: where to save (default models/{run name}-merged).
        base_model_id: base model to merge into (default: the one recorded in the adapter).
        dtype: bfloat16 (default), float16 or float32.
        overwrite: replace an existing output folder.
    """
    if not adapter_dir:
        raise InputError("pass --adapter_dir: a checkpoint-N or final/ folder written by finetune.py")
    adapter = resolve(adapter_dir)
    name = adapter.parent.name if adapter.name == "final" or adapter.name.startswith("checkpoint-") else adapter.name
    target = resolve(output_dir) if output_dir else resolve("models") / f"{name}-merged"
    if (target / "config.json").exists() and not overwrite:
        raise InputError(f"{target} exists; pass --overwrite to merge again")
    report = finetuning.merge_adapter(adapter, target, base_model_id=base_model_id, dtype=dtype)
    print(f"merged {report['adapter']} into {report['base_model']} -> {target} "
          f"(float32 check: max next-token logit difference {report['max_logit_difference']:.2e} <= {report['tolerance']})")


if __name__ == "__main__":
    run(main)
