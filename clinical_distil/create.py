"""`create` (stage A): the teacher writes question/answer pairs for chunks of notes.

For each chunk of note rows [start, end) and each question type the stage writes
`synthetic-output/{dataset}/df_{question_type}_{start}_{end}.csv`: the note columns plus
`question_type, prompt, output, model_id, finish_reason, prompt_tokens, output_tokens,
note_truncated, note_tokens_dropped, attempts`. Each response is stored on the row of its own
request (matched by position, never by prompt text). A reply that was cut off or holds no
readable question is generated again (up to `retries` times, sampled with a new seed and a
frequency penalty, against the loops small teachers fall into); the first usable reply is kept,
else the first one. A chunk whose files all exist is skipped, so an interrupted run resumes where
it stopped. The run is the chunked runner's (runner.run_chunks); `CreateRun` gives it stage A's
prompts and rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from clinical_distil import layout, prompts
from clinical_distil.chat import FittedPrompt, fit_notes
from clinical_distil.chunks import ChunkFile, Rows, check_no_overlap, partial_overlaps
from clinical_distil.engines import Generation, Sampling, check_prompt_room
from clinical_distil.files import InputError, find_existing, read_csv
from clinical_distil.parsing import reply_needs_retry
from clinical_distil.runner import Chunk, Plan, Prompts, Retries, Task, chunk_files, remaining
from clinical_distil.select import NOTE_COLUMNS, check_note_ids
from clinical_distil.stages import CreateSettings

OUTPUT_COLUMNS = NOTE_COLUMNS + ["question_type", "prompt", "output", "model_id", "finish_reason", "prompt_tokens",
                                 "output_tokens", "note_truncated", "note_tokens_dropped", "attempts"]
SELECT_HINT = ("make them with: python a-generate-synthetic-training-data/synthetic-0-select-notes.py "
               "--source NOTEEVENTS.csv.gz --num_notes N")


def stage_a_files(output_dir: Path) -> dict[str, list[ChunkFile]]:
    """Stage A's files in a folder by question type, each with the note rows [start, end) it holds."""
    return chunk_files(output_dir, layout.CREATE_FILES)


def plan_tasks(chunks: list[Rows], question_types: list[str], existing: dict[str, list[ChunkFile]],
               overwrite: bool) -> tuple[list[Task], int]:
    """What is left to generate in these chunks, and how many (chunk, type) files are done already
    (runner.remaining: every note row of every type once, however the run was chunked before).

    --overwrite redoes whole chunks; a file that reaches over a chunk's edge then would keep stale rows:
    refused up front.
    """
    for low, high in chunks if overwrite else []:
        for question_type in question_types:
            straddling = partial_overlaps(existing.get(question_type, []), low, high)
            if straddling:
                raise InputError(f"{straddling[0].path.name} reaches over rows {low}-{high - 1} that --overwrite "
                                 f"would redo with --chunk_size {high - low}; remove it, or use the chunk size "
                                 "it was written with")
    return remaining(list(enumerate(chunks)), question_types, existing, overwrite)


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
class CreateRun:
    """Stage A for the chunked runner (runner.ChunkedStage): the script's settings as given, the prompt templates they
    name; one request per usable note and question type, a file per question type and chunk of notes."""

    settings: CreateSettings
    templates: prompts.PromptTemplates | None = None  # the prompts' wording (None: the shipped templates)

    label: ClassVar[str] = "create"
    source: ClassVar[str] = "the notes table"
    naming: ClassVar[layout.CreateFiles] = layout.CREATE_FILES
    exclusive_rows: ClassVar[bool] = False  # runs of other rows of the same notes share the folder

    @property
    def retries(self) -> Retries:
        return Retries(self.settings.retries, self.settings.retry_temperature, self.settings.retry_frequency_penalty)

    @property
    def series(self) -> list[str]:
        return self.settings.question_types

    def plan(self, folder: Path, chunks: list[Chunk], start_row: int, stop: int) -> tuple[list[Task], int]:
        return plan_tasks([rows for _, rows in chunks], self.series, stage_a_files(folder), self.settings.overwrite)

    def pending(self, notes: pd.DataFrame, task: Task) -> int:
        return int(notes["text"].iloc[task.start:task.end].map(is_usable_note).sum()) * len(task.series)

    def prompts_for(self, engine, notes: pd.DataFrame, task: Task) -> Prompts:
        records, fitted = build_requests(notes.iloc[task.start:task.end], task.series, self.settings.questions_per_type,
                                         self.templates, engine.tokenizer,
                                         engine.max_model_len - self.settings.sampling.max_tokens)
        sampling = self.settings.sampling
        if self.settings.structured_output:
            schemas = [prompts.item_schema(row["question_type"], self.settings.questions_per_type) for row in records]
            sampling = Sampling(**{**sampling.__dict__, "json_schema": schemas})
        # the reference teacher writes from each note's facts: it is told which note and question type each is
        details = [{**row, "questions_per_type": self.settings.questions_per_type} for row in records]
        return Prompts(records, fitted, sampling, details)

    def unusable(self, result: Generation) -> bool:
        """A reply cut off, or holding no readable question."""
        return reply_needs_retry(result.text, result.finish_reason, whole_json=self.settings.structured_output)

    def answered(self, task: Task, asked: Prompts, results: list[Generation], attempts: list[int],
                 model_id: str) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
        """Each response on the row of its own request (matched by position, never by prompt text)."""
        for row, item, result, tries in zip(asked.records, asked.fitted, results, attempts):
            row.update(prompt=item.prompt_text, attempts=tries,
                       output=result.text, model_id=model_id, finish_reason=result.finish_reason,
                       prompt_tokens=result.prompt_tokens, output_tokens=result.output_tokens,
                       note_truncated=item.note_truncated, note_tokens_dropped=item.note_tokens_dropped)
        frame = pd.DataFrame(asked.records, columns=OUTPUT_COLUMNS)
        counts = {"written_files": len(task.series), "requests": len(asked.records),
                  "truncated_notes": int(sum(item.note_truncated for item in asked.fitted)),
                  "output_tokens": int(frame["output_tokens"].sum()) if len(frame) else 0,
                  "length_stops": int((frame["finish_reason"] == "length").sum())}
        return {kind: frame[frame["question_type"] == kind] for kind in task.series}, counts

    def summary(self, engine, plan: Plan) -> dict[str, Any]:
        return {
            "rows": [plan.start_row, plan.stop], "chunks": [list(rows) for _, rows in plan.chunks],
            "shard": [plan.shard_index, plan.num_shards], "question_types": self.series,
            "questions_per_type": self.settings.questions_per_type,
            "sampling": {key: value for key, value in self.settings.sampling.__dict__.items() if key != "json_schema"},
            "structured_output": self.settings.structured_output, "max_model_len": engine.max_model_len,
            "retries": {"max": self.retries.times, "temperature": self.retries.temperature,
                        "frequency_penalty": self.retries.frequency_penalty}}

    def session(self, counts: dict[str, int], seconds: float, phase_seconds: dict[str, float]) -> dict[str, Any]:
        return {"counts": dict(counts), "wall_seconds": seconds, "phase_seconds": dict(phase_seconds)}

    def figures(self, merged: dict[str, Any], done: int) -> dict[str, Any]:
        merged["counts"]["skipped_files"] = done
        merged["output_tokens_per_second"] = (round(merged["counts"].get("output_tokens", 0) / merged["wall_seconds"],
                                                    2) if merged["wall_seconds"] else None)
        return merged


def check_context(tokenizer, notes: pd.DataFrame, run: CreateRun, max_model_len: int) -> None:
    """The teacher's prompts about these notes fit --max_model_len beside --max_tokens of reply, checked with the
    model's tokenizer before the model loads (engines.check_prompt_room: a note is shortened to fit, the
    instructions around it cannot be)."""
    requests = ((prompts.generation_messages(text, question_type, run.settings.questions_per_type, run.templates),
                 text) for text in notes["text"] if is_usable_note(text) for question_type in run.series)
    check_prompt_room(tokenizer, requests, max_model_len, run.settings.sampling.max_tokens, "--max_tokens")


def build_requests(notes: pd.DataFrame, question_types: list[str], questions_per_type: int,
                   templates: prompts.PromptTemplates | None, tokenizer,
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
        for question_type in question_types:
            requests.append((prompts.generation_messages(text, question_type, questions_per_type, templates), text))
            rows.append({column: note[column] for column in NOTE_COLUMNS} | {"question_type": question_type})
    return rows, fit_notes(tokenizer, requests, max_prompt_tokens)


def read_chunks(output_dir: Path) -> pd.DataFrame:
    """All of stage A's chunk files in a folder, in the order of their file names.

    Two files of one question type that hold the same note rows are refused: their replies would be
    counted twice.
    """
    found = stage_a_files(output_dir)
    if not found:
        raise InputError(f"no stage A chunk files (df_*_START_END.csv) in {output_dir}; run "
                         "a-generate-synthetic-training-data/synthetic-a-create.py first")
    for question_type, files in found.items():
        check_no_overlap(files, f"stage A {question_type}")
    ordered = sorted((item for files in found.values() for item in files), key=lambda item: item.path.name)
    frames = [read_csv(item.path, required=OUTPUT_COLUMNS, what="stage A chunk",
                       hint="rerun synthetic-a-create.py for it") for item in ordered]
    return pd.concat(frames, ignore_index=True)
