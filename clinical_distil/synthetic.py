"""Stage A: the teacher writes question/answer pairs for chunks of notes.

For each chunk of note rows [start, end) and each question type the stage writes
`synthetic-output/{dataset}/df_{question_type}_{start}_{end}.csv`: the note columns plus
`question_type, prompt, output, model_id, finish_reason, prompt_tokens, output_tokens,
note_truncated, note_tokens_dropped, attempts`. Each response is stored on the row of its own
request (matched by position, never by prompt text). A reply that was cut off or holds no
readable question is generated again (up to `retries` times, sampled with a new seed and a
frequency penalty, against the loops small teachers fall into); the first usable reply is kept,
else the first one. A chunk whose files all exist is skipped, so an interrupted run resumes where
it stopped.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_distil import layout, prompts
from clinical_distil.chat import FittedPrompt, fit_notes
from clinical_distil.chunks import (ChunkFile, RunManifest, Throughput, check_no_overlap, chunk_ranges,
                                    package_versions, partial_overlaps, row_span, shard_chunks, uncovered)
from clinical_distil.engines import Generation, Sampling, check_prompt_room
from clinical_distil.files import InputError, find_existing, read_csv, write_csv
from clinical_distil.notes import NOTE_COLUMNS, check_note_ids
from clinical_distil.parsing import reply_needs_retry

log = logging.getLogger(__name__)

OUTPUT_COLUMNS = NOTE_COLUMNS + ["question_type", "prompt", "output", "model_id", "finish_reason", "prompt_tokens",
                                 "output_tokens", "note_truncated", "note_tokens_dropped", "attempts"]
# chunk files written before retries existed lack `attempts` (read as 1)
REQUIRED_COLUMNS = [column for column in OUTPUT_COLUMNS if column != "attempts"]
RETRY_SEED_STRIDE = 1_000_003  # seeds of retry k start k strides away, clear of the first attempt's per-request seeds
SELECT_HINT = ("make them with: python a-generate-synthetic-training-data/synthetic-0-select-notes.py "
               "--source NOTEEVENTS.csv.gz --num_notes N")


def chunk_files(output_dir: Path) -> dict[str, list[ChunkFile]]:
    """Stage A's files in a folder by question type, each with the note rows [start, end) it holds."""
    found: dict[str, list[ChunkFile]] = {}
    for path in sorted(output_dir.glob(layout.STAGE_A_GLOB)) if output_dir.is_dir() else []:
        match = layout.STAGE_A_CHUNK.match(path.name)
        if match:
            found.setdefault(match["type"], []).append(ChunkFile(path, int(match["start"]), int(match["end"])))
    return found


@dataclass
class ChunkTask:
    start: int
    end: int
    question_types: list[str]  # the types whose replies for these rows are not on disk yet


def plan_tasks(chunks: list[tuple[int, int]], question_types: list[str], existing: dict[str, list[ChunkFile]],
               overwrite: bool) -> tuple[list[ChunkTask], int]:
    """What is left to generate in these chunks, and how many (chunk, type) files are done already.

    A chunk is split where earlier files of another chunk size begin or end, so that every note row
    of every type is generated once, however the run was chunked before. --overwrite redoes whole
    chunks; a file that reaches over a chunk's edge then would keep stale rows: refused up front.
    """
    tasks, done = [], 0
    for low, high in chunks:
        if overwrite:
            for question_type in question_types:
                straddling = partial_overlaps(existing.get(question_type, []), low, high)
                if straddling:
                    raise InputError(f"{straddling[0].path.name} reaches over rows {low}-{high - 1} that --overwrite "
                                     f"would redo with --chunk_size {high - low}; remove it, or use the chunk size "
                                     "it was written with")
            tasks.append(ChunkTask(low, high, list(question_types)))
            continue
        covered = {kind: [(item.start, item.end) for item in existing.get(kind, [])] for kind in question_types}
        cuts = sorted({low, high} | {edge for kind in question_types for item in existing.get(kind, [])
                                     for edge in (item.start, item.end) if low < edge < high})
        done += sum(not uncovered(low, high, covered[kind]) for kind in question_types)
        pieces: list[ChunkTask] = []
        for start, end in zip(cuts, cuts[1:]):
            missing = [kind for kind in question_types if uncovered(start, end, covered[kind])]
            if pieces and missing and pieces[-1].end == start and pieces[-1].question_types == missing:
                pieces[-1].end = end  # one file for neighbouring pieces of the chunk that miss the same types
            elif missing:
                pieces.append(ChunkTask(start, end, missing))
        tasks += pieces
    return tasks, done


def notes_file(data_dir: Path, dataset: int | str) -> Path:
    candidates = layout.notes_candidates(data_dir, dataset)
    found = find_existing(candidates)
    if found is None:
        raise InputError(f"notes file not found: {candidates[0]} (or .csv); {SELECT_HINT} --num_notes {dataset}")
    return found


def is_usable_note(text: Any) -> bool:
    return isinstance(text, str) and text.strip() != ""


def load_notes(path: Path) -> tuple[pd.DataFrame, int]:
    """The notes table, and how many rows have an empty or non-text note (kept, but not asked about)."""
    frame = read_csv(path, required=["text"], what="notes", hint=SELECT_HINT)
    check_note_ids(frame, path)
    for column in NOTE_COLUMNS:
        if column not in frame.columns:
            frame[column] = pd.NA
    usable = frame["text"].map(is_usable_note)
    return frame, int((~usable).sum())


@dataclass
class StageASettings:
    question_types: list[str]
    questions_per_type: int = prompts.DEFAULT_QUESTIONS_PER_TYPE
    chunk_size: int = 1000
    sampling: Sampling = field(default_factory=lambda: Sampling(max_tokens=4096, temperature=0.7, top_p=0.95))
    structured_output: bool = False
    overwrite: bool = False
    retries: int = 2
    retry_frequency_penalty: float = 0.5
    retry_temperature: float = 0.7  # retries sample at least this hot: a greedy retry tends to loop again
    templates: prompts.PromptTemplates | None = None  # the prompts' wording (None: the shipped templates)


def check_context(tokenizer, notes: pd.DataFrame, settings: StageASettings, max_model_len: int) -> None:
    """The teacher's prompts about these notes fit --max_model_len beside --max_tokens of reply, checked with the
    model's tokenizer before the model loads (engines.check_prompt_room: a note is shortened to fit, the
    instructions around it cannot be)."""
    requests = ((prompts.generation_messages(text, question_type, settings.questions_per_type, settings.templates),
                 text) for text in notes["text"] if is_usable_note(text) for question_type in settings.question_types)
    check_prompt_room(tokenizer, requests, max_model_len, settings.sampling.max_tokens, "--max_tokens")


def build_requests(notes: pd.DataFrame, settings: StageASettings, tokenizer,
                   max_prompt_tokens: int) -> tuple[list[dict], list[FittedPrompt]]:
    """One request per usable note and question type, a note's types next to each other.

    Keeping a note's requests adjacent lets vLLM's scheduler run them together, so the
    shared [system message + note] prefix is computed once and reused from the cache.
    """
    rows, requests = [], []
    for _, note in notes.iterrows():
        text = note["text"]
        if not is_usable_note(text):
            continue
        for question_type in settings.question_types:
            requests.append((prompts.generation_messages(text, question_type, settings.questions_per_type,
                                                         settings.templates), text))
            rows.append({column: note[column] for column in NOTE_COLUMNS} | {"question_type": question_type})
    return rows, fit_notes(tokenizer, requests, max_prompt_tokens)


def run_chunk(engine, notes: pd.DataFrame, task: ChunkTask, settings: StageASettings, output_dir: Path,
              model_id: str, throughput: Throughput, phase_seconds: dict[str, float] | None = None) -> dict[str, int]:
    """Generate the task's question types for its rows and write one file per type.

    `phase_seconds` (when given) gains the chunk's seconds of prompt building ("prompts"),
    generation ("generate") and table writing ("write"): what the stage costs beside the engine.
    """
    clock = time.perf_counter()
    chunk_settings = StageASettings(**{**settings.__dict__, "question_types": task.question_types})
    max_prompt_tokens = engine.max_model_len - settings.sampling.max_tokens
    rows, fitted = build_requests(notes.iloc[task.start:task.end], chunk_settings, engine.tokenizer,
                                  max_prompt_tokens)
    sampling = settings.sampling
    if settings.structured_output:
        schemas = [prompts.item_schema(row["question_type"], settings.questions_per_type) for row in rows]
        sampling = Sampling(**{**sampling.__dict__, "json_schema": schemas})
    timings = {"prompts": time.perf_counter() - clock}
    clock = time.perf_counter()
    # the reference teacher writes from each note's facts: it is told which note and question type each request is
    extra = {"requests": [{**row, "questions_per_type": settings.questions_per_type} for row in rows]} \
        if getattr(engine, "needs_requests", False) else {}
    results = engine.generate([item.messages for item in fitted], sampling, progress=throughput,
                              prompt_ids=[item.prompt_ids for item in fitted], **extra) if rows else []
    attempts = [1] * len(results)
    retry_counts = retry_failed(engine, fitted, sampling, results, attempts, settings)
    timings["generate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    for row, item, result, tries in zip(rows, fitted, results, attempts):
        row.update(prompt=item.prompt_text, attempts=tries,
                   output=result.text, model_id=model_id, finish_reason=result.finish_reason,
                   prompt_tokens=result.prompt_tokens, output_tokens=result.output_tokens,
                   note_truncated=item.note_truncated, note_tokens_dropped=item.note_tokens_dropped)
    frame = pd.DataFrame(rows, columns=OUTPUT_COLUMNS)
    for question_type in task.question_types:
        written = write_csv(frame[frame["question_type"] == question_type],
                            layout.stage_a_chunk(output_dir, question_type, task.start, task.end))
        if settings.overwrite:  # files of another chunking inside these rows now hold stale replies
            for item in chunk_files(output_dir).get(question_type, []):
                if item.path != written and task.start <= item.start and item.end <= task.end:
                    item.path.unlink()
    timings["write"] = time.perf_counter() - clock
    if phase_seconds is not None:
        for phase, seconds in timings.items():
            phase_seconds[phase] = phase_seconds.get(phase, 0.0) + seconds
    return {"written_files": len(task.question_types), "requests": len(rows),
            "truncated_notes": int(sum(item.note_truncated for item in fitted)),
            "output_tokens": int(frame["output_tokens"].sum()) if len(frame) else 0,
            "length_stops": int((frame["finish_reason"] == "length").sum()), **retry_counts}


def retry_failed(engine, fitted: list[FittedPrompt], sampling: Sampling, results: list[Generation],
                 attempts: list[int], settings: StageASettings) -> dict[str, int]:
    """Generate again the replies that were cut off or hold no question; updates `results` and `attempts`.

    Each retry samples (at least at `retry_temperature`, so a greedy run's retry differs too) with a
    new seed and a frequency penalty that pushes a reply looping on one sentence off it. A retry's
    reply replaces the first only when it is usable: otherwise the first stays (stage B still keeps
    the complete items of a cut reply).
    """
    def unusable(result: Generation) -> bool:
        return reply_needs_retry(result.text, result.finish_reason, whole_json=settings.structured_output)

    pending = [position for position, result in enumerate(results) if unusable(result)]
    counts = {"retried_requests": len(pending) if settings.retries else 0, "retry_output_tokens": 0}
    for attempt in range(1, settings.retries + 1):
        if not pending:
            break
        log.info("retry %d of %d: %d replies cut off or without a readable question", attempt, settings.retries,
                 len(pending))
        schemas = sampling.json_schema
        retry_sampling = Sampling(**{
            **sampling.__dict__, "seed": sampling.seed + attempt * RETRY_SEED_STRIDE,
            "temperature": max(sampling.temperature, settings.retry_temperature),
            "frequency_penalty": settings.retry_frequency_penalty,
            "json_schema": [schemas[position] for position in pending] if isinstance(schemas, list) else schemas})
        retried = engine.generate([fitted[position].messages for position in pending], retry_sampling,
                                  prompt_ids=[fitted[position].prompt_ids for position in pending])
        still_failing = []
        for position, result in zip(pending, retried):
            attempts[position] += 1
            counts["retry_output_tokens"] += result.output_tokens
            if unusable(result):
                still_failing.append(position)
            else:
                results[position] = result
        pending = still_failing
    counts["unusable_after_retries"] = len(pending)
    return counts


def manifest_path(output_dir: Path, num_shards: int = 1, shard_index: int = 0) -> Path:
    return layout.stage_a_manifest(output_dir, num_shards, shard_index)


def plan_run(note_count: int, settings: StageASettings, output_dir: Path, start_row: int = 0, limit: int | None = None,
             num_shards: int = 1, shard_index: int = 0) -> tuple[int, list[tuple[int, int]], list[ChunkTask], int]:
    """(stop row, this shard's chunks, what is left to generate, files done): every check on rows and files,
    before a model loads."""
    if start_row < 0 or start_row >= max(note_count, 1):
        raise InputError(f"--start_row {start_row} is outside the notes table: {row_span(note_count)}")
    stop = note_count if limit is None else min(note_count, start_row + limit)
    chunks = shard_chunks(chunk_ranges(start_row, stop, settings.chunk_size), num_shards, shard_index)
    tasks, done = plan_tasks(chunks, settings.question_types, chunk_files(output_dir), settings.overwrite)
    return stop, chunks, tasks, done


def run_stage_a(engine, notes: pd.DataFrame, settings: StageASettings, output_dir: Path, model_id: str,
                start_row: int = 0, limit: int | None = None, num_shards: int = 1, shard_index: int = 0,
                manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every chunk of this shard that is not on disk yet; returns the manifest (and this session's figures).

    The manifest adds this session to the earlier ones of the run (a resume): its counts, seconds and
    tokens/s are those of the whole run; "sessions" lists each. It is rewritten after every chunk.
    """
    stop, chunks, tasks, done_files = plan_run(len(notes), settings, output_dir, start_row, limit, num_shards,
                                               shard_index)
    summary = {
        "model_id": model_id, "engine": engine.name, "versions": package_versions(), "host": platform.node(),
        "rows": [start_row, stop], "chunks": [list(chunk) for chunk in chunks], "shard": [shard_index, num_shards],
        "question_types": settings.question_types, "questions_per_type": settings.questions_per_type,
        "sampling": {key: value for key, value in settings.sampling.__dict__.items() if key != "json_schema"},
        "structured_output": settings.structured_output, "max_model_len": engine.max_model_len,
        "retries": {"max": settings.retries, "temperature": settings.retry_temperature,
                    "frequency_penalty": settings.retry_frequency_penalty},
        **(manifest_extra or {}),
    }
    path = manifest_path(output_dir, num_shards, shard_index)
    record = RunManifest(path, fresh=settings.overwrite)
    started = time.time()
    totals: dict[str, int] = {}
    phase_seconds: dict[str, float] = {}

    def manifest(complete: bool) -> dict[str, Any]:
        merged = record.merged(summary, {"counts": totals, "wall_seconds": time.time() - started,
                                         "phase_seconds": phase_seconds}, complete)
        merged["counts"]["skipped_files"] = done_files
        merged["output_tokens_per_second"] = (round(merged["counts"].get("output_tokens", 0) / merged["wall_seconds"],
                                                    2) if merged["wall_seconds"] else None)
        return merged

    if not tasks and record.earlier.get("complete", True) and path.exists():
        merged = dict(record.earlier)  # nothing left to do: the sessions that did the work stay as they were
    else:
        pending_requests = sum(int(notes["text"].iloc[task.start:task.end].map(is_usable_note).sum())
                               * len(task.question_types) for task in tasks)
        throughput = Throughput(pending_requests, f"stage A shard {shard_index}/{num_shards}")
        record.write(manifest(complete=False))  # the session is recorded even if killed inside its first chunk
        for task in tasks:
            for key, value in run_chunk(engine, notes, task, settings, output_dir, model_id, throughput,
                                        phase_seconds).items():
                totals[key] = totals.get(key, 0) + value
            record.write(manifest(complete=False))  # a killed session keeps the chunks it finished
        throughput.close()
        merged = record.write(manifest(complete=True))
    seconds = time.time() - started
    session = {"counts": {**totals, "skipped_files": done_files}, "wall_seconds": round(seconds, 2),
               "output_tokens_per_second": round(totals.get("output_tokens", 0) / seconds, 2) if seconds else None}
    return {**merged, "session": session}


def read_chunks(output_dir: Path) -> pd.DataFrame:
    """All of stage A's chunk files in a folder, in the order of their file names.

    Two files of one question type that hold the same note rows (runs with other chunk sizes
    before this version) are refused: their replies would be counted twice.
    """
    found = chunk_files(output_dir)
    if not found:
        raise InputError(f"no stage A chunk files (df_*_START_END.csv) in {output_dir}; run "
                         "a-generate-synthetic-training-data/synthetic-a-create.py first")
    for question_type, files in found.items():
        check_no_overlap(files, f"stage A {question_type}")
    ordered = sorted((item for files in found.values() for item in files), key=lambda item: item.path.name)
    frames = [read_csv(item.path, required=REQUIRED_COLUMNS, what="stage A chunk",
                       hint="rerun synthetic-a-create.py for it") for item in ordered]
    frame = pd.concat(frames, ignore_index=True)
    frame["attempts"] = frame["attempts"].fillna(1).astype(int) if "attempts" in frame else 1
    return frame
