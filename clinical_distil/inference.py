"""eval-inference: answer every prompt of an evaluation file, in chunk files that resume.

Each row's `prompt` (the user message) is sent after the answer system message through the
model's chat template (the published script built that templated input and then sent the raw
prompt instead). Outputs stay on their input row (matched by position), one CSV per chunk:
`{input_file}_{start}_{rows}_chunk_{i}.csv` holds rows [start, start + rows) of the eval file (the
i-th chunk of the run that wrote it). A rerun answers only the rows no file holds yet, whatever
chunk size either run used; a finished chunk file is never redone unless asked, and files of rows
outside the rows asked for (another --start_row or --num_inference) are refused, not mixed in.
"""

from __future__ import annotations

import platform
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_distil import layout
from clinical_distil.chat import FittedPrompt, fit_notes
from clinical_distil.chunks import (ChunkFile, RunManifest, Throughput, check_no_overlap, chunk_ranges,
                                    package_versions, row_span, shard_chunks, uncovered)
from clinical_distil.engines import Sampling, check_prompt_room
from clinical_distil.files import InputError, read_csv, write_csv
from clinical_distil.layout import REPO_ROOT
from clinical_distil.prompts import ANSWER_KEYS, PromptTemplates, load_templates, note_of
from clinical_distil.tasks import TASKS

OUTPUT_COLUMNS = ["output", "finish_reason", "prompt_tokens", "output_tokens", "note_truncated"]


@dataclass
class InferenceSettings:
    chunk_size: int = 10000
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=256, temperature=0.0, top_p=1.0))
    structured_output: bool = False
    overwrite: bool = False
    templates: PromptTemplates | None = None  # the answer prompt's wording (None: the shipped templates)


# identifiers read as written: n2c2 patient "0020" must not become 20, or its exported file would miss the gold
IDENTIFIER_DTYPES = {"patient": str}


def load_eval_rows(path: Path, dataset_name: str) -> pd.DataFrame:
    task = TASKS.get(dataset_name)
    notebook = task.preprocess_notebook.relative_to(REPO_ROOT) if task else "the task's *-a-preprocess.ipynb"
    return read_csv(path, required=["id", "prompt"], what="evaluation prompts", keep_default_na=False,
                    dtype=IDENTIFIER_DTYPES, hint=f"make it with {notebook}")


def chunk_files(output_dir: Path, input_file: str) -> list[ChunkFile]:
    """The chunk files of one eval file in a model's folder, each with the rows it holds."""
    pattern = layout.eval_chunk_pattern(input_file)
    found = []
    for path in sorted(output_dir.glob(f"{input_file}_*_chunk_*.csv")) if output_dir.is_dir() else []:
        match = pattern.match(path.name)
        if match:
            start, count = int(match[1]), int(match[2])
            found.append(ChunkFile(path, start, start + count))
    return found


def read_chunk(item: ChunkFile, **kwargs) -> pd.DataFrame:
    """One chunk file, checked to hold the rows its name says (files of an earlier naming did not)."""
    frame = read_csv(item.path, what="eval-inference output", hint="rerun eval-inference.py with --overwrite",
                     **kwargs)
    if len(frame) != item.end - item.start:
        raise InputError(f"{item.path} holds {len(frame)} rows but its name says {item.end - item.start} (rows "
                         f"{item.start}-{item.end - 1}): written by an earlier version of eval-inference.py; rerun "
                         "it with --overwrite")
    return frame


def plan_chunks(output_dir: Path, input_file: str, mine: list[tuple[int, tuple[int, int]]], start_row: int,
                stop: int, overwrite: bool) -> list[tuple[int, int, int]]:
    """(chunk index, start, end) of the rows this shard still has to answer.

    Files of rows outside [start_row, stop) come from a run with other rows: an evaluation would
    mix them in, so they are refused (removed with --overwrite). Without --overwrite only the rows no
    file holds are answered; files whose rows overlap are refused, naming them.
    """
    existing = chunk_files(output_dir, input_file)
    outside = [item for item in existing if item.start < start_row or item.end > stop]
    if outside and not overwrite:
        pieces = [(item.start, min(item.end, start_row)) for item in outside if item.start < start_row] + \
                 [(max(item.start, stop), item.end) for item in outside if item.end > stop]
        merged: list[list[int]] = []
        for low, high in sorted(pieces):
            if merged and low <= merged[-1][1]:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        rows = ", ".join(f"{low}-{high - 1}" for low, high in merged)
        raise InputError(f"{output_dir} holds answers to rows {rows} of {input_file} (e.g. {outside[0].path.name}) "
                         f"outside the rows asked for ({start_row}-{stop - 1}): written by a run with another "
                         "--start_row or --num_inference; pass --overwrite to replace them, or another --output_dir")
    if overwrite:
        return [(index, low, high) for index, (low, high) in mine]
    check_no_overlap(existing, f"eval-inference {input_file}")
    for item in existing:
        read_chunk(item, usecols=[0])
    covered = [(item.start, item.end) for item in existing]
    return [(index, start, end) for index, (low, high) in mine for start, end in uncovered(low, high, covered)]


def remove_replaced(output_dir: Path, input_file: str, start_row: int, stop: int, index: int, low: int, high: int,
                    kept: Path) -> None:
    """After an --overwrite chunk is written: the older files of its rows, and any of rows outside the run."""
    for item in chunk_files(output_dir, input_file):
        stale = item.start < start_row or item.end > stop or (item.start < high and item.end > low)
        if stale and item.path != kept:
            item.path.unlink(missing_ok=True)


def manifest_path(output_dir: Path, input_file: str, num_shards: int = 1, shard_index: int = 0) -> Path:
    return layout.eval_manifest(output_dir, input_file, num_shards, shard_index)


def conversation(prompt: str, templates: PromptTemplates | None = None) -> list[dict[str, str]]:
    return [{"role": "system", "content": (templates or load_templates()).answer_system},
            {"role": "user", "content": prompt}]


def fit_prompts(tokenizer, prompts: Sequence[str], max_prompt_tokens: int,
                templates: PromptTemplates | None = None) -> list[FittedPrompt]:
    """The conversations, each note shortened (never the instructions) where it does not fit the context.

    A prompt of one's own, without a note block, is sent as it is.
    """
    return fit_notes(tokenizer, [(conversation(prompt, templates), note_of(prompt, templates)) for prompt in prompts],
                     max_prompt_tokens)


def check_context(tokenizer, prompts: Sequence[str], max_model_len: int, max_output_tokens: int,
                  templates: PromptTemplates | None = None) -> None:
    """Every prompt fits --max_model_len beside --max_output_tokens of answer, checked with the model's tokenizer
    before the model loads (engines.check_prompt_room: a prompt's note is shortened to fit, its instructions and
    question cannot be, nor a prompt of one's own without a note block)."""
    check_prompt_room(tokenizer, ((conversation(prompt, templates), note_of(prompt, templates)) for prompt in prompts),
                      max_model_len, max_output_tokens, "--max_output_tokens")


def answer_schema() -> dict[str, Any]:
    """The JSON object a student answers with (for --structured_output)."""
    return {"type": "object", "properties": {key: {"type": "string"} for key in ANSWER_KEYS},
            "required": list(ANSWER_KEYS), "additionalProperties": False}


def answering(settings, templates: PromptTemplates | None) -> InferenceSettings:
    """The answering run of a script's AnswerSettings (eval-inference.py, extract.py, synthetic-b2-verify.py)."""
    return InferenceSettings(
        chunk_size=settings.chunk_size, structured_output=settings.structured_output, overwrite=settings.overwrite,
        sampling=Sampling(max_tokens=settings.max_output_tokens, temperature=settings.temperature,
                          top_p=settings.top_p, seed=settings.seed), templates=templates)


def answering_engine(settings, model_id: str, adapter: str | None, prompts: int):
    """The engine a script's AnswerSettings ask for, with `model_id` (and a LoRA `adapter`) loaded, to answer
    `prompts` prompts (vLLM skips compiling when they are too few to pay for it: --vllm_compile auto)."""
    from clinical_distil.backends import load_engine
    from clinical_distil.engines import vllm_start_mode
    from clinical_distil.files import model_location

    return load_engine(model_location(model_id), engine=settings.engine, max_model_len=settings.max_model_len,
                       tensor_parallel_size=settings.tensor_parallel_size, batch_size=settings.batch_size,
                       seed=settings.seed, adapter=adapter, dtype=settings.dtype,
                       start_mode=vllm_start_mode(settings.vllm_compile, prompts, settings.max_output_tokens))


def gpus_held(engine) -> int:
    """GPUs an engine answers on: vLLM's tensor-parallel group, the transformers engine's one GPU, none on a CPU."""
    if getattr(engine, "gpus", None):
        return int(engine.gpus)
    import torch

    return 1 if torch.cuda.is_available() and engine.name != "vllm" else 0


def cost(seconds: float | None, notes: int | None, patients: int | None, gpus: int) -> dict[str, float | None]:
    """What answering cost: seconds per note and per patient, seconds and GPU-hours per 1,000 notes."""
    per_note = seconds / notes if seconds and notes else None
    return {"seconds_per_note": None if per_note is None else round(per_note, 4),
            "seconds_per_patient": round(seconds / patients, 4) if seconds and patients else None,
            "seconds_per_1000_notes": None if per_note is None else round(1000 * per_note, 1),
            "gpu_hours_per_1000_notes": None if per_note is None or not gpus else round(gpus * per_note / 3.6, 4)}


def plan_run(row_count: int, settings: InferenceSettings, output_dir: Path, input_file: str, start_row: int = 0,
             num_inference: int | None = None, num_shards: int = 1,
             shard_index: int = 0) -> tuple[int, list[tuple[int, tuple[int, int]]], list[tuple[int, int, int]]]:
    """(stop row, this shard's chunks, what is left to answer): every check on rows and files, before a model loads."""
    if start_row < 0 or start_row >= max(row_count, 1):
        raise InputError(f"--start_row {start_row} is outside the eval file: {row_span(row_count)}")
    stop = row_count if num_inference is None else min(row_count, start_row + num_inference)
    mine = shard_chunks(list(enumerate(chunk_ranges(start_row, stop, settings.chunk_size))), num_shards, shard_index)
    return stop, mine, plan_chunks(output_dir, input_file, mine, start_row, stop, settings.overwrite)


def run_eval_inference(engine, rows: pd.DataFrame, settings: InferenceSettings, output_dir: Path, input_file: str,
                       model_id: str, start_row: int = 0, num_inference: int | None = None, num_shards: int = 1,
                       shard_index: int = 0, manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Answer rows [start_row, start_row + num_inference) chunk by chunk; returns the manifest.

    The manifest adds this session to the earlier ones of the run (a resume): answers, tokens and
    seconds are those of the whole run; "sessions" lists each, "session" (returned only) this one.
    """
    stop, mine, todo = plan_run(len(rows), settings, output_dir, input_file, start_row, num_inference, num_shards,
                                shard_index)
    throughput = Throughput(sum(high - low for _, low, high in todo),
                            f"eval-inference shard {shard_index}/{num_shards}")
    sampling = settings.sampling
    if settings.structured_output:
        sampling = Sampling(**{**sampling.__dict__, "json_schema": answer_schema()})
    summary = {
        "model_id": model_id, "engine": engine.name, "versions": package_versions(), "host": platform.node(),
        "input_file": input_file, "rows": [start_row, stop], "chunk_size": settings.chunk_size,
        "chunks": [index for index, _ in mine], "shard": [shard_index, num_shards],
        "sampling": {key: value for key, value in sampling.__dict__.items() if key != "json_schema"},
        "structured_output": settings.structured_output, "max_model_len": engine.max_model_len,
        "gpus": gpus_held(engine), "skipped_chunks": len(mine) - len({index for index, _, _ in todo}),
        **(manifest_extra or {}),
    }
    path = manifest_path(output_dir, input_file, num_shards, shard_index)
    record = RunManifest(path, fresh=settings.overwrite)
    session = {"answered": 0, "notes_shortened": 0, "length_stops": 0, "output_tokens": 0, "wall_seconds": 0.0}

    def manifest(complete: bool) -> dict[str, Any]:
        session["wall_seconds"] = throughput.seconds
        merged = record.merged(summary, session, complete)
        merged["seconds_per_example"] = (round(merged["wall_seconds"] / merged["answered"], 4)
                                         if merged["answered"] else None)
        merged["output_tokens_per_second"] = (round(merged["output_tokens"] / merged["wall_seconds"], 2)
                                              if merged["answered"] and merged["wall_seconds"] else None)
        return merged

    max_prompt_tokens = engine.max_model_len - sampling.max_tokens
    if not todo and record.earlier.get("complete", True) and path.exists():
        throughput.close()
        merged = dict(record.earlier)  # nothing left to answer: the sessions that did the work stay as they were
    else:
        record.write(manifest(complete=False))  # the session is recorded even if killed inside its first chunk
        for index, low, high in todo:
            chunk = rows.iloc[low:high].copy()
            fitted = fit_prompts(engine.tokenizer, list(chunk["prompt"]), max_prompt_tokens, settings.templates)
            results = engine.generate([item.messages for item in fitted], sampling, progress=throughput,
                                      prompt_ids=[item.prompt_ids for item in fitted])
            chunk["output"] = [result.text for result in results]
            chunk["finish_reason"] = [result.finish_reason for result in results]
            chunk["prompt_tokens"] = [result.prompt_tokens for result in results]
            chunk["output_tokens"] = [result.output_tokens for result in results]
            chunk["note_truncated"] = [item.note_truncated for item in fitted]
            written = write_csv(chunk, layout.eval_chunk(output_dir, input_file, low, high - low, index))
            if settings.overwrite:
                remove_replaced(output_dir, input_file, start_row, stop, index, low, high, written)
            session["answered"] += high - low
            session["output_tokens"] += int(chunk["output_tokens"].sum())
            session["notes_shortened"] += int(chunk["note_truncated"].sum())
            session["length_stops"] += int((chunk["finish_reason"] == "length").sum())
            record.write(manifest(complete=False))  # a killed session keeps the chunks it finished
        throughput.close()
        merged = record.write(manifest(complete=True))
    seconds = throughput.seconds
    answered = session["answered"]
    return {**merged, "session": {**session, "wall_seconds": round(seconds, 2),
                                  "skipped_chunks": summary["skipped_chunks"],
                                  "seconds_per_example": round(seconds / answered, 4) if answered else None}}
