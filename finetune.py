"""QLoRA supervised fine-tuning of the student on stage C's datasets (TRL).

The training loop lands with the fine-tuning issue; this entry point already names the
published arguments so that launch scripts and docs can refer to it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clinical_distil.cli import run  # noqa: E402
from clinical_distil.files import InputError  # noqa: E402


def main(model_id: str = "meta-llama/Meta-Llama-3.1-8B", input_file: str = "all", min_difficulty: int = 5,
         max_seq_length: int = 12000) -> None:
    """Fine-tune `model_id` on synthetic-raw/train_{input_file}_{min_difficulty}.arrow.

    Args:
        model_id: base model (hub id or local folder).
        input_file: dataset combination: all, bool or bool_num.
        min_difficulty: minimum teacher-assigned difficulty of the training items.
        max_seq_length: longest training example in tokens.
    """
    raise InputError("finetune.py is not implemented in this version of the repository (fine-tuning issue)")


if __name__ == "__main__":
    run(main)
