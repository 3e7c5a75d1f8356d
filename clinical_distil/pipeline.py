"""The whole job as one sequence of stage commands (run-pipeline.py).

The driver runs the same scripts and notebooks a researcher runs one by one; this module
only chooses their arguments, decides which steps are finished from the files on disk,
times each stage and records the run in `reports/{run}/run.json`. No stage logic lives
here: what a stage does stays in its script, notebook and library module.

A step is finished when its output files exist and are newer than its inputs (as make
does), and, for the two generation steps, when their manifest covers the rows asked for.
An interrupted run therefore resumes where it stopped; stage A and eval-inference also
resume inside a step, chunk by chunk.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from clinical_distil import inference, synthetic
from clinical_distil.files import REPO_ROOT, InputError, data_root, resolve, write_text
from clinical_distil.notes import NOTE_COLUMNS, detect_format, notes_path
from clinical_distil.postprocess import COMBOS, DIFFICULTIES, combo_path, stage_b_paths

log = logging.getLogger(__name__)

STAGES = ("select", "generate", "postprocess", "prepare", "finetune", "merge", "eval-preprocess", "eval-inference",
          "evaluate", "report")
STAGE_FOLDER = REPO_ROOT / "a-generate-synthetic-training-data"


@dataclass(frozen=True)
class EvalTask:
    folder: str
    preprocess: str
    evaluate: str
    raw_setting: str  # the PipelineSettings field naming the raw data folder
    raw_parameter: str  # the preprocess notebook's parameter for it
    rows_setting: str  # the PipelineSettings field limiting the rows answered


EVAL_TASKS = {
    "annotated-synthetic": EvalTask("b-synthetic-eval-task", "annotated_synthetic-a-preprocess.ipynb",
                                    "annotated_synthetic-b-evaluate-performance.ipynb", "annotated_dir", "input_dir",
                                    "annotated_rows"),
    "i2b2": EvalTask("c-i2b2-eval-task", "i2b2-a-preprocess.ipynb", "i2b2-b-evaluate-performance.ipynb", "n2c2_dir",
                     "n2c2_dir", "n2c2_rows"),
    "apixaban": EvalTask("d-apixaban-eval-task", "apixaban-a-preprocess.ipynb", "apixaban-b-evaluate-performance.ipynb",
                         "apixaban_dir", "input_dir", "apixaban_rows"),
}
MODEL_ROLES = ("base", "distilled")


def _setting(default: Any, help_text: str) -> Any:
    return field(default=default, metadata={"help": help_text})


@dataclass
class PipelineSettings:
    """Everything a run is made of; flags and the YAML config file both name these fields."""

    run: str = _setting("", "run name for reports/{run}/, results/{run}/ and models/{run}-distilled "
                            "(default: {student}_{dataset})")
    teacher: str = _setting("meta-llama/Meta-Llama-3.1-70B-Instruct", "teacher model (hub id or local folder)")
    student: str = _setting("meta-llama/Meta-Llama-3.1-8B-Instruct", "student base model (hub id or local folder)")
    notes: str = _setting("data/mimic/NOTEEVENTS.csv.gz", "MIMIC-III NOTEEVENTS / MIMIC-IV-Note discharge file "
                          "(stage 0 selects --num_notes), or an already selected notes_{N}.csv(.gz)")
    num_notes: int = _setting(100000, "discharge summaries to select from a raw MIMIC file")
    dataset: str = _setting("", "stage A folder name (default: N of notes_{N}, or --num_notes)")
    teacher_notes: int | None = _setting(None, "notes the teacher reads, from the first (default: all)")
    questions_per_type: int = _setting(5, "k of the generation prompts (2k yes/no, up to 10 numeric, k per N/A type)")
    generation_max_tokens: int = _setting(4096, "longest teacher reply in tokens")
    structured_output: bool = _setting(False, "constrain teacher replies to the JSON schema")
    engine: str = _setting("auto", "auto (vLLM with a GPU), vllm or transformers; for stage A and eval-inference")
    tensor_parallel_size: int | None = _setting(None, "GPUs per vLLM model (default: all visible)")
    max_model_len: int | None = _setting(None, "context length for generation and inference (default: the model's)")
    batch_size: int = _setting(16, "prompts per batch for the transformers engine")
    combo: str = _setting("all", "question types trained on: all, bool or bool_num")
    min_difficulty: int = _setting(1, "lowest teacher-rated difficulty trained on (1-9)")
    max_seq_length: int = _setting(12000, "longest training example in tokens")
    num_gpus: int | None = _setting(None, "GPUs for fine-tuning (default: all visible; none = CPU, no 4-bit)")
    tasks: str = _setting("annotated-synthetic,i2b2,apixaban", "evaluation tasks, comma-separated")
    annotated_dir: str = _setting("annotated-synthetic", "annotated synthetic CSVs (relative to the data root)")
    n2c2_dir: str = _setting("n2c2-2018-track1", "n2c2 2018 Track 1 folder with train/ and test/ (relative to the "
                                                 "data root)")
    n2c2_split: str = _setting("test", "n2c2 split to evaluate on")
    apixaban_dir: str = _setting("apixaban", "apixaban annotation CSVs (relative to the data root)")
    annotated_rows: int | str = _setting("all", "annotated synthetic prompts answered, from the first")
    n2c2_rows: int | str = _setting("all", "n2c2 prompts answered (13 per patient), from the first")
    apixaban_rows: int | str = _setting("all", "apixaban prompts answered (23 per note), from the first")
    eval_max_tokens: int = _setting(256, "longest answer in tokens at evaluation")
    resamples: int = _setting(1000, "bootstrap resamples for the 95% intervals")
    generate_args: str = _setting("", "more arguments for synthetic-a-create.py, e.g. '--chunk_size 500'")
    finetune_args: str = _setting("", "more arguments for finetune.py, e.g. '--max_steps 300 --padding_free True'")
    eval_args: str = _setting("", "more arguments for eval-inference.py")
    data_dir: str | None = _setting(None, "data root (default data/, or $CLINICAL_DISTIL_DATA)")
    results_dir: str = _setting("results", "fine-tuning runs go to {results_dir}/{run}")
    models_dir: str = _setting("models", "the merged student goes to {models_dir}/{run}-distilled")
    reports_dir: str = _setting("reports", "the report goes to {reports_dir}/{run}/")

    @classmethod
    def from_sources(cls, config: str | None = None, **overrides: Any) -> "PipelineSettings":
        """Defaults, then the YAML config file, then the flags given."""
        values: dict[str, Any] = {}
        if config:
            import yaml

            path = resolve(config)
            if not path.exists():
                raise InputError(f"config file not found: {path}")
            try:
                loaded = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as error:
                raise InputError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from error
            if not isinstance(loaded, dict):
                raise InputError(f"config file {path} must hold a mapping of settings, e.g. 'teacher: MODEL'")
            values.update(loaded)
        values.update({key: value for key, value in overrides.items() if value is not None})
        known = {item.name for item in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"unknown setting(s) {', '.join(unknown)}; run-pipeline.py --help lists them")
        settings = cls(**values)
        settings.check()
        return settings

    def check(self) -> None:
        if isinstance(self.tasks, (list, tuple)):  # fire turns "a,b" into a tuple
            self.tasks = ",".join(self.tasks)
        unknown = [task for task in self.task_list if task not in EVAL_TASKS]
        if unknown:
            raise InputError(f"unknown evaluation task(s) {', '.join(unknown)}; choose from {', '.join(EVAL_TASKS)}")
        if self.combo not in COMBOS:
            raise InputError(f"unknown combo {self.combo!r}; choose from {', '.join(COMBOS)}")
        if self.min_difficulty not in DIFFICULTIES:
            raise InputError(f"--min_difficulty must be 1-9, got {self.min_difficulty}")
        for name in ("annotated_rows", "n2c2_rows", "apixaban_rows"):
            value = getattr(self, name)
            if not (str(value).lower() == "all" or str(value).isdigit() and int(value) > 0):
                raise InputError(f"--{name} must be a positive number of rows or 'all', got {value!r}")

    @property
    def task_list(self) -> list[str]:
        return [task.strip() for task in str(self.tasks).split(",") if task.strip()]


def describe_settings() -> str:
    """The settings as docstring `Args:` lines (`name: help (default X)`), for the driver's --help."""
    return "\n".join(f"    {item.name}: {item.metadata['help']} (default {item.default!r})"
                     for item in dataclasses.fields(PipelineSettings))


def signature_with_settings(function: Callable[..., Any]) -> "inspect.Signature":
    """`function`'s signature with its **settings replaced by one keyword argument per setting (for fire)."""
    signature = inspect.signature(function)
    fixed = [parameter for parameter in signature.parameters.values() if parameter.kind != parameter.VAR_KEYWORD]
    extra = [inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=None)
             for item in dataclasses.fields(PipelineSettings)]
    return signature.replace(parameters=fixed + extra)


@dataclass
class Command:
    argv: list[str]
    env: dict[str, str] = field(default_factory=dict)
    executed_notebook: Path | None = None  # where papermill writes the executed copy of a notebook step

    def shell(self) -> str:
        prefix = " ".join(f"{key}={shlex.quote(value)}" for key, value in self.env.items())
        text = shlex.join(self.argv).replace(sys.executable, "python")
        return f"{prefix} {text}".strip()


@dataclass
class Step:
    label: str
    command: Command | None  # None: work the driver does itself (the report)
    outputs: list[Path]
    inputs: list[Path] = field(default_factory=list)
    # the state of outputs that exist and are newer than the inputs: do they hold every row asked for?
    covers: Callable[[], str] | None = None
    # what redoes the step when its outputs are older than its inputs (the script's --overwrite): run
    # as it is, a script would keep (or refuse to replace) the outputs made from the old inputs
    stale_command: Command | None = None

    def state(self) -> str:
        """"finished", "missing" (outputs not all there), "stale" (older than an input) or "incomplete"."""
        if self.command is None or not self.outputs or not all(path.exists() for path in self.outputs):
            return "missing"
        newest_input = max((path.stat().st_mtime for path in self.inputs if path.exists()), default=0.0)
        if min(path.stat().st_mtime for path in self.outputs) < newest_input:
            return "stale"
        return "finished" if self.covers is None else self.covers()

    def finished(self) -> bool:
        return self.state() == "finished"

    def command_to_run(self, overwrite: bool = False) -> Command:
        """The command that brings the step up to date: its redo command when the outputs are stale."""
        if not overwrite and self.stale_command is not None and self.state() == "stale":
            return self.stale_command
        return self.command


@dataclass
class Stage:
    name: str
    steps: list[Step]
    note: str = ""  # why a stage has no step (e.g. the notes were given already selected)

    def finished(self) -> bool:
        return all(step.finished() for step in self.steps)


@dataclass
class Layout:
    """Where a run's files are; every stage contract path in one place."""

    settings: PipelineSettings
    root: Path
    notes_file: Path
    dataset: str
    select_from: Path | None  # the raw MIMIC file when stage 0 has to run

    @property
    def run(self) -> str:
        return self.settings.run

    @property
    def chunks_dir(self) -> Path:
        return self.root / "synthetic-output" / self.dataset

    @property
    def generation_manifest(self) -> Path:
        return synthetic.manifest_path(self.chunks_dir)

    @property
    def raw_dir(self) -> Path:
        return self.root / "synthetic-raw"

    @property
    def training_name(self) -> str:
        return f"{self.settings.combo}_{self.settings.min_difficulty}"

    @property
    def finetune_dir(self) -> Path:
        return resolve(self.settings.results_dir) / self.run

    @property
    def merged_dir(self) -> Path:
        return resolve(self.settings.models_dir) / f"{self.run}-distilled"

    @property
    def report_dir(self) -> Path:
        return resolve(self.settings.reports_dir) / self.run

    def eval_file_name(self, task: str) -> str:
        return self.settings.n2c2_split if task == "i2b2" else "prompts"

    def eval_file(self, task: str) -> Path:
        return self.root / "eval-data" / task / f"{self.eval_file_name(task)}.csv"

    def model_name(self, role: str) -> str:
        return f"{self.run}-{role}"

    def model_id(self, role: str) -> str:
        return self.settings.student if role == "base" else str(self.merged_dir)

    def outputs_dir(self, task: str, role: str) -> Path:
        return self.root / "outputs" / task / self.model_name(role)

    def inference_manifest(self, task: str, role: str) -> Path:
        return inference.manifest_path(self.outputs_dir(task, role), self.eval_file_name(task))

    def evaluation_dir(self, task: str) -> Path:
        return self.root / "outputs" / task / "evaluation" / self.run


def locate_notes(settings: PipelineSettings, root: Path) -> tuple[Path, str, Path | None]:
    """(selected notes file, stage A dataset name, raw file stage 0 selects from or None)."""
    given = resolve(settings.notes)
    if not given.exists():
        raise InputError(f"notes file not found: {given}; pass --notes with a MIMIC-III NOTEEVENTS.csv(.gz), "
                         "a MIMIC-IV-Note discharge.csv(.gz) or a selected notes_{N}.csv(.gz)")
    try:
        columns = list(pd.read_csv(given, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as error:
        raise InputError(f"cannot read notes file {given}: {str(error).splitlines()[0]}") from error
    if set(NOTE_COLUMNS) <= set(columns) and "note_type" not in columns:
        match = re.fullmatch(r"notes_(.+?)\.csv(\.gz)?", given.name)
        dataset = settings.dataset or (match.group(1) if match else given.name.split(".")[0])
        return given, dataset, None
    detect_format(columns)  # a raw MIMIC file, or a one-line error naming what is missing
    dataset = settings.dataset or str(settings.num_notes)
    return notes_path(root, dataset), dataset, given


def layout_for(settings: PipelineSettings) -> Layout:
    root = data_root(settings.data_dir)
    notes_file, dataset, select_from = locate_notes(settings, root)
    if not settings.run:
        settings.run = f"{Path(str(settings.student).rstrip('/')).name}_{dataset}"
    return Layout(settings, root, notes_file, dataset, select_from)


def _script(path: Path, *args: Any) -> list[str]:
    return [sys.executable, str(path), *[str(arg) for arg in args]]


def _notebook(layout: Layout, folder: str, name: str, parameters: dict[str, Any]) -> Command:
    """papermill run of a stage notebook; the executed copy goes to the report's notebooks/ folder."""
    executed = layout.report_dir / "notebooks" / name
    return Command([sys.executable, "-m", "papermill", "--cwd", str(REPO_ROOT / folder), str(REPO_ROOT / folder / name),
                    str(executed), "--log-level", "WARNING", "-y", json.dumps(parameters)], executed_notebook=executed)


def notebook_error(executed: Path) -> tuple[str, str] | None:
    """(exception name, message) of the cell that stopped an executed notebook, if any."""
    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = str(output.get("evalue", "")).strip()
                return output.get("ename", ""), message.splitlines()[0] if message else ""
    return None


def _optional(flag: str, value: Any) -> list[str]:
    return [] if value is None else [flag, str(value)]


def _manifest_covers(manifest: Path, count_key: str, limit: int | None, count_file: Callable[[], int | None],
                     input_file: Path | None = None, more_is_stale: bool = False) -> Callable[[], str]:
    """The state of a generation step from its manifest: "finished" when it covers rows [0, min(limit, rows
    in the file)) of `input_file` (where the manifest records which file it read); "incomplete" when it
    covers fewer (a rerun continues); "stale" when it was made from another file or, with
    `more_is_stale` (evaluation answers, which are scored as they lie), covers more rows than asked."""

    def covers() -> str:
        recorded = json.loads(manifest.read_text())
        if input_file is not None and Path(str(recorded.get("notes_file", ""))) != input_file:
            return "stale"
        if recorded.get("complete") is False:  # a session was stopped before its last chunk
            return "incomplete"
        available = recorded.get(count_key)
        if available is None:  # written before the manifests recorded it
            available = count_file()
        if available is None:
            return "incomplete"
        wanted = available if limit is None else min(limit, available)
        start, stop = (list(recorded.get("rows") or [0, 0]) + [0, 0])[:2]
        if start != 0 or stop < wanted:
            return "incomplete" if start == 0 else "stale"
        return "stale" if more_is_stale and stop > wanted else "finished"

    return covers


def _count_rows(path: Path, column: str) -> int | None:
    """Rows of a table, for manifests written before they recorded it."""
    return len(pd.read_csv(path, usecols=[column])) if path.exists() else None


def _rows(value: int | str) -> int | None:
    return None if str(value).lower() == "all" else int(value)


def plan(layout: Layout, overwrite: bool = False, cuda_devices: int | None = None) -> list[Stage]:
    """Every stage with its steps, commands and the files that mark them finished."""
    settings, root = layout.settings, layout.root
    redo = ["--overwrite"] if overwrite else []
    stages: list[Stage] = []

    if layout.select_from is None:
        stages.append(Stage("select", [], note=f"notes given already selected: {layout.notes_file}"))
    else:
        select = _script(STAGE_FOLDER / "synthetic-0-select-notes.py", "--source", layout.select_from,
                         "--num_notes", settings.num_notes, "--output", layout.notes_file)
        stages.append(Stage("select", [Step(
            "select notes", Command(select + redo), outputs=[layout.notes_file], inputs=[layout.select_from],
            stale_command=Command(select + ["--overwrite"]))]))

    manifest = layout.generation_manifest
    generate = _script(STAGE_FOLDER / "synthetic-a-create.py", "--model_id", settings.teacher,
                       "--dataset", layout.dataset, "--notes_file", layout.notes_file,
                       "--output_dir", layout.chunks_dir, "--questions_per_type", settings.questions_per_type,
                       "--max_tokens", settings.generation_max_tokens, "--engine", settings.engine,
                       "--batch_size", settings.batch_size,
                       *_optional("--limit", settings.teacher_notes),
                       *_optional("--tensor_parallel_size", settings.tensor_parallel_size),
                       *_optional("--max_model_len", settings.max_model_len),
                       *(["--structured_output"] if settings.structured_output else []),
                       *shlex.split(settings.generate_args))
    stages.append(Stage("generate", [Step(
        "teacher writes question/answer pairs", Command(generate + redo), outputs=[manifest],
        inputs=[layout.notes_file], stale_command=Command(generate + ["--overwrite"]),
        covers=_manifest_covers(manifest, "notes_in_file", settings.teacher_notes,
                                lambda: _count_rows(layout.notes_file, "note_id"), input_file=layout.notes_file))]))

    # a step only runs when its output is missing, stale or asked for again, so the notebooks may replace it
    stages.append(Stage("postprocess", [Step(
        "parse, check and join (stage B)",
        _notebook(layout, STAGE_FOLDER.name, "synthetic-b-post_process_join_notes.ipynb",
                  {"data_dir": str(root), "dataset": layout.dataset, "notes_file": str(layout.notes_file),
                   "overwrite": True}),
        outputs=stage_b_paths(layout.raw_dir), inputs=[manifest])]))

    name = layout.training_name
    training_files = [layout.raw_dir / f"{split}_{name}.arrow" / "dataset_info.json" for split in ("train", "test")]
    training_files += [layout.raw_dir / f"{split}_{name}.csv.gz" for split in ("train", "test")]
    stages.append(Stage("prepare", [Step(
        "balance, format and split (stage C)",
        _notebook(layout, STAGE_FOLDER.name, "synthetic-c-prep-training.ipynb",
                  {"data_dir": str(root), "combo": settings.combo, "min_difficulty": settings.min_difficulty,
                   "tokenizer": settings.student, "max_seq_length": settings.max_seq_length, "overwrite": True}),
        outputs=training_files, inputs=[combo_path(layout.raw_dir, settings.combo, settings.min_difficulty)])]))

    finetune_dir = layout.finetune_dir
    finetune_args = ["--model_id", settings.student, "--input_file", settings.combo,
                     "--min_difficulty", settings.min_difficulty, "--max_seq_length", settings.max_seq_length,
                     "--data_dir", root, "--output_dir", finetune_dir, *shlex.split(settings.finetune_args)]
    resume: list[str] = []
    if overwrite:
        resume = ["--overwrite"]
    elif any(finetune_dir.glob("checkpoint-*")) and not (finetune_dir / "final").exists():
        resume = ["--resume_from_checkpoint", "last"]  # an interrupted run continues
    gpus = settings.num_gpus if settings.num_gpus is not None else (cuda_devices or 0)

    def finetune_command(extra: list[str]) -> Command:
        arguments = [*map(str, finetune_args), *extra]
        if gpus > 0:
            # the published launch: accelerate + DeepSpeed ZeRO-2 over several GPUs, plain accelerate on one
            config = "deep_speed2.yaml" if gpus > 1 else "single_gpu.yaml"
            return Command(["bash", str(STAGE_FOLDER / "synthetic-d-run-finetune.sh"), *arguments],
                           env={"MODEL_ID": settings.student, "INPUT_FILE": settings.combo,
                                "MIN_DIFFICULTY": str(settings.min_difficulty), "NUM_PROCESSES": str(gpus),
                                "CONFIG": str(REPO_ROOT / "configs" / config),
                                "LOG_DIR": str(layout.report_dir / "logs")})
        return Command(_script(REPO_ROOT / "finetune.py", *arguments))

    stages.append(Stage("finetune", [Step(
        "fine-tune the student (LoRA)", finetune_command(resume),
        outputs=[finetune_dir / "final" / "adapter_config.json", finetune_dir / "training_summary.json"],
        inputs=[layout.raw_dir / f"train_{name}.csv.gz"],
        # training data newer than the adapter: train again from the start, not from an old checkpoint
        stale_command=finetune_command(["--overwrite"]))]))

    stages.append(Stage("merge", [Step(
        "merge the adapter (stage E)",
        Command(_script(STAGE_FOLDER / "synthetic-e-convert-peft.py", "--adapter_dir", finetune_dir / "final",
                        "--output_dir", layout.merged_dir, *(["--overwrite"] if overwrite or
                                                             (layout.merged_dir / "config.json").exists() else []))),
        outputs=[layout.merged_dir / "config.json"], inputs=[finetune_dir / "training_summary.json"])]))

    preprocess_steps, inference_steps, evaluate_steps = [], [], []
    for task in settings.task_list:
        spec = EVAL_TASKS[task]
        raw = Path(os.path.normpath(resolve(getattr(settings, spec.raw_setting), base=root)))
        parameters: dict[str, Any] = {"data_dir": str(root), spec.raw_parameter: str(raw), "overwrite": True}
        if task == "i2b2":
            parameters["splits"] = [settings.n2c2_split]
        preprocess_steps.append(Step(f"{task} prompts", _notebook(layout, spec.folder, spec.preprocess, parameters),
                                     outputs=[layout.eval_file(task)]))
        limit = _rows(getattr(settings, spec.rows_setting))
        manifests = []
        for role in MODEL_ROLES:
            outputs_dir = layout.outputs_dir(task, role)
            manifests.append(layout.inference_manifest(task, role))
            model_inputs = [layout.eval_file(task)] + ([layout.merged_dir / "config.json"] if role == "distilled" else [])
            answer = _script(REPO_ROOT / "eval-inference.py", "--model_id", layout.model_id(role),
                             "--dataset_name", task, "--input_file", layout.eval_file_name(task),
                             "--num_inference", "all" if limit is None else limit,
                             "--model_name", layout.model_name(role), "--output_dir", outputs_dir,
                             "--max_output_tokens", settings.eval_max_tokens, "--engine", settings.engine,
                             "--batch_size", settings.batch_size,
                             *_optional("--tensor_parallel_size", settings.tensor_parallel_size),
                             *_optional("--max_model_len", settings.max_model_len),
                             "--data_dir", root, *shlex.split(settings.eval_args))
            inference_steps.append(Step(
                f"{task}: {role} model answers", Command(answer + redo),
                # a model (or prompts) newer than its answers: every answer is redone, none of the old kept
                stale_command=Command(answer + ["--overwrite"]),
                outputs=[manifests[-1]], inputs=model_inputs,
                covers=_manifest_covers(manifests[-1], "rows_in_file", limit, more_is_stale=True, count_file=
                                        lambda task=task: _count_rows(layout.eval_file(task), "id"))))
        evaluation_parameters: dict[str, Any] = {
            "data_dir": str(root), "input_file": layout.eval_file_name(task),
            "models": [layout.model_name(role) for role in MODEL_ROLES], "resamples": settings.resamples,
            "results_dir": str(layout.evaluation_dir(task))}
        if task == "i2b2":
            evaluation_parameters["gold_dir"] = str(raw / settings.n2c2_split)
        evaluate_steps.append(Step(f"{task}: score both models",
                                   _notebook(layout, spec.folder, spec.evaluate, evaluation_parameters),
                                   outputs=[layout.evaluation_dir(task) / "summary.csv"], inputs=manifests))
    stages.append(Stage("eval-preprocess", preprocess_steps))
    stages.append(Stage("eval-inference", inference_steps))
    stages.append(Stage("evaluate", evaluate_steps))
    stages.append(Stage("report", [Step("write the report", None, outputs=[layout.report_dir / "report.md"])]))
    return stages


def stage_range(from_stage: str | None, to_stage: str | None) -> list[str]:
    for name in (from_stage, to_stage):
        if name is not None and name not in STAGES:
            raise InputError(f"unknown stage {name!r}; stages in order: {', '.join(STAGES)}")
    first = STAGES.index(from_stage) if from_stage else 0
    last = STAGES.index(to_stage) if to_stage else len(STAGES) - 1
    if first > last:
        raise InputError(f"--from_stage {from_stage} comes after --to_stage {to_stage}")
    return list(STAGES[first:last + 1])


HEARTBEAT_SECONDS = 15.0  # how often run.json records a running stage's time (a killed driver loses less)


def _run_child(command: Command, env: dict[str, str], heartbeat: Callable[[], Any]) -> int:
    """Run one step's command to its end, calling `heartbeat` every HEARTBEAT_SECONDS; its exit code."""
    process = subprocess.Popen(command.argv, env=env, cwd=REPO_ROOT)
    try:
        while True:
            try:
                return process.wait(timeout=HEARTBEAT_SECONDS)
            except subprocess.TimeoutExpired:
                heartbeat()
    except BaseException:
        try:  # Ctrl-C in a terminal reaches the child too: let it stop and keep what it finished
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.terminate()
            process.wait()
        raise


class StageFailed(Exception):
    def __init__(self, stage: str, step: str, returncode: int, reason: str = ""):
        why = f": {reason}" if reason else f" (exit code {returncode}); the message above says why"
        super().__init__(f"stage {stage} failed at '{step}'{why}. Finished work is kept: fix it and rerun the same "
                         "command to resume")
        self.returncode = returncode


def read_run_state(path: Path) -> dict[str, Any]:
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            log.warning("ignoring unreadable run state %s", path)
    return {"stages": {}}


def run_stages(layout: Layout, stages: list[Stage], selected: list[str], overwrite: bool = False,
               announce: Callable[[str], None] = print, write_report: Callable[[Layout], Any] | None = None,
               dry_run: bool = False) -> dict[str, Any]:
    """Run the selected stages in order, skipping finished steps; returns the run state."""
    state_path = layout.report_dir / "run.json"
    state = read_run_state(state_path)
    state["run"] = layout.run
    state["settings"] = dataclasses.asdict(layout.settings)
    state["data_root"] = str(layout.root)
    state["notes_file"] = str(layout.notes_file)
    state["dataset"] = layout.dataset
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def save() -> None:
        write_text(json.dumps(state, indent=2, default=str) + "\n", state_path)

    if not dry_run:
        (layout.report_dir / "notebooks").mkdir(parents=True, exist_ok=True)  # papermill writes executed copies there
    started = time.time()
    for position, stage in enumerate(stages, start=1):
        prefix = f"[{position}/{len(stages)}] {stage.name}"
        if stage.name not in selected:
            continue
        record = state["stages"].setdefault(stage.name, {})
        if not stage.steps:
            announce(f"{prefix}: nothing to do ({stage.note})")
            record.update(status="given", note=stage.note)
            continue
        if stage.name == "report":
            if dry_run:
                announce(f"{prefix}: would write {layout.report_dir / 'report.md'}")
                continue
            stage_started = time.time()
            record.update(status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"))
            save()  # the report reads the stage times from run.json
            if write_report is not None:
                write_report(layout)
            record.update(status="ran", seconds=round(time.time() - stage_started, 1))
            save()
            announce(f"{prefix}: {layout.report_dir / 'report.md'} ({record['seconds']:.1f}s)")
            continue
        todo = [step for step in stage.steps if overwrite or not step.finished()]
        if not todo:
            announce(f"{prefix}: skipped, outputs exist" +
                     (f" (ran in {record['seconds']:.0f}s earlier)" if record.get("seconds") else ""))
            record["status"] = "skipped"
            continue
        commands = {step.label: step.command_to_run(overwrite) for step in todo}
        if dry_run:
            for step in stage.steps:
                mark = "run " if step in todo else "done"
                command = commands.get(step.label, step.command)
                note = " (stale: an input changed since it ran)" if command is step.stale_command else ""
                announce(f"{prefix} [{mark}] {step.label}{note}: {command.shell()}")
            continue
        announce(f"{prefix}: {len(todo)} of {len(stage.steps)} step(s) to run")
        # an interrupted stage's seconds count towards the stage; a finished one redone starts again
        earlier = float(record.get("seconds") or 0) if record.get("status") in ("running", "failed", "interrupted") \
            else 0.0
        stage_started = time.time()
        record.update(status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"), steps=record.get("steps", {}),
                      seconds=round(earlier, 1))
        save()

        def elapsed() -> float:
            return round(earlier + time.time() - stage_started, 1)

        for step in todo:
            command = commands[step.label]
            if command is step.stale_command:
                announce(f"{prefix}: '{step.label}' is older than its inputs; redoing it with --overwrite")
            step_started = time.time()
            log.info("%s: %s", step.label, command.shell())
            try:
                returncode = _run_child(command, {**env, **command.env}, heartbeat=lambda: (
                    record.update(seconds=elapsed()), save()))
            except KeyboardInterrupt:
                record.update(status="interrupted", seconds=elapsed())
                save()
                raise
            record["steps"][step.label] = {"command": command.shell(), "returncode": returncode,
                                           "seconds": round(time.time() - step_started, 1)}
            if returncode != 0:
                record.update(status="failed", seconds=elapsed())
                save()
                reason = ""
                error = notebook_error(command.executed_notebook) if command.executed_notebook else None
                if error:
                    reason = f"{error[1]} (in {command.executed_notebook})"
                    returncode = 2 if error[0] == "InputError" else returncode  # bad input, as the scripts say
                raise StageFailed(stage.name, step.label, returncode, reason)
        record.update(status="ran", seconds=elapsed())
        save()
        announce(f"{prefix}: done in {record['seconds']:.1f}s (run total {time.time() - started:.0f}s)")
    return state
