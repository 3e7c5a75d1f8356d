"""The known-answer benchmark's arms: what an arm is (a teacher, the notes it reads, stage B's filters or permuted
answers, a seed), the analysis plan's grid of them, and the commands that run an arm through the driver, the
baselines on the first arm's prompts and the extra n2c2 folders.

experiments/known_answer.py runs them; experiments/known_answer_results.py collects what they wrote.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, NamedTuple, Sequence

import pandas as pd

from clinical_distil import layout
from clinical_distil.files import InputError, write_csv
from clinical_distil.layout import REPO_ROOT as REPO
from clinical_distil.post_process import FILTERS
from clinical_distil.report import read_run_state
from clinical_distil.vllm_engine import MEMORY_SHARE_VARIABLE
from simulation.corpus import CORPUS_FILE

from known_answer_stats import RUN, TASKS  # experiments/: scripts beside each other


# stage B's filters a filtered arm applies: all of them (the stage B notebook's parameters); an unfiltered arm none
ARM_FILTERS = {name: True for name in FILTERS}
# arms run at once share the GPU's memory: their vLLM engines take this much of it between them, the rest is
# left to their training runs
GPU_SHARED_BY_ENGINES = 0.6
TRAINED = "convert_peft"  # the driver's last stage before the student answers
ARMS_AT_ONCE = "arms_at_once.txt"  # in an arm's folder: the most arms its runs let share the GPU, itself included
FILTERED, PERMUTED, AS_WRITTEN = "filtered", "permuted", "as written"


class Arm(NamedTuple):
    teacher: str
    notes: int
    filtered: bool = False
    permuted: bool = False  # stage C's answers permuted within each question type: the format-only fine-tune
    seed: int | None = None  # stage C's sampling and the training run; None: the config's

    @property
    def label(self) -> str:
        return f"{self.teacher}:{self.notes}" + "".join(f":{part}" for part in self.parts)

    @property
    def parts(self) -> list[str]:
        return ([FILTERED] if self.filtered else []) + ([PERMUTED] if self.permuted else []) + \
            ([f"seed{self.seed}"] if self.seed is not None else [])

    @property
    def filters(self) -> str:
        """What the results JSON says of the arm's stage B filters."""
        return ",".join(ARM_FILTERS) if self.filtered else "none"

    @property
    def answers(self) -> str:
        """What the results JSON says of the answers the student trains on."""
        return PERMUTED if self.permuted else AS_WRITTEN

    @property
    def twin(self) -> "Arm":
        return self._replace(filtered=not self.filtered)

    @property
    def key(self) -> tuple:
        return self.teacher, self.notes, self.filters, self.answers, self.seed


FORMAT_ONLY, REFERENCE_STUDENT = "student - format-only student", "student - reference-teacher student"


def compared_with(arm: Arm, arms: Sequence[Arm]) -> list[tuple[Arm, str]]:
    """The other students an arm's student is compared with over the same patients, where they are among `arms`
    (both answered in one run): its format-only twin (same teacher, size and seed, answers permuted), and for a
    teacher other than the reference, the reference teacher's student of the same size and seed."""
    if arm.permuted or arm.filtered:
        return []
    candidates = [(arm._replace(permuted=True), FORMAT_ONLY)]
    if arm.teacher != "reference":
        candidates.append((arm._replace(teacher="reference"), REFERENCE_STUDENT))
    return [(other, comparison) for other, comparison in candidates if other in arms]


def comparison_partners(arm: Arm, arms: Sequence[Arm]) -> list[Arm]:
    """The arms among `arms` whose students are compared with `arm`'s, either way round."""
    return [other for other in arms if other != arm and (
        any(partner == other for partner, _ in compared_with(arm, arms))
        or any(partner == arm for partner, _ in compared_with(other, arms)))]


def known_teacher(teacher: str) -> bool:
    """reference, reference@P (its answers right with chance P), text-only, or self (the student as teacher)."""
    name, at, precision = teacher.partition("@")
    if not at:
        return teacher in ("reference", "text-only", "self")
    try:
        return name == "reference" and 0 < float(precision) <= 1
    except ValueError:
        return False


ARM_FORM = ("write TEACHER:NOTES, then :filtered or :permuted and :seedN where wanted, with TEACHER reference, "
            "reference@P (P in (0, 1]), text-only or self, e.g. reference:150, reference@0.8:150:seed2 or "
            "self:100:filtered")


def parse_arms(arms: str | tuple, seeds: str | int | tuple | None = None) -> list[Arm]:
    """The arms named, each once per seed of `seeds` where it names no seed of its own."""
    parsed = []
    for arm in (arms.split(",") if isinstance(arms, str) else arms):
        teacher, _, rest = str(arm).strip().partition(":")
        notes, *parts = rest.split(":")
        seed = [int(part[4:]) for part in parts if re.fullmatch(r"seed\d+", part)]
        kinds = [part for part in parts if part in (FILTERED, PERMUTED)]
        if not known_teacher(teacher) or not notes.isdigit() or int(notes) < 1 or len(kinds) + len(seed) < len(
                parts) or len(set(kinds)) < len(kinds) or len(kinds) > 1 or len(seed) > 1:
            raise InputError(f"arm {arm!r}: {ARM_FORM}")
        parsed.append(Arm(teacher, int(notes), FILTERED in kinds, PERMUTED in kinds, seed[0] if seed else None))
    chosen = parse_seeds(seeds)
    if chosen:
        parsed = [each for arm in parsed for each in ([arm] if arm.seed is not None else
                                                      [arm._replace(seed=seed) for seed in chosen])]
    if len(set(parsed)) < len(parsed):
        raise InputError(f"--arms names an arm twice ({arms}); give each once")
    return parsed


def parse_seeds(seeds: str | int | tuple | None) -> list[int]:
    if seeds in (None, ""):
        return []
    values = seeds if isinstance(seeds, (tuple, list)) else str(seeds).split(",")
    if not all(str(value).strip().isdigit() for value in values):
        raise InputError(f"--seeds must be whole numbers separated by commas, e.g. 1,2,3; got {seeds!r}")
    if len({int(str(value).strip()) for value in values}) < len(values):
        raise InputError(f"--seeds names a seed twice ({seeds!r}); give each once")
    return [int(str(value).strip()) for value in values]


def grid_arms(notes: tuple[int, ...], precision: str = "0.8", seeds: tuple[int, ...] = (1, 2, 3)) -> list[Arm]:
    """The analysis plan's grid (docs/known_answer.md), its first arm the reference teacher at the largest size
    (it makes the base's answers and the worked examples): {reference, reference@P, text-only} x seeds at the
    largest size, the reference teacher at the other sizes, and the format-only fine-tune at the largest size."""
    largest, others = max(notes), sorted(set(notes) - {max(notes)}, reverse=True)
    teachers = ("reference", f"reference@{precision}", "text-only")
    return ([Arm("reference", largest, seed=seed) for seed in seeds]
            + [Arm(teacher, largest, seed=seed) for teacher in teachers[1:] for seed in seeds]
            + [Arm("reference", size, seed=seed) for size in others for seed in seeds]
            + [Arm("reference", largest, permuted=True, seed=seed) for seed in seeds])


def arm_root(corpus: Path, arm: Arm) -> Path:
    return corpus / "arms" / "-".join([arm.teacher, str(arm.notes), *arm.parts])


def share_teacher_replies(source: Path, target: Path, notes: int) -> None:
    """A twin's selected notes and teacher replies, copied (times kept, so the driver finds them done); the
    stage A manifests name the notes file they read, which is now the target's own copy."""
    for folder in (layout.notes_dir, lambda root: layout.chunks_dir(root, notes)):
        if folder(source).is_dir():
            shutil.copytree(folder(source), folder(target), dirs_exist_ok=True)
    for manifest in layout.chunks_dir(target, notes).glob("manifest*.json"):
        times = manifest.stat()
        manifest.write_text(manifest.read_text().replace(json.dumps(str(source))[1:-1], json.dumps(str(target))[1:-1]))
        os.utime(manifest, ns=(times.st_atime_ns, times.st_mtime_ns))


def items_per_type(root: Path, config: Path) -> int:
    """Items per question type for a filtered arm's twin, so that both train on as many items: the filtered arm's
    balanced set (both splits) shared out over every type the twin balances. The filters can empty a type the
    twin still has (SmolLM2's numeric items all lack their quote), so matching per type alone gives the twin more."""
    from clinical_distil.run_settings import RunSettings
    from clinical_distil.prompts import COMBOS
    from clinical_distil.stages import CreateSettings

    settings = RunSettings.from_sources(str(config))
    name = layout.training_name(settings.input_file, settings.min_difficulty)
    tables = [pd.read_csv(layout.training_table(layout.raw_dir(root), split, name)) for split in ("train", "test")]
    asked = CreateSettings.from_values(settings.create).question_types
    types = [question_type for question_type in COMBOS[settings.input_file] if question_type in asked]
    return max(1, len(pd.concat(tables)) // max(1, len(types)))


def prepare_arm(corpus: Path, root: Path, first: Path | None) -> None:
    """The arm's data root: the corpus's facts beside its notes, and the first arm's prompts and base answers."""
    facts = layout.facts_file(layout.notes_file(root, "any"))
    if not facts.exists():
        facts.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(layout.facts_file(layout.corpus_notes(corpus)), facts)
    if first is None or first == root:
        return
    for task in TASKS:  # copies keep their times, so the driver finds them up to date
        for source, target in ((layout.eval_data_dir(first, task), layout.eval_data_dir(root, task)),
                               (layout.model_outputs(first, task, f"{RUN}-base"),
                                layout.model_outputs(root, task, f"{RUN}-base"))):
            if source.is_dir() and not target.exists():
                shutil.copytree(source, target)


def arm_flags(config: Path, corpus: Path, root: Path, arm: Arm, self_teacher: str, engine: str | None = None,
              per_type: int | None = None, to_stage: str | None = None) -> dict[str, Any]:
    """The driver's settings for one arm (`engine`: stage A's and the answers' engine, else the config's;
    `per_type`: stage C's items per type; `to_stage`: the last stage to run)."""
    summary = json.loads((corpus / CORPUS_FILE).read_text())
    flags: dict[str, Any] = {
        "data_dir": str(root), "reports_dir": str(root / layout.REPORTS.name),
        "results_dir": str(root / layout.RESULTS.name), "models_dir": str(root / layout.MODELS.name),
        "notes": str(layout.corpus_notes(corpus)), "select": {"num_notes": arm.notes},
        "teacher": self_teacher if arm.teacher == "self" else arm.teacher,
        "eval": {task: {"input_dir": str(corpus / folder)} for task, folder in summary["eval_input_dirs"].items()}}
    if arm.filtered:
        flags["post_process"] = ARM_FILTERS
    # a seed sets stage C's sampling (and its split) and the training run's
    prepare = ({"per_type": per_type} if per_type is not None else {}) | (
        {"seed": arm.seed} if arm.seed is not None else {}) | ({"permute_answers": True} if arm.permuted else {})
    if prepare:
        flags["prep_training"] = prepare
    if arm.seed is not None:
        flags["finetune"] = {"seed": arm.seed}
    if to_stage:
        flags["to_stage"] = to_stage
    if engine:
        flags["engine"] = engine
    return flags


def arm_command(config: Path, corpus: Path, root: Path, arm: Arm, self_teacher: str,
                engine: str | None = None, per_type: int | None = None, to_stage: str | None = None) -> list[str]:
    """The driver's command for one arm (arm_flags)."""
    argv = [sys.executable, str(REPO / "run-pipeline.py"), "--config", str(config)]
    for name, value in arm_flags(config, corpus, root, arm, self_teacher, engine, per_type, to_stage).items():
        argv += [f"--{name}", json.dumps(value) if isinstance(value, dict) else str(value)]
    return argv


def arm_layout(config: Path, corpus: Path, arm: Arm, self_teacher: str, engine: str | None,
               per_type: int | None = None):
    """The driver's resolved run for an arm (run_settings.RunLayout): every stage's settings as the arm runs them."""
    from clinical_distil.run_settings import RunSettings, layout_for

    flags = arm_flags(config, corpus, arm_root(corpus, arm), arm, self_teacher, engine, per_type)
    return layout_for(RunSettings.from_sources(str(config), **flags))


def baseline_commands(config: Path, corpus: Path, first: Arm, self_teacher: str, engine: str | None,
                      baselines: list[str], per_type: int | None = None) -> list[tuple[str, list[str], None]]:
    """eval-inference.py for each baseline and task, into the first arm's outputs/{task}/known-answer-{baseline}:
    the base's own answering settings (engine, sampling, context) with the text-only rules in its place (rules), or
    with worked examples from the first arm's training set before each prompt (few-shot)."""
    import dataclasses

    from clinical_distil.pipeline import _script

    root = arm_root(corpus, first)
    run_layout = arm_layout(config, corpus, first, self_teacher, engine, per_type)
    worked = layout.training_dataset(layout.raw_dir(root), "train", run_layout.training)
    tasks = list(run_layout.tasks)
    base = run_layout.settings[f"eval_inference:{tasks[0]}:base"]  # the same answering settings for every task
    per_task = [run_layout.settings[f"eval_inference:{task}:base"] for task in tasks]
    commands = []
    for baseline in baselines:  # every task with one model load, into outputs/{task}/known-answer-{baseline}
        settings = dataclasses.replace(
            base, model_name=f"{RUN}-{baseline}", output_dir=None, dataset_name=",".join(tasks),
            input_file=",".join(item.input_file for item in per_task),
            num_inference=[item.num_inference for item in per_task],
            **({"model_id": "text-only"} if baseline == "rules" else {"worked_examples": str(worked)}))
        commands.append((f"{baseline} baseline", _script(layout.EVAL_INFERENCE_SCRIPT, settings), None))
    return commands


def run_commands(commands: list[tuple[str, list[str], Path | None]], parallel: int,
                 end_on_failure: bool = True, on_done: Callable[[str], None] | None = None,
                 needed: str | None = None) -> dict[str, int]:
    """Run (label, command, log file or None for this terminal) commands, `parallel` at a time.

    Arms are independent once the first has made the base model's answers, and a 135M student leaves
    most of a GPU idle, so several arms share one: each vLLM engine then takes GPU_SHARED_BY_ENGINES / parallel
    of its memory. A failed arm lets the others finish (each resumes on a rerun) and then ends this run with
    its exit code; with `end_on_failure` False the failed commands' exit codes are returned instead, by label.
    `on_done` is called with each command's label as it succeeds (an error there ends the run once the running
    commands have ended); when the command labelled `needed` fails, no further command starts.
    """
    env, at_once = dict(os.environ), min(parallel, len(commands))
    if at_once > 1:
        env[MEMORY_SHARE_VARIABLE] = f"{GPU_SHARED_BY_ENGINES / at_once:.2f}"
    waiting, running, failed, errors = list(commands), [], {}, []
    while waiting or running:
        while waiting and len(running) < parallel:
            label, argv, log = waiting.pop(0)
            print(f"== arm {label}: {' '.join(argv[1:])}" + (f" (log: {log})" if log else ""), flush=True)
            output = open(log, "a") if log else None  # noqa: SIM115 (closed when the arm ends)
            running.append((label, subprocess.Popen(argv, cwd=REPO, env=env, stdout=output,
                                                    stderr=subprocess.STDOUT if output else None), output, log))
        time.sleep(0.2)
        for entry in [entry for entry in running if entry[1].poll() is not None]:
            label, process, output, log = entry
            running.remove(entry)
            if output:
                output.close()
            where = f", see {log}" if log else ""
            ended = "done" if process.returncode == 0 else f"failed (exit code {process.returncode}{where})"
            print(f"== arm {label}: {ended}", flush=True)
            if process.returncode != 0:
                failed[label] = process.returncode
                if label == needed:
                    waiting.clear()
            elif on_done is not None:
                try:
                    on_done(label)
                except Exception as error:  # noqa: BLE001 (raised below, once no arm is left running)
                    print(f"== arm {label}: finished, but could not be logged: {error}", flush=True)
                    errors.append(error)
    if errors:
        raise errors[0]
    if failed and end_on_failure:
        raise SystemExit(next(iter(failed.values())))
    return failed


def n2c2_folders(value: str | tuple | None) -> list[Path]:
    """--n2c2_dir's folders (repeated, or comma-separated), each checked to hold labelled n2c2 XML files."""
    if value in (None, ""):
        return []
    folders = [layout.resolve(str(part).strip()) for part in (value if isinstance(value, (tuple, list))
                                                              else str(value).split(",")) if str(part).strip()]
    for folder in folders:
        if not folder.is_dir() or not any(folder.glob("*.xml")):
            raise InputError(f"--n2c2_dir {folder} holds no n2c2 XML files; give a folder of them (e.g. the n2c2 "
                             "2018 track 1 test folder)")
    names = [n2c2_name(folder) for folder in folders]
    if len(set(names)) < len(names):
        raise InputError(f"--n2c2_dir names two folders of one name ({', '.join(names)}); give each once")
    return folders


def n2c2_name(folder: Path) -> str:
    """An extra n2c2 folder's task name in the results: n2c2:{folder} (n2c2:{parent}-{folder} for a split)."""
    return "n2c2:" + (f"{folder.parent.name}-{folder.name}" if folder.name in ("train", "test") else folder.name)


def n2c2_root(corpus: Path, folder: Path) -> Path:
    """Where an extra n2c2 folder's prompts and every model's answers to them go."""
    return corpus / "n2c2-dirs" / n2c2_name(folder).removeprefix("n2c2:")


def n2c2_commands(config: Path, corpus: Path, arms: list[Arm], self_teacher: str, engine: str | None,
                  folders: list[Path]) -> list[tuple[str, list[str], None]]:
    """Each extra n2c2 folder's prompts (written once, as the i2b2 preprocess notebook writes them) and the
    eval-inference commands of the base and of every arm's student, on the arms' own answering settings."""
    import dataclasses

    from clinical_distil.pipeline import _script
    from clinical_distil.preprocess import n2c2_prompts

    layouts = [arm_layout(config, corpus, arm, self_teacher, engine) for arm in arms] if folders else []
    commands = []
    for folder in folders:
        root = n2c2_root(corpus, folder)
        prompts = layout.eval_file(root, "i2b2", "test")
        if not prompts.exists():
            frame = n2c2_prompts(folder)
            if frame["label"].isna().any():
                raise InputError(f"--n2c2_dir {folder} holds files without gold tags; give a labelled folder")
            write_csv(frame, prompts)
        for index, (arm, run_layout) in enumerate(zip(arms, layouts)):
            roles = ([("base", "base")] if index == 0 else []) + [("distilled", arm_root(corpus, arm).name)]
            for role, name in roles:
                answering = run_layout.settings[f"eval_inference:i2b2:{role}"]
                settings = dataclasses.replace(
                    answering, data_dir=str(root), dataset_name="i2b2", input_file="test", num_inference="all",
                    model_name=f"{RUN}-{name}", output_dir=str(layout.model_outputs(root, "i2b2", f"{RUN}-{name}")))
                commands.append((f"{role} of {arm.label} on {n2c2_name(folder)}",
                                 _script(layout.EVAL_INFERENCE_SCRIPT, settings), None))
    return commands


def parse_sizes(grid: str | int | tuple) -> tuple[int, ...]:
    values = grid if isinstance(grid, (tuple, list)) else str(grid).split(",")
    if len(values) != 3 or not all(str(value).strip().isdigit() and int(value) > 0 for value in values):
        raise InputError(f"--grid takes the three teacher note counts of the size curve, e.g. 100,300,1000; "
                         f"got {grid!r}")
    return tuple(int(value) for value in values)


def driver_stages(root: Path) -> dict[str, Any]:
    """The driver's record of the arm's stages (status, seconds, steps), empty before its first run."""
    return read_run_state(layout.report_dir(root / layout.REPORTS.name, RUN) / "run.json").get("stages", {})


def finished_arm(root: Path) -> bool:
    """Whether the driver has run every stage of the arm, its report included."""
    return (driver_stages(root).get("report") or {}).get("status") in ("ran", "skipped")


def arms_at_once(root: Path) -> int | None:
    """The most arms that could share the GPU with this one over its runs (None before any run said)."""
    marker = root / ARMS_AT_ONCE
    return int(marker.read_text()) if marker.exists() else None


def run_arms(config: Path, corpus: Path, chosen: list[Arm], self_teacher: str, engine: str | None, parallel: int,
             baselines: list[str], on_done: Callable[[Arm], None] | None = None) -> None:
    """Every arm through the driver: the first makes the prompts and the base model's answers the others reuse
    (beside it, with `parallel` above 1, the next arms train their students), then the baselines answer on the
    first arm's prompts, then the other arms finish, `parallel` at a time; an arm that failed beside others runs
    once more alone before the run ends with its exit code. `on_done` is called with each arm as it finishes (the
    first once its baselines have answered too)."""
    for arm in chosen:
        prepare_arm(corpus, arm_root(corpus, arm), None)
    # a filtered arm first runs to stage C (its teacher's replies, or its twin's), so that its twin trains on
    # as many items as it kept
    per_type = {}
    for arm in [arm for arm in chosen if arm.filtered]:
        root, twin_root = arm_root(corpus, arm), arm_root(corpus, arm.twin)
        share_teacher_replies(twin_root, root, arm.notes)
        run_commands([(f"{arm.label} to stage C", arm_command(config, corpus, root, arm, self_teacher, engine,
                                                              to_stage="prep_training"), None)], 1)
        if arm.twin in chosen:
            per_type[arm.twin] = items_per_type(root, config)
            share_teacher_replies(root, twin_root, arm.notes)
    first = arm_root(corpus, chosen[0])
    commands = []
    for arm in chosen:
        root = arm_root(corpus, arm)
        log = root / "bench.log" if parallel > 1 and root != first else None
        commands.append((arm.label, arm_command(config, corpus, root, arm, self_teacher, engine,
                                                per_type=per_type.get(arm)), log))
    # while the first arm makes the prompts and the base's answers, the next arms train: their own answers wait
    # for the base's, their training does not
    early = chosen[1:1 + 2 * (parallel - 1)]
    training = [(f"{arm.label} to its student", arm_command(config, corpus, arm_root(corpus, arm), arm, self_teacher,
                                                            engine, per_type.get(arm), to_stage=TRAINED),
                 arm_root(corpus, arm) / "bench.log") for arm in early]
    to_run = [arm for arm in chosen if not finished_arm(arm_root(corpus, arm))]
    for arm in to_run:  # the most arms that could share the GPU with it over its runs, for reading its seconds
        before = arms_at_once(arm_root(corpus, arm)) or 0
        (arm_root(corpus, arm) / ARMS_AT_ONCE).write_text(f"{max(before, min(parallel, len(to_run)))}\n")
    # an early training that fails (out of GPU memory beside the others, say) runs again with its arm below; the
    # others need the first arm's prompts and base answers
    failed = run_commands(commands[:1] + training, parallel, end_on_failure=False, needed=commands[0][0])
    if commands[0][0] in failed and training:
        failed = again_alone(commands[:1], failed)
    if commands[0][0] in failed:
        raise SystemExit(failed[commands[0][0]])
    if on_done is not None:
        on_done(chosen[0])
    if baselines:
        run_commands(baseline_commands(config, corpus, chosen[0], self_teacher, engine, baselines,
                                       per_type.get(chosen[0])), 1)
        if on_done is not None:  # logged again, now with the baselines
            on_done(chosen[0])
    for arm in chosen[1:]:  # the first arm's prompts and base answers, now that they exist
        prepare_arm(corpus, arm_root(corpus, arm), first)
    by_label = {arm.label: arm for arm in chosen}
    logged = None if on_done is None else lambda label: on_done(by_label[label])
    failed = run_commands(commands[1:], parallel, end_on_failure=False, on_done=logged)
    if failed and min(parallel, len(commands) - 1) > 1:
        failed = again_alone(commands[1:], failed, logged)
    if failed:
        raise SystemExit(next(iter(failed.values())))


def again_alone(commands: list[tuple[str, list[str], Path | None]], failed: dict[str, int],
                on_done: Callable[[str], None] | None = None) -> dict[str, int]:
    """The commands that failed beside others, once more one at a time (each resumes where it stopped); returns
    those that failed again, with their exit codes. A failure beside others may be theirs: vLLM's start fails when
    another process frees GPU memory while it measures what is free (vllm-project/vllm#56830), as an arm's training
    or engine does when it ends."""
    again = [command for command in commands if command[0] in failed]
    for label, _, _ in again:
        print(f"== arm {label}: failed beside other arms; once more, alone", flush=True)
    return run_commands(again, 1, end_on_failure=False, on_done=on_done)
