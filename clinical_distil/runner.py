"""The chunked runner: every stage that answers prompts in chunks runs through `run_chunks`.

Stage A (create.CreateRun) and the answering runs (eval_inference.AnswerRun: eval-inference,
verification, extract.py) write one file per chunk of input rows, named by their layout rule
(`df_{type}_{start}_{end}.csv`, `{input_file}_{start}_{rows}_chunk_{i}.csv`) so that every file says which
rows it holds. A rerun does only the rows no file holds yet, whatever chunk size either run used, so an
interrupted run resumed with another `--chunk_size` still ends with every row exactly once. A stage
supplies only its files' naming, its prompts and its rows (`ChunkedStage`); planning, generation, retries,
files, the manifest of its sessions and shards, and progress are the runner's.
"""

from __future__ import annotations

import logging
import platform
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple, Protocol

import pandas as pd

from clinical_distil import layout
from clinical_distil.chat import FittedPrompt
from clinical_distil.chunks import (ChunkFile, Rows, RunManifest, Throughput, add_into, chunk_ranges, package_versions,
                                    row_span, shard_chunks, uncovered)
from clinical_distil.engines import Generation, Sampling
from clinical_distil.files import InputError, write_csv

log = logging.getLogger(__name__)

Chunk = tuple[int, Rows]  # a chunk's position in the run, and its rows
RETRY_SEED_STRIDE = 1_000_003  # seeds of retry k start k strides away, clear of the first attempt's per-request seeds


@dataclass
class Task:
    """Rows [start, end) of one chunk still to do, in the series whose files miss them."""

    index: int  # which of the chunks planned it is part of (an answering run's file names carry it)
    start: int
    end: int
    series: list[str]  # stage A: question types; an answering run: its one prompt table

    @property
    def question_types(self) -> list[str]:
        """Stage A's series are its question types."""
        return self.series


class Plan(NamedTuple):
    """One shard's share of a run, checked against the files on disk."""

    stop: int  # the run's rows are [start_row, stop)
    chunks: list[Chunk]  # this shard's chunks
    tasks: list[Task]  # what is left to do of them
    done: int  # what of them is on disk already, as the stage counts it (stage A: files, else chunks)
    start_row: int
    num_shards: int
    shard_index: int


@dataclass
class Prompts:
    """One task's requests, as its stage builds them."""

    records: Any  # the stage's rows, one per request (stage A: dicts; an answering run: its rows' frame)
    fitted: list[FittedPrompt]  # each request's conversation, its note shortened where it does not fit
    sampling: Sampling
    details: list[dict] | None = None  # what an engine that writes from the request, not the prompt, is told


@dataclass(frozen=True)
class Retries:
    """How a stage asks again for the replies it cannot use (none by default: an answer is kept as it comes)."""

    times: int = 0
    temperature: float = 0.0  # at least this temperature, so that a greedy run's retry differs
    frequency_penalty: float = 0.0


class ChunkedSettings(Protocol):
    """The script settings the runner reads (CreateSettings, AnswerSettings)."""

    chunk_size: int
    overwrite: bool


class ChunkedStage(Protocol):
    """What a stage gives the runner: its settings, how its files are named, its prompts, and its rows and
    figures."""

    settings: ChunkedSettings
    label: str  # on the progress bar
    source: str  # the table its rows come from, as a refusal names it ("the notes table")
    naming: layout.ChunkNaming  # its rule in layout.py: CreateFiles, AnswerFiles
    series: list[str]  # the names its files are kept apart by
    exclusive_rows: bool  # its folder holds one run's rows: --overwrite also removes files of other rows
    retries: Retries

    def plan(self, folder: Path, chunks: list[Chunk], start_row: int, stop: int) -> tuple[list[Task], int]:
        """Its refusals of the files on disk, then what is left (`remaining`) and what is done."""

    def pending(self, rows: pd.DataFrame, task: Task) -> int:
        """The requests of a task, for the progress bar."""

    def prompts_for(self, engine, rows: pd.DataFrame, task: Task) -> Prompts:
        """A task's requests, fitted to the engine's context beside the reply."""

    def unusable(self, result: Generation) -> bool:
        """A reply to generate again."""

    def answered(self, task: Task, asked: Prompts, results: list[Generation], attempts: list[int],
                 model_id: str) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
        """The rows of each series' file, and the chunk's counts."""

    def summary(self, engine, plan: Plan) -> dict[str, Any]:
        """The manifest's description of the run (after model, engine, versions and host)."""

    def session(self, counts: dict[str, int], seconds: float, phase_seconds: dict[str, float]) -> dict[str, Any]:
        """A session's additive figures, as the manifest lists them."""

    def figures(self, merged: dict[str, Any], done: int) -> dict[str, Any]:
        """The figures derived from the sums (rates), added to a manifest or to a session's figures."""


def chunk_files(folder: Path, naming: layout.ChunkNaming) -> dict[str, list[ChunkFile]]:
    """A stage's chunk files in a folder by series, each with the rows [start, end) its name says it holds."""
    found: dict[str, list[ChunkFile]] = {}
    for path in sorted(folder.glob(naming.glob)) if folder.is_dir() else []:
        parsed = naming.parse(path.name)
        if parsed:
            found.setdefault(parsed[0], []).append(ChunkFile(path, parsed[1], parsed[2]))
    return found


def manifest_path(stage: ChunkedStage, folder: Path, num_shards: int = 1, shard_index: int = 0) -> Path:
    return stage.naming.manifest(folder, num_shards, shard_index)


def remaining(chunks: list[Chunk], series: list[str], existing: dict[str, list[ChunkFile]],
              overwrite: bool) -> tuple[list[Task], int]:
    """What is left to do in these chunks, and how many (chunk, series) files are done already.

    A chunk is split where earlier files of another chunk size begin or end, so that every row of every
    series is done once, however the run was chunked before; neighbouring pieces that miss the same series
    are one task. --overwrite redoes whole chunks.
    """
    if overwrite:
        return [Task(index, low, high, list(series)) for index, (low, high) in chunks], 0
    covered = {kind: [(item.start, item.end) for item in existing.get(kind, [])] for kind in series}
    tasks, done = [], 0
    for index, (low, high) in chunks:
        cuts = sorted({low, high} | {edge for kind in series for edges in covered[kind] for edge in edges
                                     if low < edge < high})
        done += sum(not uncovered(low, high, covered[kind]) for kind in series)
        pieces: list[Task] = []
        for start, end in zip(cuts, cuts[1:]):
            missing = [kind for kind in series if uncovered(start, end, covered[kind])]
            if pieces and missing and pieces[-1].end == start and pieces[-1].series == missing:
                pieces[-1].end = end  # one file for neighbouring pieces of the chunk that miss the same series
            elif missing:
                pieces.append(Task(index, start, end, missing))
        tasks += pieces
    return tasks, done


def plan_run(row_count: int, stage: ChunkedStage, folder: Path, start_row: int = 0, limit: int | None = None,
             num_shards: int = 1, shard_index: int = 0) -> Plan:
    """This shard's chunks of rows [start_row, start_row + limit) and what is left of them: every check on rows
    and files, before a model loads."""
    if start_row < 0 or start_row >= max(row_count, 1):
        raise InputError(f"--start_row {start_row} is outside {stage.source}: {row_span(row_count)}")
    stop = row_count if limit is None else min(row_count, start_row + limit)
    chunks = shard_chunks(list(enumerate(chunk_ranges(start_row, stop, stage.settings.chunk_size))), num_shards,
                          shard_index)
    tasks, done = stage.plan(folder, chunks, start_row, stop)
    return Plan(stop, chunks, tasks, done, start_row, num_shards, shard_index)


def retry_failed(engine, fitted: list[FittedPrompt], sampling: Sampling, results: list[Generation],
                 attempts: list[int], stage: ChunkedStage) -> dict[str, int]:
    """Generate again the replies the stage finds unusable; updates `results` and `attempts`.

    Each retry samples (at least at the stage's retry temperature, so a greedy run's retry differs too) with
    a new seed and a frequency penalty that pushes a reply looping on one sentence off it. A retry's reply
    replaces the first only when it is usable: otherwise the first stays (stage B still keeps the complete
    items of a cut reply).
    """
    pending = [position for position, result in enumerate(results) if stage.unusable(result)]
    counts = {"retried_requests": len(pending) if stage.retries.times else 0, "retry_output_tokens": 0}
    for attempt in range(1, stage.retries.times + 1):
        if not pending:
            break
        log.info("retry %d of %d: %d replies cut off or unusable", attempt, stage.retries.times, len(pending))
        schemas = sampling.json_schema
        retry_sampling = Sampling(**{
            **sampling.__dict__, "seed": sampling.seed + attempt * RETRY_SEED_STRIDE,
            "temperature": max(sampling.temperature, stage.retries.temperature),
            "frequency_penalty": stage.retries.frequency_penalty,
            "json_schema": [schemas[position] for position in pending] if isinstance(schemas, list) else schemas})
        retried = engine.generate([fitted[position].messages for position in pending], retry_sampling,
                                  prompt_ids=[fitted[position].prompt_ids for position in pending])
        still_failing = []
        for position, result in zip(pending, retried):
            attempts[position] += 1
            counts["retry_output_tokens"] += result.output_tokens
            if stage.unusable(result):
                still_failing.append(position)
            else:
                results[position] = result
        pending = still_failing
    counts["unusable_after_retries"] = len(pending)
    return counts


def remove_replaced(stage: ChunkedStage, folder: Path, series: str, task: Task, plan: Plan, kept: Path) -> None:
    """After an --overwrite chunk is written: the older files of its rows (and, where a folder holds one run's
    rows only, the files of rows outside the run)."""
    for item in chunk_files(folder, stage.naming).get(series, []):
        outside = stage.exclusive_rows and (item.start < plan.start_row or item.end > plan.stop)
        if item.path != kept and (outside or (item.start < task.end and item.end > task.start)):
            item.path.unlink(missing_ok=True)


def run_chunk(engine, rows: pd.DataFrame, stage: ChunkedStage, task: Task, folder: Path, plan: Plan, model_id: str,
              progress: Throughput, phase_seconds: dict[str, float]) -> dict[str, int]:
    """Generate one task's requests, again those that come back unusable, and write a file per series.

    `phase_seconds` gains the chunk's seconds of prompt building ("prompts"), generation ("generate") and
    table writing ("write"): what a stage costs beside the engine.
    """
    clock = time.perf_counter()
    asked = stage.prompts_for(engine, rows, task)
    timings = {"prompts": time.perf_counter() - clock}
    clock = time.perf_counter()
    extra = {"requests": asked.details} if asked.details is not None and getattr(engine, "needs_requests", False) \
        else {}
    results = engine.generate([item.messages for item in asked.fitted], asked.sampling, progress=progress,
                              prompt_ids=[item.prompt_ids for item in asked.fitted], **extra) if asked.fitted else []
    attempts = [1] * len(results)
    retried = retry_failed(engine, asked.fitted, asked.sampling, results, attempts, stage)
    timings["generate"] = time.perf_counter() - clock
    clock = time.perf_counter()
    frames, counts = stage.answered(task, asked, results, attempts, model_id)
    for series, frame in frames.items():
        written = write_csv(frame, stage.naming.path(folder, series, task.start, task.end, task.index))
        if stage.settings.overwrite:  # files of another chunking inside these rows now hold stale replies
            remove_replaced(stage, folder, series, task, plan, written)
    timings["write"] = time.perf_counter() - clock
    add_into(phase_seconds, timings)
    return {**counts, **retried}


def run_chunks(engine, rows: pd.DataFrame, stage: ChunkedStage, folder: Path, model_id: str, start_row: int = 0,
               limit: int | None = None, num_shards: int = 1, shard_index: int = 0,
               manifest_extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Run every chunk of this shard that is not on disk yet; returns the manifest, with this session's figures
    under "session".

    The manifest adds this session to the earlier ones of the run (a resume): its counts, seconds and rates are
    those of the whole run; "sessions" lists each. It is written when the session starts (a session killed
    inside its first chunk is listed) and after every chunk (a killed session keeps the chunks it finished).
    """
    plan = plan_run(len(rows), stage, folder, start_row, limit, num_shards, shard_index)
    summary = {"model_id": model_id, "engine": engine.name, "versions": package_versions(), "host": platform.node(),
               **stage.summary(engine, plan), **(manifest_extra or {})}
    path = manifest_path(stage, folder, num_shards, shard_index)
    record = RunManifest(path, fresh=stage.settings.overwrite)
    started = time.time()
    counts: dict[str, int] = {}
    phase_seconds: dict[str, float] = {}

    def manifest(complete: bool) -> dict[str, Any]:
        session = stage.session(counts, time.time() - started, phase_seconds)
        return stage.figures(record.merged(summary, session, complete), plan.done)

    if not plan.tasks and record.earlier.get("complete", True) and path.exists():
        merged = dict(record.earlier)  # nothing left to do: the sessions that did the work stay as they were
    else:
        progress = Throughput(sum(stage.pending(rows, task) for task in plan.tasks),
                              f"{stage.label} shard {shard_index}/{num_shards}")
        record.write(manifest(complete=False))
        for task in plan.tasks:
            add_into(counts, run_chunk(engine, rows, stage, task, folder, plan, model_id, progress, phase_seconds))
            record.write(manifest(complete=False))
        progress.close()
        merged = record.write(manifest(complete=True))
    seconds = time.time() - started
    session = stage.figures(stage.session(counts, seconds, phase_seconds), plan.done)
    return {**merged, "session": {**session, "wall_seconds": round(seconds, 2)}}
