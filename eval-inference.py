"""Batch inference of a model over an evaluation set (eval-data/{dataset}/{input_file}.csv).

The inference loop lands with the evaluation issue; this entry point already names the
published arguments so that scripts and docs can refer to it.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clinical_distil.cli import run  # noqa: E402
from clinical_distil.files import InputError  # noqa: E402


def main(model_id: str = "meta-llama/Meta-Llama-3.1-70B-Instruct", dataset_name: str = "i2b2",
         input_file: str = "train", num_inference: str = "all", start_row: int = 0, max_output_tokens: int = 256,
         chunk_size: int = 10000, temperature: float = 0.0, top_p: float = 1.0) -> None:
    """Answer every prompt of eval-data/{dataset_name}/{input_file}.csv with `model_id`.

    Args:
        model_id: model to evaluate (hub id or local folder).
        dataset_name: evaluation set folder under eval-data/ (i2b2, apixaban, annotated-synthetic).
        input_file: file name without .csv (train, test, prompts).
        num_inference: number of rows to answer, or "all".
        start_row: first row to answer.
        max_output_tokens: longest answer in tokens.
        chunk_size: rows per output file (the unit of resuming).
        temperature: sampling temperature (0 = greedy).
        top_p: nucleus sampling threshold.
    """
    raise InputError("eval-inference.py is not implemented in this version of the repository (evaluation issue)")


if __name__ == "__main__":
    run(main)
