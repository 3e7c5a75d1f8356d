"""run-pipeline.py's settings: the run's own, each stage's section, and every stage's settings derived from them.

Settings come in two kinds. A few belong to the run and reach every stage that has a flag of that
name (`data_dir`, `engine`, `input_file`, ...), or name the models and the notes (`teacher`,
`student`, `notes`). Everything else is a stage's own flag, given under the stage's name with the
script's own spelling (`create: {max_tokens: 512}`), checked against the stage's declaration
(clinical_distil/stages.py) before anything runs (layout_for). The driver builds every command from
those declarations (pipeline.plan).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_distil import layout
from clinical_distil.files import InputError
from clinical_distil.layout import MODEL_ROLES, RunLayout
from clinical_distil.select import NOTE_COLUMNS, detect_format
from clinical_distil.settings import Settings, setting
from clinical_distil.stages import (STAGE_SETTINGS, CreateSettings, EvalInferenceSettings, FinetuneSettings,
                                    ConvertPeftSettings, PostProcessSettings, PrepTrainingSettings, SelectSettings,
                                    VerifySettings, evaluate_settings, preprocess_settings)
from clinical_distil.tasks import TASKS, get_task

# run-level settings that reach every stage with a flag of the same name
SHARED = {
    "data_dir": ("select", "create", "post_process", "verify", "prep_training", "finetune", "eval_inference"),
    "engine": ("create", "verify", "eval_inference"), "batch_size": ("create", "verify", "eval_inference"),
    "tensor_parallel_size": ("create", "verify", "eval_inference"),
    "max_model_len": ("create", "verify", "eval_inference"),
    "prompt_dir": ("create", "verify", "prep_training", "finetune", "eval_inference"),
    "input_file": ("prep_training", "finetune"), "min_difficulty": ("prep_training", "finetune"),
    "max_seq_length": ("prep_training", "finetune"),
}
# flags the driver sets itself in each stage (paths, models, names): a section may not set them
OWNED = {
    "select": ("source", "output"), "create": ("model_id", "dataset", "notes_file", "output_dir"),
    "post_process": ("dataset", "notes_file"), "prep_training": ("tokenizer",),
    "finetune": ("model_id", "output_dir", "variant", "resume_from_checkpoint"), "convert_peft": ("adapter_dir", "output_dir"),
    "eval_inference": ("model_id", "dataset_name", "input_file", "num_inference", "model_name", "output_dir",
                       "adapter", "base_model_name"),
    "evaluate": ("input_file", "models", "results_dir", "gold_dir"),
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
    create: dict = setting({}, "synthetic-a-create.py flags, e.g. {max_tokens: 512, limit: 4}")
    post_process: dict = setting({}, "stage B notebook parameters, e.g. {require_source_in_note: true}")
    verify: dict = setting({}, "synthetic-b2-verify.py flags, e.g. {model_id: models/verifier}; stage B2 runs when "
                           "prepare has require_verified: true (the verifier: the teacher unless model_id is given)")
    prep_training: dict = setting({}, "stage C notebook parameters, e.g. {hardest: true}")
    finetune: dict = setting({}, "finetune.py flags, e.g. {max_steps: 300, padding_free: true}")
    convert_peft: dict = setting({}, "synthetic-e-convert-peft.py flags, e.g. {dtype: float16}")
    eval_inference: dict = setting({}, "eval-inference.py flags for every task and model, e.g. "
                                   "{max_output_tokens: 128}")
    distilled_as: str = setting("adapter", "how eval-inference serves the distilled student: adapter (its LoRA "
                                "adapter on the base model's engine, which answers for both models: one model load) "
                                "or merged (stage E's merged model, loaded on its own)", choices=DISTILLED_AS)
    data_parallel: str = setting("ddp", "how several GPUs fine-tune: ddp (PyTorch DDP, configs/multi_gpu.yaml; "
                                 "faster than ZeRO-2 for a LoRA adapter, bench/RESULTS.md) or deepspeed (the published "
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
        return cls.from_values(values, source=f"config {config}" if config else "")


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


def eval_raw_dir(settings: RunSettings, task: str, root: Path) -> Path:
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
    stage_settings["create"] = CreateSettings.from_values(_stage_values(
        settings, "create", model_id=settings.teacher, dataset=dataset, notes_file=str(notes_file),
        output_dir=str(chunks)), "create")
    stage_settings["post_process"] = PostProcessSettings.from_values(_stage_values(
        settings, "post_process", data_dir=str(root), dataset=dataset, notes_file=str(notes_file), overwrite=True),
        "post_process")
    stage_settings["verify"] = VerifySettings.from_values(_stage_values(settings, "verify", data_dir=str(root)),
                                                          "verify")
    # stage C checks the training notes against the evaluation sets this run scores on
    eval_raw = {task: str(eval_raw_dir(settings, task, root)) for task in settings.tasks}
    checked = {} if "eval_dirs" in settings.prep_training else {"eval_dirs": eval_raw}
    prepare = PrepTrainingSettings.from_values(_stage_values(settings, "prep_training", data_dir=str(root),
                                                        tokenizer=settings.student, overwrite=True, **checked),
                                          "prep_training")
    stage_settings["prep_training"] = prepare
    variant = layout.variant_name(prepare.per_type, prepare.hardest, prepare.support, prepare.grouped_split,
                                  prepare.permute_answers)
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
    stage_settings["convert_peft"] = ConvertPeftSettings.from_values({**settings.convert_peft, "adapter_dir": str(
        layout.final_adapter(run_layout.finetune_dir)), "output_dir": str(run_layout.merged_dir)}, "convert_peft")
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

