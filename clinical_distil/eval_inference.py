"""`eval_inference`: answer every prompt of an evaluation file, in chunk files that resume.

Each row's `prompt` (the user message) is sent after the answer system message through the
model's chat template (the published script built that templated input and then sent the raw
prompt instead). Outputs stay on their input row (matched by position), one CSV per chunk:
`{input_file}_{start}_{rows}_chunk_{i}.csv` holds rows [start, start + rows) of the eval file (the
i-th chunk of the run that wrote it). A rerun answers only the rows no file holds yet, whatever
chunk size either run used; a finished chunk file is never redone unless asked, and files of rows
outside the rows asked for (another --start_row or --num_inference) are refused, not mixed in.
`AnswerRun` is the answering run the chunked runner (runner.run_chunks) is given by
eval-inference.py, synthetic-b2-verify.py and extract.py: its prompts and its rows.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

import pandas as pd

from clinical_distil import layout
from clinical_distil.chat import Conversation, FittedPrompt, fit_notes
from clinical_distil.chunks import ChunkFile, check_no_overlap
from clinical_distil.engines import Generation, Sampling, check_prompt_room
from clinical_distil.files import InputError, read_csv
from clinical_distil.layout import REPO_ROOT
from clinical_distil.prompts import ANSWER_KEYS, PromptTemplates, load_templates, note_of
from clinical_distil.runner import Chunk, Plan, Prompts, Retries, Task, chunk_files, remaining
from clinical_distil.stages import AnswerSettings
from clinical_distil.tasks import TASKS

OUTPUT_COLUMNS = ["output", "finish_reason", "prompt_tokens", "output_tokens", "note_truncated"]


@dataclass
class AnswerRun:
    """An answering run over one prompt table (`input_file`) for the chunked runner (runner.ChunkedStage): the
    script's settings as given (eval-inference.py, synthetic-b2-verify.py, extract.py), the prompt templates they
    name; the answer prompt of each row, the outputs on the row."""

    settings: AnswerSettings
    input_file: str  # the prompt table's name, which its chunk files and manifest carry
    templates: PromptTemplates | None = None  # the answer prompt's wording (None: the shipped templates)

    label: ClassVar[str] = "eval_inference"
    source: ClassVar[str] = "the eval file"
    exclusive_rows: ClassVar[bool] = True  # files of other rows would be mixed into an evaluation
    retries: ClassVar[Retries] = Retries()  # an answer is kept as it comes

    @property
    def naming(self) -> layout.AnswerFiles:
        return layout.AnswerFiles(self.input_file)

    @property
    def series(self) -> list[str]:
        return [self.input_file]

    @property
    def answer_sampling(self) -> Sampling:
        """The sampling asked for, constrained to the answer's JSON object with --structured_output."""
        if not self.settings.structured_output:
            return self.settings.sampling
        return Sampling(**{**self.settings.sampling.__dict__, "json_schema": answer_schema()})

    def plan(self, folder: Path, chunks: list[Chunk], start_row: int, stop: int) -> tuple[list[Task], int]:
        todo = plan_chunks(folder, self.input_file, chunks, start_row, stop, self.settings.overwrite)
        return ([Task(index, low, high, self.series) for index, low, high in todo],
                len(chunks) - len({index for index, _, _ in todo}))

    def pending(self, rows: pd.DataFrame, task: Task) -> int:
        return task.end - task.start

    @cached_property
    def worked(self) -> list[tuple[str, str]]:
        """The worked examples shown before each prompt (--worked_examples; none without it), read once."""
        path = getattr(self.settings, "worked_examples", None)  # (verify and extract answer without them)
        return worked_examples(layout.resolve(path), self.settings.worked_examples_max) if path else []

    def prompts_for(self, engine, rows: pd.DataFrame, task: Task) -> Prompts:
        chunk = rows.iloc[task.start:task.end].copy()
        sampling = self.answer_sampling
        # an engine that answers from the request (the text-only rules) is told each prompt and its question
        details = [{"prompt": row["prompt"], "question": row.get("question")} for row in chunk.to_dict("records")]
        return Prompts(chunk, fit_prompts(engine.tokenizer, list(chunk["prompt"]),
                                          engine.max_model_len - sampling.max_tokens, self.templates, self.worked),
                       sampling, details)

    def unusable(self, result: Generation) -> bool:
        return False

    def answered(self, task: Task, asked: Prompts, results: list[Generation], attempts: list[int],
                 model_id: str) -> tuple[dict[str, pd.DataFrame], dict[str, int]]:
        """The input rows with OUTPUT_COLUMNS, each output on its own row (matched by position)."""
        chunk = asked.records
        chunk["output"] = [result.text for result in results]
        chunk["finish_reason"] = [result.finish_reason for result in results]
        chunk["prompt_tokens"] = [result.prompt_tokens for result in results]
        chunk["output_tokens"] = [result.output_tokens for result in results]
        chunk["note_truncated"] = [item.note_truncated for item in asked.fitted]
        shown = sum((len(item.messages) - 2) // 2 for item in asked.fitted)  # worked examples: a user and a reply each
        return {self.input_file: chunk}, {
            "answered": len(chunk), "output_tokens": int(chunk["output_tokens"].sum()), "worked_examples_shown": shown,
            "notes_shortened": int(chunk["note_truncated"].sum()),
            "length_stops": int((chunk["finish_reason"] == "length").sum())}

    def summary(self, engine, plan: Plan) -> dict[str, Any]:
        return {
            "input_file": self.input_file, "rows": [plan.start_row, plan.stop], "chunk_size": self.settings.chunk_size,
            "chunks": [index for index, _ in plan.chunks], "shard": [plan.shard_index, plan.num_shards],
            "sampling": {key: value for key, value in self.settings.sampling.__dict__.items() if key != "json_schema"},
            "structured_output": self.settings.structured_output, "max_model_len": engine.max_model_len,
            "worked_examples": getattr(self.settings, "worked_examples", None),
            "gpus": gpus_held(engine), "skipped_chunks": plan.done}

    def session(self, counts: dict[str, int], seconds: float, phase_seconds: dict[str, float]) -> dict[str, Any]:
        return {**{key: counts.get(key, 0) for key in ("answered", "notes_shortened", "length_stops",
                                                         "output_tokens", "worked_examples_shown")},
                "wall_seconds": seconds}

    def figures(self, merged: dict[str, Any], done: int) -> dict[str, Any]:
        merged["skipped_chunks"] = done  # (the manifest has it from the summary; a session's figures from here)
        merged["seconds_per_example"] = (round(merged["wall_seconds"] / merged["answered"], 4)
                                         if merged["answered"] else None)
        merged["output_tokens_per_second"] = (round(merged["output_tokens"] / merged["wall_seconds"], 2)
                                              if merged["answered"] and merged["wall_seconds"] else None)
        return merged


# identifiers read as written: n2c2 patient "0020" must not become 20, or its exported file would miss the gold
IDENTIFIER_DTYPES = {"patient": str}


def load_eval_rows(path: Path, dataset_name: str) -> pd.DataFrame:
    task = TASKS.get(dataset_name)
    notebook = task.preprocess_notebook.relative_to(REPO_ROOT) if task else "the task's *-a-preprocess.ipynb"
    return read_csv(path, required=["id", "prompt"], what="evaluation prompts", keep_default_na=False,
                    dtype=IDENTIFIER_DTYPES, hint=f"make it with {notebook}")


def answer_files(output_dir: Path, input_file: str) -> list[ChunkFile]:
    """The chunk files of one prompt table in a model's folder, each with the rows it holds."""
    return chunk_files(output_dir, layout.AnswerFiles(input_file)).get(input_file, [])


def read_chunk(item: ChunkFile, **kwargs) -> pd.DataFrame:
    """One chunk file, checked to hold the rows its name says (a file edited or cut after it was written does not)."""
    frame = read_csv(item.path, what="eval-inference output", hint="rerun eval-inference.py with --overwrite",
                     **kwargs)
    if len(frame) != item.end - item.start:
        raise InputError(f"{item.path} holds {len(frame)} rows but its name says {item.end - item.start} (rows "
                         f"{item.start}-{item.end - 1}): it was changed after eval-inference.py wrote it; rerun "
                         "eval-inference.py with --overwrite")
    return frame


def plan_chunks(output_dir: Path, input_file: str, mine: list[Chunk], start_row: int, stop: int,
                overwrite: bool) -> list[tuple[int, int, int]]:
    """(chunk index, start, end) of the rows this shard still has to answer (runner.remaining).

    Files of rows outside [start_row, stop) come from a run with other rows: an evaluation would
    mix them in, so they are refused (removed with --overwrite). Without --overwrite only the rows no
    file holds are answered; files whose rows overlap are refused, naming them.
    """
    existing = answer_files(output_dir, input_file)
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
    if not overwrite:
        check_no_overlap(existing, f"eval-inference {input_file}")
        for item in existing:
            read_chunk(item, usecols=[0])
    tasks, _ = remaining(mine, [input_file], {input_file: existing}, overwrite)
    return [(task.index, task.start, task.end) for task in tasks]


def conversation(prompt: str, templates: PromptTemplates | None = None) -> list[dict[str, str]]:
    return [{"role": "system", "content": (templates or load_templates()).answer_system},
            {"role": "user", "content": prompt}]


def worked_examples(training_set: Path, most: int) -> list[tuple[str, str]]:
    """(user message, reply) of up to `most` worked examples from a stage C training set: one question type after
    another, each type's shortest example first (short notes leave room for more examples beside a long note)."""
    from datasets import load_from_disk

    examples = load_from_disk(str(training_set)).to_pandas()
    examples["user"] = [next(message["content"] for message in list(prompt)[::-1] if message["role"] == "user")
                        for prompt in examples["prompt"]]
    examples["length"] = examples["user"].str.len() + examples["output"].str.len()
    ranked = examples.sort_values(["length", "id"], kind="stable")
    ranked["rank"] = ranked.groupby("question_type", sort=False).cumcount()
    chosen = ranked.sort_values(["rank", "length", "id"], kind="stable").head(most)
    return list(zip(chosen["user"], chosen["output"]))


def with_worked_examples(tokenizer, conversations: Sequence[Conversation], worked: Sequence[tuple[str, str]],
                         max_prompt_tokens: int) -> list[FittedPrompt | None]:
    """Each conversation with as many of the worked examples (in order) as fit `max_prompt_tokens` beside its whole
    prompt, as earlier turns, rendered once in one batch; None where not even one fits."""
    from clinical_distil.chat import render_batch

    counts = range(len(worked), 0, -1)
    candidates = [messages[:1] + [turn for user, reply in worked[:count] for turn in
                                  ({"role": "user", "content": user}, {"role": "assistant", "content": reply})]
                  + messages[1:] for messages in conversations for count in counts]
    texts, rendered = render_batch(tokenizer, candidates)
    fitted: list[FittedPrompt | None] = []
    for start in range(0, len(candidates), len(counts)):
        fitted.append(next((FittedPrompt(candidates[index], prompt_ids=rendered[index], prompt_text=texts[index])
                            for index in range(start, start + len(counts))
                            if len(rendered[index]) <= max_prompt_tokens), None))
    return fitted


def fit_prompts(tokenizer, prompts: Sequence[str], max_prompt_tokens: int, templates: PromptTemplates | None = None,
                worked: Sequence[tuple[str, str]] = ()) -> list[FittedPrompt]:
    """The conversations, each note shortened (never the instructions) where it does not fit the context; with
    `worked` examples, as many of them before each prompt as fit beside its whole note.

    A prompt of one's own, without a note block, is sent as it is.
    """
    conversations = [conversation(prompt, templates) for prompt in prompts]
    fitted = with_worked_examples(tokenizer, conversations, worked, max_prompt_tokens) if worked else \
        [None] * len(prompts)
    plain = [index for index, item in enumerate(fitted) if item is None]
    for index, item in zip(plain, fit_notes(tokenizer, [(conversations[index], note_of(prompts[index], templates))
                                                        for index in plain], max_prompt_tokens)):
        fitted[index] = item
    return fitted


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


def answering_engine(settings: AnswerSettings, model_id: str, adapter: str | None, prompts: int):
    """The engine a script's AnswerSettings ask for, with `model_id` (and a LoRA `adapter`) loaded, to answer
    `prompts` prompts (vLLM skips compiling when they are too few to pay for it: --vllm_compile auto)."""
    from clinical_distil.backends import load_engine
    from clinical_distil.engines import vllm_start_mode

    return load_engine(model_id, engine=settings.engine, max_model_len=settings.max_model_len,
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
