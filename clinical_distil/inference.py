"""eval-inference: answer every prompt of an evaluation file, in chunk files that resume.

Each row's `prompt` (the user message) is sent after the answer system message through the
model's chat template (the published script built that templated input and then sent the raw
prompt instead). Outputs stay on their input row (matched by position), one CSV per chunk:
`{input_file}_{start}_{num}_chunk_{i}.csv`; a finished chunk file is never redone unless asked.
"""

from __future__ import annotations

import json
import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_distil.engines import (FittedPrompt, Sampling, Throughput, chunk_ranges, fit_notes, package_versions,
                                     shard_chunks, shard_suffix)
from clinical_distil.files import InputError, read_csv, write_csv, write_text
from clinical_distil.prompts import ANSWER_KEYS, ANSWER_SYSTEM_MESSAGE, note_of

OUTPUT_COLUMNS = ["output", "finish_reason", "prompt_tokens", "output_tokens", "note_truncated"]
PREPROCESS_NOTEBOOKS = {
    "i2b2": "c-i2b2-eval-task/i2b2-a-preprocess.ipynb",
    "apixaban": "d-apixaban-eval-task/apixaban-a-preprocess.ipynb",
    "annotated-synthetic": "b-synthetic-eval-task/annotated_synthetic-a-preprocess.ipynb",
}


@dataclass
class InferenceSettings:
    chunk_size: int = 10000
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=256, temperature=0.0, top_p=1.0))
    structured_output: bool = False
    overwrite: bool = False


def eval_file(data_dir: Path, dataset_name: str, input_file: str) -> Path:
    return data_dir / "eval-data" / dataset_name / f"{input_file}.csv"


def load_eval_rows(path: Path, dataset_name: str) -> pd.DataFrame:
    notebook = PREPROCESS_NOTEBOOKS.get(dataset_name, "the task's *-a-preprocess.ipynb")
    return read_csv(path, required=["id", "prompt"], what="eval-data", keep_default_na=False,
                    hint=f"make it with {notebook}")


def chunk_file(output_dir: Path, input_file: str, start: int, count: int, index: int) -> Path:
    return output_dir / f"{input_file}_{start}_{count}_chunk_{index}.csv"


def manifest_path(output_dir: Path, input_file: str, num_shards: int = 1, shard_index: int = 0) -> Path:
    return output_dir / f"manifest_{input_file}{shard_suffix(num_shards, shard_index)}.json"


def conversation(prompt: str) -> list[dict[str, str]]:
    return [{"role": "system", "content": ANSWER_SYSTEM_MESSAGE}, {"role": "user", "content": prompt}]


def fit_prompts(tokenizer, prompts: Sequence[str], max_prompt_tokens: int) -> list[FittedPrompt]:
    """The conversations, each note shortened (never the instructions) where it does not fit the context.

    A prompt of one's own, without a note block, is sent as it is.
    """
    return fit_notes(tokenizer, [(conversation(prompt), note_of(prompt)) for prompt in prompts], max_prompt_tokens)


def answer_schema() -> dict[str, Any]:
    """The JSON object a student answers with (for --structured_output)."""
    return {"type": "object", "properties": {key: {"type": "string"} for key in ANSWER_KEYS},
            "required": list(ANSWER_KEYS), "additionalProperties": False}


def run_eval_inference(engine, rows: pd.DataFrame, settings: InferenceSettings, output_dir: Path, input_file: str,
                       model_id: str, start_row: int = 0, num_inference: int | None = None, num_shards: int = 1,
                       shard_index: int = 0, manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Answer rows [start_row, start_row + num_inference) chunk by chunk; returns the manifest."""
    if start_row < 0 or start_row > len(rows):
        raise InputError(f"--start_row {start_row} is outside the eval file (0..{len(rows)})")
    stop = len(rows) if num_inference is None else min(len(rows), start_row + num_inference)
    count = stop - start_row
    all_chunks = chunk_ranges(start_row, stop, settings.chunk_size)
    mine = shard_chunks(list(enumerate(all_chunks)), num_shards, shard_index)
    todo = [(index, low, high) for index, (low, high) in mine
            if settings.overwrite or not chunk_file(output_dir, input_file, start_row, count, index).exists()]
    throughput = Throughput(sum(high - low for _, low, high in todo),
                            f"eval-inference shard {shard_index}/{num_shards}")
    sampling = settings.sampling
    if settings.structured_output:
        sampling = Sampling(**{**sampling.__dict__, "json_schema": answer_schema()})
    max_prompt_tokens = engine.max_model_len - sampling.max_tokens
    output_tokens, truncated, length_stops = 0, 0, 0
    for index, low, high in todo:
        chunk = rows.iloc[low:high].copy()
        fitted = fit_prompts(engine.tokenizer, list(chunk["prompt"]), max_prompt_tokens)
        results = engine.generate([item.messages for item in fitted], sampling, progress=throughput,
                                  prompt_ids=[item.prompt_ids for item in fitted])
        chunk["output"] = [result.text for result in results]
        chunk["finish_reason"] = [result.finish_reason for result in results]
        chunk["prompt_tokens"] = [result.prompt_tokens for result in results]
        chunk["output_tokens"] = [result.output_tokens for result in results]
        chunk["note_truncated"] = [item.note_truncated for item in fitted]
        write_csv(chunk, chunk_file(output_dir, input_file, start_row, count, index))
        output_tokens += int(chunk["output_tokens"].sum())
        truncated += int(chunk["note_truncated"].sum())
        length_stops += int((chunk["finish_reason"] == "length").sum())
    throughput.close()
    seconds = throughput.seconds
    answered = sum(high - low for _, low, high in todo)
    summary = {
        "model_id": model_id, "engine": engine.name, "versions": package_versions(), "host": platform.node(),
        "input_file": input_file, "rows": [start_row, stop], "chunk_size": settings.chunk_size,
        "chunks": [index for index, _ in mine], "shard": [shard_index, num_shards],
        "sampling": {key: value for key, value in sampling.__dict__.items() if key != "json_schema"},
        "structured_output": settings.structured_output, "max_model_len": engine.max_model_len,
        "answered": answered, "skipped_chunks": len(mine) - len(todo), "notes_shortened": truncated,
        "length_stops": length_stops, "output_tokens": output_tokens, "wall_seconds": round(seconds, 2),
        "seconds_per_example": round(seconds / answered, 4) if answered else None,
        "output_tokens_per_second": round(output_tokens / seconds, 2) if seconds and answered else None,
        **(manifest_extra or {}),
    }
    manifest = manifest_path(output_dir, input_file, num_shards, shard_index)
    # a rerun that found every chunk done keeps the manifest of the run that answered (its timings)
    if todo or not manifest.exists():
        write_text(json.dumps(summary, indent=2, default=str) + "\n", manifest)
    return summary
