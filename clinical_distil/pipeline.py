"""The whole job as one sequence of stage commands (run-pipeline.py).

The driver runs the same scripts and notebooks a researcher runs one by one; this module only
chooses their arguments, decides which steps are finished from the files on disk, times each
stage and records the run in `reports/{run}/run.json`. No stage logic lives here: what a stage
does stays in its script, notebook and library module.

Settings come in two kinds. A few belong to the run and reach every stage that has a flag of that
name (`data_dir`, `engine`, `input_file`, ...), or name the models and the notes (`teacher`,
`student`, `notes`). Everything else is a stage's own flag, given under the stage's name with the
script's own spelling (`generate: {max_tokens: 512}`), checked against the stage's declaration
(clinical_distil/stages.py) before anything runs. The driver builds every command from those
declarations.

A step is finished when its output files exist and are newer than its inputs (as make does),
and, for the two generation steps, when their manifest covers the rows asked for. An interrupted
run therefore resumes where it stopped; stage A and eval-inference also resume inside a step,
chunk by chunk. A step older than its inputs is redone with its script's --overwrite.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shlex
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from clinical_distil import layout
from clinical_distil.files import FolderLock, InputError, write_text
from clinical_distil.guard import GRACE_SECONDS
from clinical_distil.report import read_run_state
from clinical_distil.layout import MODEL_ROLES, REPO_ROOT, STAGES, RunLayout
from clinical_distil.notes import NOTE_COLUMNS, detect_format
from clinical_distil.settings import Settings, as_flags, setting
from clinical_distil.stages import (STAGE_SETTINGS, CreateSettings, EvalInferenceSettings, FinetuneSettings,
                                    MergeSettings, PostprocessSettings, PrepareSettings, SelectSettings,
                                    VerifySettings, evaluate_settings, preprocess_settings)
from clinical_distil.tasks import TASKS, get_task

log = logging.getLogger(__name__)

# run-level settings that reach every stage with a flag of the same name
SHARED = {
    "data_dir": ("select", "generate", "postprocess", "verify", "prepare", "finetune", "eval_inference"),
    "engine": ("generate", "verify", "eval_inference"), "batch_size": ("generate", "verify", "eval_inference"),
    "tensor_parallel_size": ("generate", "verify", "eval_inference"),
    "max_model_len": ("generate", "verify", "eval_inference"),
    "prompt_dir": ("generate", "verify", "prepare", "finetune", "eval_inference"),
    "input_file": ("prepare", "finetune"), "min_difficulty": ("prepare", "finetune"),
    "max_seq_length": ("prepare", "finetune"),
}
# flags the driver sets itself in each stage (paths, models, names): a section may not set them
OWNED = {
    "select": ("source", "output"), "generate": ("model_id", "dataset", "notes_file", "output_dir"),
    "postprocess": ("dataset", "notes_file"), "prepare": ("tokenizer",),
    "finetune": ("model_id", "output_dir", "variant", "resume_from_checkpoint"), "merge": ("adapter_dir", "output_dir"),
    "eval_inference": ("model_id", "dataset_name", "input_file", "num_inference", "model_name", "output_dir",
                       "adapter", "base_model_name"),
    "evaluate": ("input_file", "models", "results_dir", "gold_dir"),
}
# settings of earlier versions of the driver, and where they are now
MOVED = {
    "num_notes": "select: {num_notes: N}", "teacher_notes": "generate: {limit: N}",
    "questions_per_type": "generate: {questions_per_type: N}", "generation_max_tokens": "generate: {max_tokens: N}",
    "structured_output": "generate: {structured_output: true}", "combo": "input_file: COMBO",
    "generate_args": "generate: {flag: value, ...}", "finetune_args": "finetune: {flag: value, ...}",
    "eval_args": "eval_inference: {flag: value, ...}", "eval_max_tokens": "eval_inference: {max_output_tokens: N}",
    "resamples": "evaluate: {resamples: N}", "annotated_dir": "eval: {annotated-synthetic: {input_dir: DIR}}",
    "n2c2_dir": "eval: {i2b2: {input_dir: DIR}}", "apixaban_dir": "eval: {apixaban: {input_dir: DIR}}",
    "n2c2_split": "eval: {i2b2: {input_file: SPLIT}}", "annotated_rows": "eval: {annotated-synthetic: "
    "{num_inference: N}}", "n2c2_rows": "eval: {i2b2: {num_inference: N}}",
    "apixaban_rows": "eval: {apixaban: {num_inference: N}}",
}
EVAL_KEYS = ("input_dir", "input_file", "num_inference")  # what a task's entry under `eval` may set
DISTILLED_AS = ("adapter", "merged")


def read_yaml_config(path: Path) -> Any:
    """A YAML settings file, refused in one line when it is not text, not YAML, or names a key twice (YAML's
    loaders keep the last of two silently: a setting given twice is a mistake to show, not to guess)."""
    import yaml

    class UniqueKeyLoader(yaml.SafeLoader):
        pass

    def mapping(loader: yaml.SafeLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
        seen: set = set()
        for key_node, _ in node.value:
            key = loader.construct_object(key_node, deep=deep)
            if key in seen:
                raise InputError(f"config file {path} sets {key!r} twice (line {key_node.start_mark.line + 1}); "
                                 "keep one")
            seen.add(key)
        return loader.construct_mapping(node, deep)

    UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, mapping)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        text = None
    if text is None or "\0" in text:
        raise InputError(f"config file {path} is not a text file; give a YAML file of settings, e.g. 'teacher: MODEL'")
    try:
        return yaml.load(text, Loader=UniqueKeyLoader) or {}
    except yaml.YAMLError as error:
        raise InputError(f"config file {path} is not valid YAML: {str(error).splitlines()[0]}") from error


@dataclass
class RunSettings(Settings):
    """run-pipeline.py: the whole job from notes to report; each stage's own flags go under its name."""

    run: str = setting("", "run name for reports/{run}/, results/{run}/ and models/{run}-distilled (default: "
                       "{student}_{dataset})")
    teacher: str = setting("meta-llama/Meta-Llama-3.1-70B-Instruct", "teacher model (stage A's --model_id)")
    student: str = setting("meta-llama/Meta-Llama-3.1-8B-Instruct", "student base model (finetune.py's --model_id, "
                           "stage C's tokenizer, the base model evaluated)")
    notes: str = setting("data/mimic/NOTEEVENTS.csv.gz", "MIMIC-III NOTEEVENTS / MIMIC-IV-Note discharge file "
                         "(stage 0 selects select.num_notes), or an already selected notes_{N}.csv(.gz)")
    dataset: str = setting("", "stage A folder name (default: N of notes_{N}, or select.num_notes)")
    tasks: list = setting(list(TASKS), "evaluation tasks, comma-separated")
    num_gpus: int | None = setting(None, "GPUs for fine-tuning (default: all visible; 0 = CPU, no 4-bit)", minimum=0)
    data_dir: str | None = setting(None, "data root (default data/, or $CLINICAL_DISTIL_DATA); every stage's "
                                   "--data_dir")
    results_dir: str = setting(layout.RESULTS.name, "fine-tuning runs go to {results_dir}/{run}")
    models_dir: str = setting(layout.MODELS.name, "the merged student goes to {models_dir}/{run}-distilled")
    reports_dir: str = setting(layout.REPORTS.name, "the report goes to {reports_dir}/{run}/")
    engine: str = setting("auto", "auto (vLLM with a GPU), vllm or transformers; stage A's and eval-inference's "
                          "--engine", choices=("auto", "vllm", "transformers"))
    batch_size: int = setting(16, "prompts per batch for the transformers engine (stage A, eval-inference)",
                              minimum=1)
    tensor_parallel_size: int | None = setting(None, "GPUs per vLLM model (default: all visible)", minimum=1)
    max_model_len: int | None = setting(None, "context length for stage A and eval-inference (default: the "
                                        "model's)", minimum=1)
    input_file: str = setting("all", "question types trained on: all, bool or bool_num (stage C's and "
                              "finetune.py's --input_file)", choices=("all", "bool", "bool_num"))
    min_difficulty: int = setting(1, "lowest teacher-rated difficulty trained on, 1-9 (stage C, finetune.py)",
                                  minimum=1, maximum=9)
    max_seq_length: int = setting(12000, "longest training example in tokens (stage C, finetune.py)", minimum=1)
    prompt_dir: str | None = setting(None, "prompt templates of one's own (stage A, C, D, the evaluation prompts)")
    select: dict = setting({}, "synthetic-0-select-notes.py flags, e.g. {num_notes: 24}")
    generate: dict = setting({}, "synthetic-a-create.py flags, e.g. {max_tokens: 512, limit: 4}")
    postprocess: dict = setting({}, "stage B notebook parameters, e.g. {require_source_in_note: true}")
    verify: dict = setting({}, "synthetic-b2-verify.py flags, e.g. {model_id: models/verifier}; stage B2 runs when "
                           "prepare has require_verified: true (the verifier: the teacher unless model_id is given)")
    prepare: dict = setting({}, "stage C notebook parameters, e.g. {hardest: true}")
    finetune: dict = setting({}, "finetune.py flags, e.g. {max_steps: 300, padding_free: true}")
    merge: dict = setting({}, "synthetic-e-convert-peft.py flags, e.g. {dtype: float16}")
    eval_inference: dict = setting({}, "eval-inference.py flags for every task and model, e.g. "
                                   "{max_output_tokens: 128}")
    distilled_as: str = setting("adapter", "how eval-inference serves the distilled student: adapter (its LoRA "
                                "adapter on the base model's engine, which answers for both models: one model load) "
                                "or merged (stage E's merged model, loaded on its own)", choices=DISTILLED_AS)
    data_parallel: str = setting("ddp", "how several GPUs fine-tune: ddp (PyTorch DDP, configs/multi_gpu.yaml; "
                                 "1.34x ZeRO-2's tokens/s on two H200s, bench/RESULTS.md) or deepspeed (the published "
                                 "ZeRO-2, configs/deep_speed2.yaml)", choices=tuple(layout.DATA_PARALLEL_CONFIGS))
    evaluate: dict = setting({}, "evaluate notebook parameters for every task, e.g. {resamples: 200}")
    eval: dict = setting({}, "per task: its raw data folder, eval file and rows, e.g. {i2b2: {input_dir: DIR, "
                         "input_file: test, num_inference: 13}}")

    def check(self) -> None:
        for task in self.tasks:
            get_task(task)
        unknown = sorted(set(self.eval) - set(TASKS))
        if unknown:
            raise InputError(f"eval has unknown task(s) {', '.join(unknown)}; choose from {', '.join(TASKS)}")
        for task, entry in self.eval.items():
            if not isinstance(entry, dict) or set(entry) - set(EVAL_KEYS):
                raise InputError(f"eval: {task} takes a mapping of {', '.join(EVAL_KEYS)}; got {entry!r}")
            files = get_task(task).eval_files
            if "input_file" in entry and entry["input_file"] not in files:
                raise InputError(f"eval: {task}: input_file must be one of {', '.join(files)}, got "
                                 f"{entry['input_file']!r}")
        for stage, owned in OWNED.items():
            section = getattr(self, stage)
            if not isinstance(section, dict):
                raise InputError(f"{stage} takes a mapping of its flags, e.g. {stage}: {{flag: value}}; got "
                                 f"{section!r}")
            taken = sorted(set(section) & set(owned))
            if taken:
                raise InputError(f"{stage}.{taken[0]} is set by the run (from teacher, student, notes, run or eval); "
                                 f"leave it out of {stage}")

    @classmethod
    def from_sources(cls, config: str | None = None, **flags: Any) -> "RunSettings":
        """Defaults, then the YAML config file, then the flags given (a stage's mapping merged key by key)."""
        values: dict[str, Any] = {}
        if config:
            path = layout.resolve(config)
            if not path.is_file():
                raise InputError(f"config file not found: {path}")
            loaded = read_yaml_config(path)
            if not isinstance(loaded, dict):
                raise InputError(f"config file {path} must hold a mapping of settings, e.g. 'teacher: MODEL'")
            values.update({str(key).replace("-", "_"): value for key, value in loaded.items()})
        for key, value in flags.items():
            if value is None:
                continue
            if isinstance(value, dict) and isinstance(values.get(key), dict):
                values[key] = {**values[key], **value}
            else:
                values[key] = value
        moved = sorted(set(values) & set(MOVED))
        if moved:
            raise InputError(f"setting {moved[0]} is now written as {MOVED[moved[0]]} (run-pipeline.py --help lists "
                             "the settings)")
        return cls.from_values(values, source=f"config {config}" if config else "")


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
    # steps of one group that are due together run as fewer commands where `together` can write them (the
    # eval-inference steps of one model, or of an adapter and its base: one model load, so vLLM starts once);
    # it gets the due steps' settings and whether to redo their outputs, and returns (positions, command) pairs
    group: str | None = None
    settings: Settings | None = None
    together: Callable[[list[Settings], bool], list[tuple[list[int], Command]]] | None = None

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
    idle: str = "given"  # its status in run.json then: "given" (its output came with the run) or "not asked"

    def finished(self) -> bool:
        return all(step.finished() for step in self.steps)


def locate_notes(settings: RunSettings, select: dict[str, Any], root: Path) -> tuple[Path, str, Path | None]:
    """(selected notes file, stage A dataset name, raw file stage 0 selects from or None)."""
    given = layout.resolve(settings.notes)
    if not given.exists():
        raise InputError(f"notes file not found: {given}; pass --notes with a MIMIC-III NOTEEVENTS.csv(.gz), "
                         "a MIMIC-IV-Note discharge.csv(.gz) or a selected notes_{N}.csv(.gz)")
    try:
        columns = list(pd.read_csv(given, nrows=0).columns)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as error:
        raise InputError(f"cannot read notes file {given}: {str(error).splitlines()[0]}") from error
    if set(NOTE_COLUMNS) <= set(columns) and "note_type" not in columns:
        match = layout.NOTES_NAME.fullmatch(given.name)
        dataset = settings.dataset or (match.group("dataset") if match else given.name.split(".")[0])
        return given, dataset, None
    detect_format(columns)  # a raw MIMIC file, or a one-line error naming what is missing
    dataset = settings.dataset or str(select["num_notes"])
    return layout.notes_file(root, dataset), dataset, given


# Where the driver's default differs from the stage script's (the scripts keep the published defaults): the
# driver fine-tunes with the fast preset, the same update as the paper's, unless the config's finetune section
# says `preset: paper`.
DRIVER_DEFAULTS: dict[str, dict[str, Any]] = {"finetune": {"preset": "fast"}}


def _stage_values(settings: RunSettings, stage: str, **own: Any) -> dict[str, Any]:
    """A stage's values: the run's shared settings it has a flag for, the driver's defaults, its own section,
    what the driver sets."""
    declared = STAGE_SETTINGS[stage].names()
    shared = {name: getattr(settings, name) for name, stages in SHARED.items() if stage in stages and name in declared}
    return {**shared, **DRIVER_DEFAULTS.get(stage, {}), **getattr(settings, stage), **own}


def _eval_raw_dir(settings: RunSettings, task: str, root: Path) -> Path:
    """A task's raw evaluation folder: the run's `eval` entry, else the task's own, under the data root."""
    folder = settings.eval.get(task, {}).get("input_dir", get_task(task).input_dir)
    return Path(os.path.normpath(layout.resolve(folder, base=root)))


def layout_for(settings: RunSettings) -> RunLayout:
    """Every stage's checked settings and where the run's files go; a bad value stops here, before any work."""
    root = layout.data_root(settings.data_dir)
    select_values = SelectSettings.from_values(_stage_values(settings, "select"), "select").values()
    notes_file, dataset, select_from = locate_notes(settings, select_values, root)
    run = settings.run or f"{Path(str(settings.student).rstrip('/')).name}_{dataset}"
    stage_settings: dict[str, Any] = {"run": settings}
    if select_from is not None:
        stage_settings["select"] = SelectSettings.from_values(
            _stage_values(settings, "select", source=str(select_from), output=str(notes_file)), "select")
    chunks = layout.chunks_dir(root, dataset)
    stage_settings["generate"] = CreateSettings.from_values(_stage_values(
        settings, "generate", model_id=settings.teacher, dataset=dataset, notes_file=str(notes_file),
        output_dir=str(chunks)), "generate")
    stage_settings["postprocess"] = PostprocessSettings.from_values(_stage_values(
        settings, "postprocess", data_dir=str(root), dataset=dataset, notes_file=str(notes_file), overwrite=True),
        "postprocess")
    stage_settings["verify"] = VerifySettings.from_values(_stage_values(settings, "verify", data_dir=str(root)),
                                                          "verify")
    # stage C checks the training notes against the evaluation sets this run scores on
    eval_raw = {task: str(_eval_raw_dir(settings, task, root)) for task in settings.tasks}
    checked = {} if "eval_dirs" in settings.prepare else {"eval_dirs": eval_raw}
    prepare = PrepareSettings.from_values(_stage_values(settings, "prepare", data_dir=str(root),
                                                        tokenizer=settings.student, overwrite=True, **checked),
                                          "prepare")
    stage_settings["prepare"] = prepare
    variant = layout.variant_name(prepare.per_type, prepare.hardest, prepare.support, prepare.grouped_split)
    training = layout.training_name(prepare.input_file, prepare.min_difficulty, variant)
    results, models = layout.resolve(settings.results_dir), layout.resolve(settings.models_dir)
    stage_settings["finetune"] = FinetuneSettings.from_values(_stage_values(
        settings, "finetune", model_id=settings.student, data_dir=str(root), output_dir=str(results / run),
        variant=variant), "finetune")
    eval_files = {task: str(settings.eval.get(task, {}).get("input_file", get_task(task).eval_files[0]))
                  for task in settings.tasks}
    run_layout = RunLayout(run=run, root=root, notes_file=notes_file, dataset=dataset, select_from=select_from,
                           results=results, models=models, reports=layout.resolve(settings.reports_dir),
                           training=training, combo_file=layout.combo_file(layout.raw_dir(root), prepare.input_file,
                                                                           prepare.min_difficulty),
                           student=settings.student, tasks=tuple(settings.tasks), eval_files=eval_files,
                           settings=stage_settings)
    stage_settings["merge"] = MergeSettings.from_values({**settings.merge, "adapter_dir": str(
        layout.final_adapter(run_layout.finetune_dir)), "output_dir": str(run_layout.merged_dir)}, "merge")
    for task in settings.tasks:
        spec, entry = get_task(task), settings.eval.get(task, {})
        preprocess = {"data_dir": str(root), "input_dir": eval_raw[task], "overwrite": True}
        if spec.labelled_splits:
            preprocess["splits"] = [eval_files[task]]
        if settings.prompt_dir:
            preprocess["prompt_dir"] = settings.prompt_dir
        stage_settings[f"preprocess:{task}"] = preprocess_settings(spec).from_values(preprocess, f"eval: {task}")
        for role in MODEL_ROLES:
            served = {"model_id": run_layout.model_id(role)}
            if role == "distilled" and settings.distilled_as == "adapter":
                served = {"model_id": settings.student, "adapter": str(layout.final_adapter(run_layout.finetune_dir))}
            stage_settings[f"eval_inference:{task}:{role}"] = EvalInferenceSettings.from_values(_stage_values(
                settings, "eval_inference", **served, dataset_name=task,
                input_file=eval_files[task], num_inference=entry.get("num_inference", "all"),
                model_name=run_layout.model_name(role), output_dir=str(run_layout.outputs_dir(task, role)),
                data_dir=str(root)), f"eval: {task}")
        evaluate_class = evaluate_settings(spec)
        known = set(evaluate_class.names())
        evaluate = {key: value for key, value in settings.evaluate.items() if key in known}
        evaluate.update(data_dir=str(root), input_file=eval_files[task],
                        models=[run_layout.model_name(role) for role in MODEL_ROLES],
                        results_dir=str(run_layout.evaluation_dir(task)), overwrite=True)
        if "gold_dir" in known:
            evaluate["gold_dir"] = str(Path(eval_raw[task]) / eval_files[task])
        stage_settings[f"evaluate:{task}"] = evaluate_class.from_values(evaluate, "evaluate")
    every_evaluate = set().union(*(evaluate_settings(spec).names() for spec in TASKS.values()))
    unknown = sorted(set(settings.evaluate) - every_evaluate)
    if unknown:
        raise InputError(f"evaluate has unknown parameter {unknown[0]}; the evaluate notebooks take "
                         f"{', '.join(sorted(every_evaluate))}")
    return run_layout


def _given(stage_settings: Settings) -> dict[str, Any]:
    """What a command passes: every setting the driver sets itself (spelled out even where it equals the
    default, so the command says what it does) and every other one that differs from its default."""
    stage = next((name for name, declared in STAGE_SETTINGS.items() if type(stage_settings) is declared), "")
    owned = set(OWNED.get(stage, ())) | {"data_dir"}
    changed = stage_settings.changed()
    return {name: value for name, value in stage_settings.values().items() if name in changed or
            (name in owned and value is not None)}


def _script(path: Path, stage_settings: Settings, *extra: str) -> list[str]:
    return [sys.executable, str(path), *as_flags(_given(stage_settings)), *extra]


def _notebook(run_layout: RunLayout, notebook: Path, parameters: Settings) -> Command:
    """papermill run of a stage notebook; the executed copy goes to the report's notebooks/ folder."""
    executed = run_layout.report_dir / "notebooks" / notebook.name
    return Command([sys.executable, "-m", "papermill", "--cwd", str(notebook.parent), str(notebook), str(executed),
                    "--log-level", "WARNING", "-y", json.dumps(_given(parameters))], executed_notebook=executed)


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


def plan(run_layout: RunLayout, overwrite: bool = False, cuda_devices: int | None = None) -> list[Stage]:
    """Every stage with its steps, commands and the files that mark them finished."""
    stage_settings = run_layout.settings
    settings: RunSettings = stage_settings["run"]
    redo = ["--overwrite"] if overwrite else []
    stages: list[Stage] = []

    if run_layout.select_from is None:
        stages.append(Stage("select", [], note=f"notes given already selected: {run_layout.notes_file}"))
    else:
        select = _script(layout.SELECT_SCRIPT, stage_settings["select"])
        stages.append(Stage("select", [Step(
            "select notes", Command(select + redo), outputs=[run_layout.notes_file], inputs=[run_layout.select_from],
            stale_command=Command(select + ["--overwrite"]))]))

    manifest = run_layout.generation_manifest
    create: CreateSettings = stage_settings["generate"]
    generate = _script(layout.CREATE_SCRIPT, create)
    stages.append(Stage("generate", [Step(
        "teacher writes question/answer pairs", Command(generate + redo), outputs=[manifest],
        inputs=[run_layout.notes_file], stale_command=Command(generate + ["--overwrite"]),
        covers=_manifest_covers(manifest, "notes_in_file", create.limit,
                                lambda: _count_rows(run_layout.notes_file, "note_id"),
                                input_file=run_layout.notes_file))]))

    # a step only runs when its output is missing, stale or asked for again, so the notebooks may replace it
    from clinical_distil.postprocess import stage_b_paths

    stages.append(Stage("postprocess", [Step(
        "parse, check and join (stage B)",
        _notebook(run_layout, layout.POSTPROCESS_NOTEBOOK, stage_settings["postprocess"]),
        outputs=stage_b_paths(run_layout.raw_dir), inputs=[manifest])]))

    prepare_settings: PrepareSettings = stage_settings["prepare"]
    verdicts = layout.verification_file(run_layout.raw_dir)
    if prepare_settings.require_verified:
        verify = _script(layout.VERIFY_SCRIPT, stage_settings["verify"])
        stages.append(Stage("verify", [Step(
            "a verifier re-answers the items (stage B2)", Command(verify + redo), outputs=[verdicts],
            inputs=[layout.items_file(run_layout.raw_dir)], stale_command=Command(verify + ["--overwrite"]))]))
    else:
        stages.append(Stage("verify", [], note="no re-answer verification (prepare: {require_verified: true} "
                                              "runs stage B2)", idle="not asked"))

    raw, name = run_layout.raw_dir, run_layout.training
    training_files = [layout.training_dataset(raw, split, name) / "dataset_info.json" for split in ("train", "test")]
    training_files += [layout.training_table(raw, split, name) for split in ("train", "test")]
    stages.append(Stage("prepare", [Step(
        "balance, format and split (stage C)",
        _notebook(run_layout, layout.PREPARE_NOTEBOOK, stage_settings["prepare"]),
        outputs=training_files,
        inputs=[run_layout.combo_file] + ([verdicts] if prepare_settings.require_verified else []))]))

    finetune_dir = run_layout.finetune_dir
    from clinical_distil.training_folder import checkpoints, complete_checkpoints

    resume: list[str] = []
    if overwrite:
        resume = ["--overwrite"]
    elif not layout.final_adapter(finetune_dir).exists():
        if complete_checkpoints(finetune_dir):
            resume = ["--resume_from_checkpoint", "last"]  # an interrupted run continues
        elif checkpoints(finetune_dir):
            resume = ["--overwrite"]  # killed before its first checkpoint was whole: nothing to continue
    gpus = settings.num_gpus if settings.num_gpus is not None else (cuda_devices or 0)
    finetune_settings: FinetuneSettings = stage_settings["finetune"]

    def finetune_command(extra: list[str]) -> Command:
        if gpus > 0:
            # accelerate over several GPUs (DDP, or the published DeepSpeed ZeRO-2), plain accelerate on one
            config = layout.DATA_PARALLEL_CONFIGS[settings.data_parallel] if gpus > 1 else layout.SINGLE_GPU_CONFIG
            return Command(["bash", str(layout.FINETUNE_LAUNCHER), *_script(layout.FINETUNE_SCRIPT,
                                                                              finetune_settings, *extra)[2:]],
                           env={"MODEL_ID": finetune_settings.model_id, "INPUT_FILE": finetune_settings.input_file,
                                "MIN_DIFFICULTY": str(finetune_settings.min_difficulty), "NUM_PROCESSES": str(gpus),
                                "CONFIG": str(config),
                                "LOG_DIR": str(run_layout.report_dir / "logs")})
        return Command(_script(layout.FINETUNE_SCRIPT, finetune_settings, *extra))

    stages.append(Stage("finetune", [Step(
        "fine-tune the student (LoRA)", finetune_command(resume),
        outputs=[layout.final_adapter(finetune_dir) / "adapter_config.json", layout.training_summary(finetune_dir)],
        inputs=[layout.training_table(raw, "train", name)],
        # training data newer than the adapter: train again from the start, not from an old checkpoint
        stale_command=finetune_command(["--overwrite"]))]))

    merged = run_layout.merged_dir
    stages.append(Stage("merge", [Step(
        "merge the adapter (stage E)",
        Command(_script(layout.MERGE_SCRIPT, stage_settings["merge"],
                        *(["--overwrite"] if overwrite or (merged / "config.json").exists() else []))),
        outputs=[merged / "config.json"], inputs=[layout.training_summary(finetune_dir)])]))

    preprocess_steps, inference_steps, evaluate_steps = [], [], []
    for task in run_layout.tasks:
        spec = get_task(task)
        preprocess_steps.append(Step(f"{task} prompts", _notebook(run_layout, spec.preprocess_notebook,
                                                                  stage_settings[f"preprocess:{task}"]),
                                     outputs=[run_layout.eval_file(task)]))
        manifests = []
        one_engine = stage_settings[f"eval_inference:{task}:distilled"].adapter is not None
        for role in MODEL_ROLES:
            inference_settings: EvalInferenceSettings = stage_settings[f"eval_inference:{task}:{role}"]
            manifests.append(run_layout.inference_manifest(task, role))
            model_inputs = [run_layout.eval_file(task)]
            if role == "distilled":  # the model it answers with: the adapter (its training summary) or the merge
                model_inputs.append(layout.training_summary(finetune_dir) if inference_settings.adapter
                                    else merged / "config.json")
            answer = _script(layout.EVAL_INFERENCE_SCRIPT, inference_settings)
            inference_steps.append(Step(
                f"{task}: {role} model answers", Command(answer + redo),
                # a model (or prompts) newer than its answers: every answer is redone, none of the old kept
                stale_command=Command(answer + ["--overwrite"]),
                outputs=[manifests[-1]], inputs=model_inputs,
                covers=_manifest_covers(manifests[-1], "rows_in_file", inference_settings.row_limit,
                                        more_is_stale=True,
                                        count_file=lambda task=task: _count_rows(run_layout.eval_file(task), "id")),
                # an adapter's answers and its base model's come from one engine: one group for both
                group="answers" if one_engine else f"answers:{role}", settings=inference_settings,
                together=lambda due, again, root=run_layout.root: _answers_together(root, due, again)))
        evaluate_steps.append(Step(f"{task}: score both models",
                                   _notebook(run_layout, spec.evaluate_notebook, stage_settings[f"evaluate:{task}"]),
                                   outputs=[run_layout.evaluation_dir(task) / "summary.csv"], inputs=manifests))
    stages.append(Stage("eval-preprocess", preprocess_steps))
    stages.append(Stage("eval-inference", inference_steps))
    stages.append(Stage("evaluate", evaluate_steps))
    stages.append(Stage("report", [Step("write the report", None, outputs=[run_layout.report_dir / "report.md"])]))
    return stages


# teachers that are no model (stage A writes their replies itself): nothing to look for on disk
TEACHERS_WITHOUT_WEIGHTS = ("reference",)


def check_model(model_id: str, role: str) -> None:
    """A model the run will load: a local folder holding a model, or a hub id (in the local cache when the hub is
    off); else one line naming it. Relative paths are the stages' (the repository)."""
    local = layout.resolve(model_id)
    if (local / "config.json").is_file():
        return
    if local.exists() or Path(model_id).expanduser().is_absolute() or model_id.startswith((".", "~")) \
            or model_id.count("/") != 1:
        raise InputError(f"{role} {model_id} is not a model folder (no config.json in {local}); give a folder "
                         "holding a model or a hub id")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            raise InputError(f"{role} {model_id} is neither a local folder ({local}) nor in the hub cache, and "
                             "HF_HUB_OFFLINE is set; download it first or give a local folder")


def check_inputs(run_layout: RunLayout, stages: list[Stage], selected: list[str], overwrite: bool = False) -> None:
    """Before the first stage runs: every model, evaluation folder and prompt folder that a stage still to run
    will read, so that a missing one is named now and not after hours of teacher generation."""
    settings: RunSettings = run_layout.settings["run"]
    due = {stage.name for stage in stages if stage.name in selected and stage.steps and
           (overwrite or not stage.finished())}
    if settings.prompt_dir:
        from clinical_distil.prompts import load_templates

        load_templates(settings.prompt_dir)
    if "generate" in due and settings.teacher not in TEACHERS_WITHOUT_WEIGHTS:
        check_model(settings.teacher, "teacher")
    verifier = run_layout.settings["verify"].model_id or settings.teacher
    if "verify" in due and verifier not in TEACHERS_WITHOUT_WEIGHTS:
        check_model(verifier, "verifier")
    if due & {"prepare", "finetune", "eval-inference"}:
        check_model(settings.student, "student")
    if due & {"prepare", "eval-preprocess"}:
        for task in run_layout.tasks:
            folder = _eval_raw_dir(settings, task, run_layout.root)
            wanted = [folder] + ([folder / run_layout.eval_files[task]] if get_task(task).labelled_splits else [])
            missing = next((path for path in wanted if not path.is_dir()), None)
            if missing is not None:
                raise InputError(f"evaluation data of {task} not found: {missing} is not a folder; set eval: "
                                 f"{{{task}: {{input_dir: DIR}}}} or leave {task} out of tasks")


def _one_command(root: Path, due: list[EvalInferenceSettings]) -> EvalInferenceSettings | None:
    """One model's due tasks as one eval-inference run, when they differ only in their dataset (and each answers
    into its default folder); else None."""
    plain = [dataclasses.replace(settings, dataset_name="", input_file="", num_inference="all", output_dir=None)
             for settings in due]
    if any(settings != plain[0] for settings in plain) or any(
            settings.output_dir and layout.resolve(settings.output_dir) != layout.model_outputs(
                root, settings.dataset_name, settings.answer_name) for settings in due):
        return None
    return dataclasses.replace(due[0], dataset_name=",".join(settings.dataset_name for settings in due),
                               input_file=",".join(settings.input_file for settings in due),
                               num_inference=",".join(str(settings.num_inference) for settings in due),
                               output_dir=None)


def _answers_together(root: Path, due: list[EvalInferenceSettings],
                      overwrite: bool) -> list[tuple[list[int], Command]]:
    """eval-inference commands for due answering steps (by their positions in `due`): each model's tasks in one
    command, and a base model's beside its adapter's in that same command (--base_model_name) when both answer
    the same tasks with the same settings. Steps no command covers run on their own."""
    by_model: dict[str, list[int]] = {}
    for position, settings in enumerate(due):
        by_model.setdefault(settings.answer_name, []).append(position)
    runs = {name: _one_command(root, [due[position] for position in positions])
            for name, positions in by_model.items()}
    redo = ["--overwrite"] if overwrite else []
    served = [name for name, run in runs.items() if run is not None and run.adapter]
    bases = [name for name, run in runs.items() if run is not None and not run.adapter]
    if len(served) == 1 and len(bases) == 1:
        with_adapter, alone = runs[served[0]], runs[bases[0]]
        if dataclasses.replace(with_adapter, adapter=None, model_name=alone.model_name) == alone:
            both = dataclasses.replace(with_adapter, base_model_name=alone.answer_name)
            return [(by_model[served[0]] + by_model[bases[0]],
                     Command(_script(layout.EVAL_INFERENCE_SCRIPT, both) + redo))]
    return [(by_model[name], Command(_script(layout.EVAL_INFERENCE_SCRIPT, run) + redo))
            for name, run in runs.items() if run is not None and len(by_model[name]) > 1]


def batches(steps: list[Step], commands: dict[str, Command], overwrite: bool) -> list[tuple[list[Step], Command]]:
    """The due `steps` as the commands that run them: one per step, except steps of one group whose `together`
    writes commands for several of them (those redone with --overwrite apart from the rest)."""
    grouped: dict[tuple, list[Step]] = {}
    for step in steps:
        stale = commands[step.label] is step.stale_command
        key = (step.group, stale) if step.group and step.together else (step.label,)
        grouped.setdefault(key, []).append(step)
    result = []
    for key, members in grouped.items():
        joined = members[0].together([step.settings for step in members], overwrite or key[1]) \
            if len(members) > 1 else []
        covered = set()
        for positions, command in joined:
            result.append(([members[position] for position in positions], command))
            covered.update(positions)
        result += [([step], commands[step.label]) for position, step in enumerate(members) if position not in covered]
    return result


def stage_range(from_stage: str | None, to_stage: str | None) -> list[str]:
    for name in (from_stage, to_stage):
        if name is not None and name not in STAGES:
            raise InputError(f"unknown stage {name!r}; stages in order: {', '.join(STAGES)}")
    first = STAGES.index(from_stage) if from_stage else 0
    last = STAGES.index(to_stage) if to_stage else len(STAGES) - 1
    if first > last:
        raise InputError(f"--from_stage {from_stage} comes after --to_stage {to_stage}")
    return list(STAGES[first:last + 1])


def done_line(prefix: str, seconds: float, earlier: float, run_seconds: float) -> str:
    """A finished stage's line: its time in this run, the interrupted runs' time apart (a stage resumed has
    taken longer than this run has lasted), and this run's time so far."""
    if earlier:
        return (f"{prefix}: done in {seconds:.1f}s, {earlier + seconds:.1f}s with the interrupted run(s) before "
                f"(this run so far {run_seconds:.0f}s)")
    return f"{prefix}: done in {seconds:.1f}s (this run so far {run_seconds:.0f}s)"


HEARTBEAT_SECONDS = 15.0  # how often run.json records a running stage's time (a killed driver loses less)


def _run_child(command: Command, env: dict[str, str], heartbeat: Callable[[], Any],
               stderr: Any = None, keep_fds: tuple[int, ...] = ()) -> int:
    """Run one step's command to its end, calling `heartbeat` every HEARTBEAT_SECONDS; its exit code.

    The command runs under clinical_distil.guard, so it (and all it starts) ends with the driver,
    however the driver ends. The guard has a session of its own: a scheduler that SIGKILLs the driver's
    whole process group at a time limit kills the driver, not the guard, which then stops the step.
    `keep_fds` (the run's lock) stay open in the guard, so a rerun waits until the step has stopped.
    """
    process = subprocess.Popen([sys.executable, "-m", "clinical_distil.guard", *command.argv], env=env, cwd=REPO_ROOT,
                               stderr=stderr, start_new_session=True, pass_fds=keep_fds)
    try:
        while True:
            try:
                return process.wait(timeout=HEARTBEAT_SECONDS)
            except subprocess.TimeoutExpired:
                heartbeat()
    except BaseException as stopped:
        # outside the terminal's process group the guard does not see Ctrl-C: pass it on (the step stops
        # and keeps what it finished), or SIGTERM for anything else that ends the driver
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT if isinstance(stopped, KeyboardInterrupt) else signal.SIGTERM)
        try:
            process.wait(timeout=GRACE_SECONDS + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


class StageFailed(Exception):
    def __init__(self, stage: str, step: str, returncode: int, reason: str = ""):
        why = f": {reason}" if reason else f" (exit code {returncode}); the message above says why"
        super().__init__(f"stage {stage} failed at '{step}'{why}. Finished work is kept: fix it and rerun the same "
                         "command to resume")
        self.returncode = returncode


def run_stages(run_layout: RunLayout, stages: list[Stage], selected: list[str], overwrite: bool = False,
               announce: Callable[[str], None] = print, write_report: Callable[[RunLayout], Any] | None = None,
               dry_run: bool = False) -> dict[str, Any]:
    """Run the selected stages in order, skipping finished steps; returns the run state."""
    state_path = run_layout.report_dir / "run.json"
    state = read_run_state(state_path)
    state["run"] = run_layout.run
    state["settings"] = {name: (value.changed() if name != "run" else value.values())
                         for name, value in run_layout.settings.items()}
    state["data_root"] = str(run_layout.root)
    state["notes_file"] = str(run_layout.notes_file)
    state["dataset"] = run_layout.dataset
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    def save() -> None:
        write_text(json.dumps(state, indent=2, default=str) + "\n", state_path)

    lock = None
    if not dry_run:
        # one driver per run; a killed driver's step may still be stopping (its guard holds the lock until then)
        lock = FolderLock(run_layout.report_dir, advice="give this run another --run name",
                          wait_seconds=GRACE_SECONDS + 10)
        (run_layout.report_dir / "notebooks").mkdir(exist_ok=True)  # papermill writes executed copies there
    started = time.time()
    try:
        for position, stage in enumerate(stages, start=1):
            prefix = f"[{position}/{len(stages)}] {stage.name}"
            if stage.name not in selected:
                continue
            record = state["stages"].setdefault(stage.name, {})
            if not stage.steps:
                announce(f"{prefix}: nothing to do ({stage.note})")
                record.update(status=stage.idle, note=stage.note)
                continue
            if stage.name == "report":
                if dry_run:
                    announce(f"{prefix}: would write {run_layout.report_dir / 'report.md'}")
                    continue
                stage_started = time.time()
                record.update(status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"))
                save()  # the report reads the stage times from run.json
                if write_report is not None:
                    write_report(run_layout)
                record.update(status="ran", seconds=round(time.time() - stage_started, 1))
                save()
                announce(f"{prefix}: {run_layout.report_dir / 'report.md'} ({record['seconds']:.1f}s)")
                continue
            todo = [step for step in stage.steps if overwrite or not step.finished()]
            if not todo:
                announce(f"{prefix}: skipped, outputs exist" +
                         (f" (ran in {record['seconds']:.0f}s earlier)" if record.get("seconds") else ""))
                record["status"] = "skipped"
                continue
            commands = {step.label: step.command_to_run(overwrite) for step in todo}
            due = batches(todo, commands, overwrite)
            if dry_run:
                for step in stage.steps:
                    if step not in todo:
                        announce(f"{prefix} [done] {step.label}: {step.command.shell()}")
                for members, command in due:
                    stale = any(commands[step.label] is step.stale_command for step in members)
                    note = " (stale: an input changed since it ran)" if stale else ""
                    announce(f"{prefix} [run ] {' + '.join(step.label for step in members)}{note}: {command.shell()}")
                continue
            announce(f"{prefix}: {len(todo)} of {len(stage.steps)} step(s) to run")
            # an interrupted stage's seconds count towards the stage; a finished one redone starts again
            resumed = record.get("status") in ("running", "failed", "interrupted")
            earlier = float(record.get("seconds") or 0) if resumed else 0.0
            stage_started = time.time()
            record.update(status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"), steps=record.get("steps", {}),
                          seconds=round(earlier, 1))
            save()

            def elapsed() -> float:
                return round(earlier + time.time() - stage_started, 1)

            for members, command in due:
                label = " + ".join(step.label for step in members)
                for step in members:
                    if commands[step.label] is step.stale_command:
                        announce(f"{prefix}: '{step.label}' is older than its inputs; redoing it with --overwrite")
                step_started = time.time()
                log.info("%s: %s", label, command.shell())
                # a notebook's own traceback (papermill's, 50 lines) is shown only when it is not bad input
                captured = tempfile.TemporaryFile(mode="w+") if command.executed_notebook else None
                try:
                    returncode = _run_child(command, {**env, **command.env}, heartbeat=lambda: (
                        record.update(seconds=elapsed()), save()), stderr=captured,
                        keep_fds=(lock.handle.fileno(),) if lock.handle is not None else ())
                except KeyboardInterrupt:
                    record.update(status="interrupted", seconds=elapsed())
                    save()
                    raise
                for step in members:  # steps run together share their command and its seconds
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
                    if captured is not None and returncode != 2:
                        captured.seek(0)
                        sys.stderr.write(captured.read())
                    raise StageFailed(stage.name, label, returncode, reason)
                if captured is not None:
                    captured.close()
            record.update(status="ran", seconds=elapsed())
            save()
            announce(done_line(prefix, time.time() - stage_started, earlier, time.time() - started))
    finally:
        if lock is not None:
            lock.release()
    return state
