"""The whole job as one sequence of stage commands (run-pipeline.py): the plan.

The driver runs the same scripts and notebooks a researcher runs one by one; this module only
chooses their arguments and decides which steps are finished from the files on disk (the run's
settings are in run_settings.py; driver.py runs the plan, times each stage and records the run in
`reports/{run}/run.json`). No stage logic lives here: what a stage does stays in its script,
notebook and library module.

A step is finished when its output files exist and are newer than its inputs (as make does),
and, for the two generation steps, when their manifest covers the rows asked for. An interrupted
run therefore resumes where it stopped; stage A and eval-inference also resume inside a step,
chunk by chunk. A step older than its inputs is redone with its script's --overwrite.
"""

from __future__ import annotations

import dataclasses
import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from clinical_distil import layout
from clinical_distil.files import InputError
from clinical_distil.layout import MODEL_ROLES, RUN_STAGES, RunLayout
from clinical_distil.run_settings import OWNED, RunSettings
from clinical_distil.settings import Settings, as_flags
from clinical_distil.stages import (STAGE_SETTINGS, CreateSettings, EvalInferenceSettings, FinetuneSettings,
                                    PrepTrainingSettings)
from clinical_distil.tasks import get_task
from clinical_distil.training_folder import checkpoints, complete_checkpoints


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


def _manifest_covers(manifest: Path, count_key: str, limit: int | None,
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
        if available is None:
            return "incomplete"
        wanted = available if limit is None else min(limit, available)
        start, stop = (list(recorded.get("rows") or [0, 0]) + [0, 0])[:2]
        if start != 0 or stop < wanted:
            return "incomplete" if start == 0 else "stale"
        return "stale" if more_is_stale and stop > wanted else "finished"

    return covers


def _select_stage(run_layout: RunLayout, redo: list[str]) -> Stage:
    if run_layout.select_from is None:
        return Stage("select", [], note=f"notes given already selected: {run_layout.notes_file}")
    select = _script(layout.SELECT_SCRIPT, run_layout.settings["select"])
    return Stage("select", [Step(
        "select notes", Command(select + redo), outputs=[run_layout.notes_file], inputs=[run_layout.select_from],
        stale_command=Command(select + ["--overwrite"]))])


def _create_stage(run_layout: RunLayout, redo: list[str]) -> Stage:
    manifest = run_layout.create_manifest
    create: CreateSettings = run_layout.settings["create"]
    generate = _script(layout.CREATE_SCRIPT, create)
    return Stage("create", [Step(
        "teacher writes question/answer pairs", Command(generate + redo), outputs=[manifest],
        inputs=[run_layout.notes_file], stale_command=Command(generate + ["--overwrite"]),
        covers=_manifest_covers(manifest, "notes_in_file", create.limit, input_file=run_layout.notes_file))])


def _post_process_stage(run_layout: RunLayout) -> Stage:
    # a step only runs when its output is missing, stale or asked for again, so the notebooks may replace it
    from clinical_distil.post_process import stage_b_paths

    return Stage("post_process", [Step(
        "parse, check and join (stage B)",
        _notebook(run_layout, layout.POST_PROCESS_NOTEBOOK, run_layout.settings["post_process"]),
        outputs=stage_b_paths(run_layout.raw_dir), inputs=[run_layout.create_manifest])])


def _verify_stage(run_layout: RunLayout, redo: list[str]) -> Stage:
    prepare_settings: PrepTrainingSettings = run_layout.settings["prep_training"]
    if not prepare_settings.require_verified:
        return Stage("verify", [], idle="not asked",
                     note="no re-answer verification (prep_training: {require_verified: true} runs stage B2)")
    verify = _script(layout.VERIFY_SCRIPT, run_layout.settings["verify"])
    return Stage("verify", [Step(
        "a verifier re-answers the items (stage B2)", Command(verify + redo),
        outputs=[layout.verification_file(run_layout.raw_dir)], inputs=[layout.items_file(run_layout.raw_dir)],
        stale_command=Command(verify + ["--overwrite"]))])


def _prep_training_stage(run_layout: RunLayout) -> Stage:
    prepare_settings: PrepTrainingSettings = run_layout.settings["prep_training"]
    verdicts = layout.verification_file(run_layout.raw_dir)
    raw, name = run_layout.raw_dir, run_layout.training
    training_files = [layout.training_dataset(raw, split, name) / "dataset_info.json" for split in ("train", "test")]
    training_files += [layout.training_table(raw, split, name) for split in ("train", "test")]
    return Stage("prep_training", [Step(
        "balance, format and split (stage C)",
        _notebook(run_layout, layout.PREP_TRAINING_NOTEBOOK, run_layout.settings["prep_training"]),
        outputs=training_files,
        inputs=[run_layout.combo_file] + ([verdicts] if prepare_settings.require_verified else []))])


def _finetune_stage(run_layout: RunLayout, overwrite: bool, cuda_devices: int | None) -> Stage:
    settings: RunSettings = run_layout.settings["run"]
    finetune_dir = run_layout.finetune_dir
    resume: list[str] = []
    if overwrite:
        resume = ["--overwrite"]
    elif not layout.final_adapter(finetune_dir).exists():
        if complete_checkpoints(finetune_dir):
            resume = ["--resume_from_checkpoint", "last"]  # an interrupted run continues
        elif checkpoints(finetune_dir):
            resume = ["--overwrite"]  # killed before its first checkpoint was whole: nothing to continue
    gpus = settings.num_gpus if settings.num_gpus is not None else (cuda_devices or 0)
    finetune_settings: FinetuneSettings = run_layout.settings["finetune"]

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

    return Stage("finetune", [Step(
        "fine-tune the student (LoRA)", finetune_command(resume),
        outputs=[layout.final_adapter(finetune_dir) / "adapter_config.json", layout.training_summary(finetune_dir)],
        inputs=[layout.training_table(run_layout.raw_dir, "train", run_layout.training)],
        # training data newer than the adapter: train again from the start, not from an old checkpoint
        stale_command=finetune_command(["--overwrite"]))])


def _convert_peft_stage(run_layout: RunLayout, overwrite: bool) -> Stage:
    merged = run_layout.merged_dir
    return Stage("convert_peft", [Step(
        "merge the adapter (stage E)",
        Command(_script(layout.CONVERT_PEFT_SCRIPT, run_layout.settings["convert_peft"],
                        *(["--overwrite"] if overwrite or (merged / "config.json").exists() else []))),
        outputs=[merged / "config.json"], inputs=[layout.training_summary(run_layout.finetune_dir)])])


def _answer_steps(run_layout: RunLayout, task: str, redo: list[str]) -> list[Step]:
    """Each model's answers to one task's prompts (eval-inference)."""
    stage_settings = run_layout.settings
    steps = []
    one_engine = stage_settings[f"eval_inference:{task}:distilled"].adapter is not None
    for role in MODEL_ROLES:
        inference_settings: EvalInferenceSettings = stage_settings[f"eval_inference:{task}:{role}"]
        manifest = run_layout.inference_manifest(task, role)
        model_inputs = [run_layout.eval_file(task)]
        if role == "distilled":  # the model it answers with: the adapter (its training summary) or the merge
            model_inputs.append(layout.training_summary(run_layout.finetune_dir) if inference_settings.adapter
                                else run_layout.merged_dir / "config.json")
        answer = _script(layout.EVAL_INFERENCE_SCRIPT, inference_settings)
        steps.append(Step(
            f"{task}: {role} model answers", Command(answer + redo),
            # a model (or prompts) newer than its answers: every answer is redone, none of the old kept
            stale_command=Command(answer + ["--overwrite"]),
            outputs=[manifest], inputs=model_inputs,
            covers=_manifest_covers(manifest, "rows_in_file", inference_settings.row_limit, more_is_stale=True),
            # an adapter's answers and its base model's come from one engine: one group for both
            group="answers" if one_engine else f"answers:{role}", settings=inference_settings,
            together=lambda due, again, root=run_layout.root: _answers_together(root, due, again)))
    return steps


def _evaluation_stages(run_layout: RunLayout, redo: list[str]) -> list[Stage]:
    """preprocess, eval-inference and evaluate: each task's prompts, both models' answers, their scores."""
    preprocess_steps, inference_steps, evaluate_steps = [], [], []
    for task in run_layout.tasks:
        spec = get_task(task)
        preprocess_steps.append(Step(f"{task} prompts", _notebook(run_layout, spec.preprocess_notebook,
                                                                  run_layout.settings[f"preprocess:{task}"]),
                                     outputs=[run_layout.eval_file(task)]))
        inference_steps += _answer_steps(run_layout, task, redo)
        evaluate = _notebook(run_layout, spec.evaluate_notebook, run_layout.settings[f"evaluate:{task}"])
        evaluate_steps.append(Step(f"{task}: score both models", evaluate,
                                   outputs=[run_layout.evaluation_dir(task) / "summary.csv"],
                                   inputs=[run_layout.inference_manifest(task, role) for role in MODEL_ROLES]))
    return [Stage("preprocess", preprocess_steps), Stage("eval_inference", inference_steps),
            Stage("evaluate", evaluate_steps)]


def plan(run_layout: RunLayout, overwrite: bool = False, cuda_devices: int | None = None) -> list[Stage]:
    """Every stage with its steps, commands and the files that mark them finished."""
    redo = ["--overwrite"] if overwrite else []
    return [_select_stage(run_layout, redo), _create_stage(run_layout, redo), _post_process_stage(run_layout),
            _verify_stage(run_layout, redo), _prep_training_stage(run_layout),
            _finetune_stage(run_layout, overwrite, cuda_devices), _convert_peft_stage(run_layout, overwrite),
            *_evaluation_stages(run_layout, redo),
            Stage("report", [Step("write the report", None, outputs=[run_layout.report_dir / "report.md"])])]


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
        if name is not None and name not in RUN_STAGES:
            raise InputError(f"unknown stage {name!r}; stages in order: {', '.join(RUN_STAGES)}")
    first = RUN_STAGES.index(from_stage) if from_stage else 0
    last = RUN_STAGES.index(to_stage) if to_stage else len(RUN_STAGES) - 1
    if first > last:
        raise InputError(f"--from_stage {from_stage} comes after --to_stage {to_stage}")
    return list(RUN_STAGES[first:last + 1])

