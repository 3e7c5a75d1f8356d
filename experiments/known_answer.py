"""The known-answer benchmark: does distillation make a better extractor, on patients whose truth is known?

    python experiments/known_answer.py --engine vllm                     # the arms of experiments/RESULTS.md (one GPU)
    python experiments/known_answer.py --arms reference:25,reference:300,self:25 --parallel 3   # transformers engine
    python experiments/known_answer.py --arms self:300 --engine vllm --keep_earlier True
    python experiments/known_answer.py --corpus data/known-answer-final --split final --grid 100,300,1000 \
        --engine vllm                                                    # the analysis plan's grid (docs/known_answer.md)

Writes a simulated corpus (python -m simulation.corpus) once, then runs `run-pipeline.py --config
configs/known-answer.yaml` once per arm, an arm being a teacher and a number of notes: `reference`
(the fact-sheet writer), `reference@P` (the same, each answer wrong with chance 1 - P), `text-only` (rules
that read the note alone, teachers/) or `self` (the student's own base model as teacher, --self_teacher), and
`:filtered` for the same teacher's items through every stage B filter (quote in the note, answer type,
duplicates, near-duplicates). A filtered arm reuses its unfiltered twin's teacher replies, and the twin
then trains on as many items as the filtered arm kept (stage C's per_type: the filtered arm's items shared out
over every question type, since the filters can empty a type), so the two differ in which items they train
on, not in how many:

    python experiments/known_answer.py --arms self:100:filtered,self:100 --engine vllm

Every arm
trains the same student on its teacher's items and scores it and its base on the corpus's held-out
patients (annotated questions, n2c2 XML, apixaban criteria). The first arm runs alone and makes the
base model's answers, which the later arms reuse; those run `--parallel` at a time on the same GPU
(a 135M student leaves most of it idle), each logging to arms/{teacher}-{notes}/bench.log.
Rerunning resumes: the driver skips what is done. With --keep_earlier True, the records of arms measured
earlier on the same corpus by the same reference teacher (in --output, arms not run now) are kept, so a
learning curve can grow over runs; results measured otherwise are kept whole under `superseded`. Every
arm's record says its run (date, card, command, code: the commit measured) and config digest; the file says
its reference teacher's digest: a digest of its behaviour (its replies about a small corpus of fixed seed,
simulation.reference_teacher.behaviour_digest), so that code moved or reworded keeps earlier arms comparable.
`python bench/results.py` writes experiments/RESULTS.md from the file.

An arm may add `:permuted` (stage C's answers permuted within each question type: the format-only fine-tune) and
`:seedN` (stage C's sampling and the training run; --seeds 1,2,3 gives every arm without one each seed).
--baselines rules,few-shot answers the first arm's prompts with the text-only rules and with the base model
reading worked examples from the first arm's training set, on the base's own answering settings. --grid
N1,N2,N3 runs the analysis plan's arms and both baselines, the first arm (the reference teacher at the largest
size, seed 1) before the others. Every arm and baseline is compared with the base on the same patients (a
paired patient-level bootstrap, experiments/known_answer_stats.py), per seed and over seeds, with a per-criterion
table. On the final split (--split final) the results are a log, bench/known_answer.json: nothing is replaced,
an arm whose answers are already logged is not logged again, and a rerun that answers otherwise is a new record;
`python bench/results.py` writes its tables into bench/RESULTS.md and the script draws the two curves beside it.

Results go to experiments/known_answer.json (dev split): one record per arm, task and model (balanced accuracy with its
95% interval, over questions or, for annotated-synthetic, over examples; micro-F1; the official n2c2
micro-F1; accuracy per question type), the teacher's precision against the truth per question type,
and each arm's seconds per stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

from clinical_distil import layout
from clinical_distil.cli import run
from clinical_distil.files import InputError, read_csv, write_csv, write_text
from clinical_distil.layout import REPO_ROOT as REPO
from clinical_distil.post_process import FILTERS
from clinical_distil.tasks import get_task
from simulation import reference_teacher
from simulation.corpus import CORPUS_FILE, write_corpus

import known_answer_stats as stats  # experiments/: scripts beside each other

RUN = "known-answer"  # configs/known-answer.yaml's run name: the same in every arm, so base answers carry over
TASKS = ("annotated-synthetic", "i2b2", "apixaban")


# stage B's filters a filtered arm applies: all of them (the stage B notebook's parameters); an unfiltered arm none
ARM_FILTERS = {name: True for name in FILTERS}
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


def record_key(record: dict) -> tuple:
    """The arm a results record belongs to (records written before filtered, permuted or seeded arms existed are
    unfiltered, as written, of the config's seed)."""
    return (record["teacher"], record["notes"], record.get("filters", "none"), record.get("answers", AS_WRITTEN),
            record.get("seed"))


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


def baseline_commands(config: Path, corpus: Path, first: Arm, self_teacher: str, engine: str | None,
                      baselines: list[str]) -> list[tuple[str, list[str], None]]:
    """eval-inference.py for each baseline and task, into the first arm's outputs/{task}/known-answer-{baseline}:
    the base's own answering settings (engine, sampling, context) with the text-only rules in its place (rules), or
    with worked examples from the first arm's training set before each prompt (few-shot)."""
    import dataclasses

    from clinical_distil.pipeline import _script
    from clinical_distil.run_settings import RunSettings, layout_for

    root = arm_root(corpus, first)
    run_layout = layout_for(RunSettings.from_sources(str(config), **arm_flags(config, corpus, root, first,
                                                                              self_teacher, engine)))
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


def run_commands(commands: list[tuple[str, list[str], Path | None]], parallel: int) -> None:
    """Run (label, command, log file or None for this terminal) commands, `parallel` at a time.

    Arms are independent once the first has made the base model's answers, and a 135M student leaves
    most of a GPU idle, so several arms share one. A failed arm lets the others finish (each resumes
    on a rerun) and then ends this run with its exit code.
    """
    waiting, running, failed = list(commands), [], []
    while waiting or running:
        while waiting and len(running) < parallel:
            label, argv, log = waiting.pop(0)
            print(f"== arm {label}: {' '.join(argv[1:])}" + (f" (log: {log})" if log else ""), flush=True)
            output = open(log, "a") if log else None  # noqa: SIM115 (closed when the arm ends)
            running.append((label, subprocess.Popen(argv, cwd=REPO, env=dict(os.environ), stdout=output,
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
                failed.append(process.returncode)
    if failed:
        raise SystemExit(failed[0])


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
    from clinical_distil.run_settings import RunSettings, layout_for

    commands = []
    for folder in folders:
        root = n2c2_root(corpus, folder)
        prompts = layout.eval_file(root, "i2b2", "test")
        if not prompts.exists():
            frame = n2c2_prompts(folder)
            if frame["label"].isna().any():
                raise InputError(f"--n2c2_dir {folder} holds files without gold tags; give a labelled folder")
            write_csv(frame, prompts)
        for index, arm in enumerate(arms):
            run_layout = layout_for(RunSettings.from_sources(str(config), **arm_flags(
                config, corpus, arm_root(corpus, arm), arm, self_teacher, engine)))
            roles = ([("base", "base")] if index == 0 else []) + [("distilled", arm_root(corpus, arm).name)]
            for role, name in roles:
                answering = run_layout.settings[f"eval_inference:i2b2:{role}"]
                settings = dataclasses.replace(
                    answering, data_dir=str(root), dataset_name="i2b2", input_file="test", num_inference="all",
                    model_name=f"{RUN}-{name}", output_dir=str(layout.model_outputs(root, "i2b2", f"{RUN}-{name}")))
                commands.append((f"{role} of {arm.label} on {n2c2_name(folder)}",
                                 _script(layout.EVAL_INFERENCE_SCRIPT, settings), None))
    return commands


def collect_n2c2(corpus: Path, arms: list[Arm], folders: list[Path], resamples: int) -> tuple[list, list]:
    """The extra n2c2 folders' rows: each arm's student and the base with the official micro-F1, and the student
    against the base paired over the folder's patients."""
    from clinical_distil.metrics import SCORERS

    runs, paired = [], []
    _, official = SCORERS["n2c2"]
    for folder in folders:
        root, task = n2c2_root(corpus, folder), n2c2_name(folder)
        base = stats.scored_answers(root, "i2b2", "base")
        for arm in arms:
            student = stats.scored_answers(root, "i2b2", arm_root(corpus, arm).name)
            if student is None or base is None:
                continue
            tag = {"teacher": arm.teacher, "notes": arm.notes, "filters": arm.filters, "answers": arm.answers,
                   "seed": arm.seed, "task": task}
            found = stats.compare(student, base, "i2b2", resamples, seed=0)
            for model, frame, score in (("base", base, found["second"]), ("distilled", student, found["first"])):
                runs.append({**tag, "model": model, "examples": len(frame), "balanced_accuracy": score,
                             "n2c2_micro_f1": official(frame)["n2c2_micro_f1"],
                             "parse_failure_rate": float((~frame["parsed"]).mean())})
            paired.append({**tag, "comparison": "student - base",
                           "answers_digest": stats.answers_digest(root, "i2b2", arm_root(corpus, arm).name), **found})
    return runs, paired


def collect(corpus: Path, arms: list[Arm], baselines: tuple[str, ...] = (), resamples: int = 2000) -> dict:
    """The records of the results JSON from the arms' files: each arm's scores per task and model, its paired
    comparisons (student - base; student - its format-only twin), its per-criterion table, the teacher's precision
    and the arm's seconds; the baselines' comparisons with the base (answered in the first arm's data root)."""
    runs, precision, arm_seconds, paired, criteria = [], [], [], [], []
    for arm in arms:
        root = arm_root(corpus, arm)
        tag = {"teacher": arm.teacher, "notes": arm.notes, "filters": arm.filters, "answers": arm.answers,
               "seed": arm.seed}
        training = layout.training_summary(root / layout.RESULTS.name / RUN)
        train_items = json.loads(training.read_text())["train_examples"] if training.exists() else None
        for task in TASKS:
            path = layout.evaluation_dir(root, task, RUN) / "summary.csv"
            if not path.exists():
                continue
            over = get_task(task).interval_over  # questions, or examples where questions are written per note
            for row in read_csv(path).to_dict("records"):
                model = row["model"].removeprefix(f"{RUN}-")
                runs.append({**tag, "train_items": train_items, "task": task,
                             "model": model, "examples": row["examples"],
                             "balanced_accuracy": row["balanced_accuracy"],
                             "ci_over": over, "ci_low": row[f"balanced_accuracy_ci_{over}_low"],
                             "ci_high": row[f"balanced_accuracy_ci_{over}_high"], "micro_f1": row["micro_f1"],
                             "n2c2_micro_f1": row.get("n2c2_micro_f1"),
                             "parse_failure_rate": row["parse_failure_rate"],
                             # annotated-synthetic: accuracy per question type (format and abstention apart
                             # from finding a fact)
                             **{key: row[key] for key in row if key.startswith("accuracy_")}})
            student, base = (stats.scored_answers(root, task, model) for model in ("distilled", "base"))
            if student is None or base is None:
                continue
            paired.append({**tag, "task": task, "comparison": "student - base", "train_items": train_items,
                           "answers_digest": stats.answers_digest(root, task, "distilled"),
                           **stats.compare(student, base, task, resamples, seed=0)})
            criteria += [{**tag, "task": task, **row} for row in stats.criterion_rows(student, base, task)]
            format_only = arm._replace(permuted=True)
            if not arm.permuted and not arm.filtered and format_only in arms:
                other = stats.scored_answers(arm_root(corpus, format_only), task, "distilled")
                if other is not None:
                    paired.append({**tag, "task": task, "comparison": "student - format-only student",
                                   "train_items": train_items,
                                   "answers_digest": stats.answers_digest(root, task, "distilled"),
                                   **stats.compare(student, other, task, resamples, 0)})
        state = layout.report_dir(root / layout.REPORTS.name, RUN) / "run.json"
        if state.exists():  # the driver's seconds per stage, summed over sessions
            stages = json.loads(state.read_text()).get("stages", {})
            arm_seconds.append({**tag, "seconds": round(sum(
                record.get("seconds") or 0 for record in stages.values()), 1),
                "stages": {stage: record.get("seconds") for stage, record in stages.items()}})
        truth = layout.teacher_truth_file(layout.report_dir(root / layout.REPORTS.name, RUN))
        if truth.exists():
            precision += [{**tag, **row} for row in read_csv(truth).to_dict("records")]
    first = arm_root(corpus, arms[0]) if arms else None
    for baseline in baselines:
        for task in TASKS:
            answers, base = (stats.scored_answers(first, task, model) for model in (baseline, "base"))
            if answers is not None and base is not None:
                paired.append({"teacher": baseline, "notes": None, "filters": "none", "answers": AS_WRITTEN,
                               "seed": None, "task": task, "comparison": f"{baseline} - base", "train_items": None,
                               "answers_digest": stats.answers_digest(first, task, baseline),
                               **stats.compare(answers, base, task, resamples, seed=0)})
    clean = lambda value: None if isinstance(value, float) and value != value else value  # noqa: E731 (NaN -> null)
    tidy = lambda records: [{key: clean(value) for key, value in record.items()} for record in records]  # noqa: E731
    results = {"arm_seconds": arm_seconds, "runs": tidy(runs), "teacher_precision": tidy(precision)}
    if paired:
        results |= {"paired": tidy(paired), "over_seeds": stats.mean_over_seeds(paired), "per_criterion": tidy(criteria)}
    return results


def corpus_summary(corpus: Path) -> dict:
    """The corpus's summary as the results JSON holds it (without the long list of held-out ids)."""
    summary = json.loads((corpus / CORPUS_FILE).read_text())
    summary.pop("held_out_subject_ids", None)
    return summary


def measured_alike(earlier: dict, results: dict) -> bool:
    """Whether two results files measured the same thing: the same corpus and the same reference teacher."""
    return (earlier.get("corpus") == results.get("corpus")
            and earlier.get("reference_teacher") == results.get("reference_teacher"))


def earlier_results(output: Path) -> dict | None:
    """The results already in `output`, if any."""
    if not output.exists():
        return None
    try:
        return json.loads(output.read_text())
    except json.JSONDecodeError as error:
        raise InputError(f"{output} is not a results JSON ({error}); give another --output") from None


def card() -> str:
    """The accelerator the arms ran on, in words."""
    import torch

    if not torch.cuda.is_available():
        return "CPU"
    count = torch.cuda.device_count()
    return f"{torch.cuda.get_device_name(0)} ({count} GPU{'s' if count > 1 else ''} visible)"


def code_version() -> str:
    """The commit measured, `-dirty` when the working tree differs from it (`git describe`); in a copy of the tree
    without git, the commit the copy was made from as CLINICAL_DISTIL_CODE names it, else unknown."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=REPO,
                              capture_output=True, text=True)
    except OSError:  # no git on the machine
        done = None
    if done is not None and done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    return os.environ.get("CLINICAL_DISTIL_CODE", "unknown") + " (copy without git)" * (
        "CLINICAL_DISTIL_CODE" in os.environ)


def check_same_log(earlier: dict | None, results: dict, output: Path) -> None:
    """The final split's log holds one corpus measured by one reference teacher: another is refused."""
    if earlier is not None and not measured_alike(earlier, results):
        raise InputError(f"{output} logs the final split of another corpus or reference teacher; the log is never "
                         "replaced: give another --output")


def keep_earlier_arms(results: dict, output: Path, arms: list[Arm]) -> dict:
    """`results` with `output`'s earlier records. Measured alike (same corpus, same reference teacher): its
    other arms' records come before the new ones, and arms run now replace theirs. Measured otherwise: the
    earlier file is kept whole under `superseded` (newest first), apart from the new arms' table."""
    earlier = earlier_results(output)
    if earlier is None:
        return results
    superseded = earlier.pop("superseded", [])
    if results.get("corpus", {}).get("split") == "final":
        # the final split's log: nothing is replaced; an arm logged with the same answers is not logged again
        check_same_log(earlier, results, output)
        logged = {(record_key(record), record["comparison"], record["task"], record.get("answers_digest"))
                  for record in earlier.get("paired", [])}
        again = {record_key(record) for record in results.get("paired", []) if (
            record_key(record), record["comparison"], record["task"], record.get("answers_digest")) in logged}
        ran = set()
        for key in LOGGED:
            results[key] = earlier.get(key, []) + [record for record in results.get(key, [])
                                                   if record_key(record) not in again]
        results["over_seeds"] = stats.mean_over_seeds(latest_paired(results["paired"]))
        return results
    if not measured_alike(earlier, results):
        results["superseded"] = [earlier, *superseded]
        return results
    ran = {arm.key for arm in arms}
    for key in LOGGED:
        kept = [record for record in earlier.get(key, []) if record_key(record) not in ran]
        results[key] = kept + results.get(key, [])
    if results.get("paired"):
        results["over_seeds"] = stats.mean_over_seeds(results["paired"])
    # every kept arm says when and where it ran (files from before arm records carried it: the file's own)
    timed = {record_key(record) for record in results["arm_seconds"]}
    carried = [{"teacher": record["teacher"], "notes": record["notes"], "seconds": None}
               | ({"filters": record["filters"]} if "filters" in record else {})
               for record in results["runs"] if record_key(record) not in timed | ran]
    run_record = {"date": earlier.get("date"), "card": earlier.get("card")} | {
        key: earlier[key] for key in ("command", "code") if key in earlier}
    results["arm_seconds"] = [run_record | record
                              for record in list({record_key(r): r for r in carried}.values())
                              + results["arm_seconds"]]
    if superseded:
        results["superseded"] = superseded
    return results


LOGGED = ("runs", "teacher_precision", "arm_seconds", "paired", "per_criterion")


def latest_paired(paired: list[dict]) -> list[dict]:
    """Of each arm's (or baseline's) comparison and task, the last record logged."""
    latest = {(record_key(record), record["comparison"], record["task"]): record for record in paired}
    return list(latest.values())


def teacher_label(teacher: str, filters) -> str:
    """An arm's teacher as the tables name it, with its stage B filters where it applied them."""
    return teacher if filters in (None, "none") or pd.isna(filters) else f"{teacher}, stage B filters"


def markdown(results: dict) -> str:
    """The arms' table as the script prints it: base against distilled, per arm and task."""
    frame = pd.DataFrame(results["runs"])
    if frame.empty:
        return "(no arm scored yet)"
    lines = ["| teacher | notes | train items | task | base BA [95% CI] | distilled BA [95% CI] | gain "
             "| intervals apart | micro-F1 base -> distilled | n2c2 micro-F1 base -> distilled |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for column, default in (("filters", "none"), ("answers", AS_WRITTEN), ("seed", None)):
        if column not in frame:
            frame[column] = default
    frame["filters"] = frame["filters"].fillna("none")
    frame["answers"] = frame["answers"].fillna(AS_WRITTEN)
    for (teacher, notes, filters, answers, seed, task), group in frame.groupby(
            ["teacher", "notes", "filters", "answers", "seed", "task"], sort=False, dropna=False):
        by_model = {row["model"]: row for row in group.to_dict("records")}
        teacher = teacher_label(teacher, filters) + (", answers permuted" if answers == PERMUTED else "") + (
            f", seed {int(seed)}" if pd.notna(seed) else "")
        base, distilled = by_model.get("base"), by_model.get("distilled")
        if base is None or distilled is None or pd.isna(distilled.get("ci_low")):
            continue  # (an extra n2c2 folder's rows: in the paired table)
        cell = lambda row: f"{row['balanced_accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"  # noqa: E731
        apart = "yes" if distilled["ci_low"] > base["ci_high"] or distilled["ci_high"] < base["ci_low"] else "no"
        n2c2 = (f"{base['n2c2_micro_f1']:.3f} -> {distilled['n2c2_micro_f1']:.3f}"
                if pd.notna(base.get("n2c2_micro_f1")) else "")
        lines.append(f"| {teacher} | {notes} | {distilled['train_items']} | {task} | {cell(base)} | {cell(distilled)} "
                     f"| {distilled['balanced_accuracy'] - base['balanced_accuracy']:+.3f} | {apart} "
                     f"| {base['micro_f1']:.3f} -> {distilled['micro_f1']:.3f} | {n2c2} |")
    return "\n".join(lines)


def precision_markdown(results: dict) -> str:
    """Teacher precision against the truth, per teacher (first arm of each) and question type."""
    frame = pd.DataFrame(results["teacher_precision"])
    if frame.empty:
        return "(no teacher checked yet)"
    lines = ["| teacher | notes | question type | items | verifiable | precision | quote in note |",
             "|---|---|---|---|---|---|---|"]
    show = lambda value: "" if pd.isna(value) else f"{value:.3f}"  # noqa: E731
    for row in frame.to_dict("records"):
        lines.append(f"| {teacher_label(row['teacher'], row.get('filters'))} | {row['notes']} | {row['question_type']} "
                     f"| {int(row['items'])} "
                     f"| {show(row['verifiable'])} | {show(row['precision'])} | {show(row['quote_in_note'])} |")
    return "\n".join(lines)


def main(config: str = "configs/known-answer.yaml", corpus: str = "data/known-answer",
         arms: str = "reference:500,reference:100,self:100", patients: int = 1200,
         seed: int = 7,
         annotated_notes: int = 60, n2c2_test: int = 60, apixaban_notes: int = 48,
         self_teacher: str = "models/SmolLM2-135M-Instruct", output: str = "",
         parallel: int = 1, collect_only: bool = False, keep_earlier: bool = False, engine: str = "",
         split: str = "", seeds: str | tuple = "", grid: str | tuple = "", precision: float = 0.8,
         baselines: str | tuple = "", resamples: int = 2000, n2c2_dir: str | tuple = "") -> None:
    """Run the arms (resuming; after the first, `parallel` at a time, each logging to its arm's folder) and the
    baselines, then write the results JSON (with --keep_earlier, also the other arms already in it) and print the
    tables. --engine auto, vllm or transformers overrides the config's engine for stage A and the answers; --split
    the held-out patients' split of a corpus written now (dev, the default, or final for the analysis plan's runs,
    logged in bench/known_answer.json); --seeds runs each arm once per seed; --grid N1,N2,N3 runs the analysis
    plan's grid at those teacher note counts (--arms is then not read); --baselines rules,few-shot; --n2c2_dir
    (repeatable) an n2c2-format folder of labelled XML files that the base and every student answer too, scored
    as a task of its own with the official micro-F1."""
    corpus_dir, config_path = layout.resolve(corpus), layout.resolve(config)
    chosen = grid_arms(parse_sizes(grid), f"{float(precision):g}", tuple(parse_seeds(seeds) or (1, 2, 3))) \
        if grid else parse_arms(arms, seeds)
    wanted = [str(part).strip() for part in (baselines if isinstance(baselines, (tuple, list)) else
                                             str(baselines).split(",")) if str(part).strip()] if baselines else []
    if grid and not baselines:
        wanted = list(stats.BASELINES)
    if set(wanted) - set(stats.BASELINES):
        raise InputError(f"--baselines takes {', '.join(stats.BASELINES)}; got {baselines!r}")
    if not config_path.exists():
        raise InputError(f"config file not found: {config_path}")
    if not isinstance(parallel, int) or isinstance(parallel, bool) or parallel < 1:
        raise InputError(f"--parallel must be a whole number of arms at a time, at least 1; got {parallel!r}")
    if engine not in ("", "auto", "vllm", "transformers"):
        raise InputError(f"--engine must be auto, vllm or transformers, got {engine!r}")
    if engine == "vllm" and parallel > 1:
        raise InputError(f"--parallel {parallel} with --engine vllm: each vLLM engine takes 90% of the GPU's memory; "
                         "run the arms one at a time (--parallel 1) or on --engine transformers")
    if max(arm.notes for arm in chosen) > patients:
        raise InputError(f"an arm asks for more notes than the corpus has patients ({patients}); raise --patients")
    extra_n2c2 = n2c2_folders(n2c2_dir)
    if split not in ("", "dev", "final"):
        raise InputError(f"--split must be dev or final, got {split!r}")
    written = corpus_summary(corpus_dir).get("split") if (corpus_dir / CORPUS_FILE).exists() else None
    if split and written and split != written:
        raise InputError(f"{corpus_dir} holds the {written} split's held-out patients, not {split}'s; give another "
                         "--corpus")
    final = (split or written) == "final"
    target = layout.resolve(output or ("bench/known_answer.json" if final else "experiments/known_answer.json"))
    started = time.time()
    if keep_earlier or final:  # an unreadable file is found before any arm runs
        earlier_results(target)
    if not collect_only:
        if not written:
            write_corpus(corpus_dir, patients=patients, seed=seed, annotated_notes=annotated_notes,
                         n2c2_test=n2c2_test, apixaban_notes=apixaban_notes, split=split or "dev")
        if final:  # before any arm runs: the log is of this corpus and reference teacher
            check_same_log(earlier_results(target), {"corpus": corpus_summary(corpus_dir),
                                                     "reference_teacher": reference_teacher.behaviour_digest()}, target)
        run_arms(config_path, corpus_dir, chosen, self_teacher, engine or None, parallel, wanted)
        run_commands(n2c2_commands(config_path, corpus_dir, chosen, self_teacher, engine or None, extra_n2c2), 1)
    # every arm's record says its run (date, card, command, code): the results pages name it per row
    run_record = {"date": time.strftime("%Y-%m-%d"), "card": card(),
                  "command": " ".join(["python experiments/known_answer.py", *sys.argv[1:]]), "code": code_version(),
                  "split": corpus_summary(corpus_dir).get("split")}
    digest = hashlib.sha256(config_path.read_bytes()).hexdigest()[:12]
    results = {**run_record, "config": str(config), "corpus": corpus_summary(corpus_dir),
               "reference_teacher": reference_teacher.behaviour_digest(),
               "seconds": round(time.time() - started, 1), **collect(corpus_dir, chosen, tuple(wanted), resamples)}
    results["arm_seconds"] = [{**run_record, "config_digest": digest, **arm} for arm in results["arm_seconds"]]
    n2c2_runs, n2c2_paired = collect_n2c2(corpus_dir, chosen, extra_n2c2, resamples)
    results["runs"] += n2c2_runs
    if n2c2_paired:
        results["paired"] = results.get("paired", []) + n2c2_paired
        results["over_seeds"] = stats.mean_over_seeds(results["paired"])
    for key in ("paired", "per_criterion"):
        results[key] = [{**run_record, **record} for record in results.get(key, [])]
    if keep_earlier or final:
        results = keep_earlier_arms(results, target, chosen)
    write_text(json.dumps(results, indent=1) + "\n", target)
    if final or grid:
        figures = stats.write_figures(latest_paired(results.get("paired", [])), target.parent, target.stem)
        print("figures: " + (", ".join(str(path) for path in figures) or "none yet (a curve needs two points)"))
    print(markdown(results))
    print()
    print(paired_markdown(results))
    print()
    print(precision_markdown(results))


def parse_sizes(grid: str | int | tuple) -> tuple[int, ...]:
    values = grid if isinstance(grid, (tuple, list)) else str(grid).split(",")
    if len(values) != 3 or not all(str(value).strip().isdigit() and int(value) > 0 for value in values):
        raise InputError(f"--grid takes the three teacher note counts of the size curve, e.g. 100,300,1000; "
                         f"got {grid!r}")
    return tuple(int(value) for value in values)


def run_arms(config: Path, corpus: Path, chosen: list[Arm], self_teacher: str, engine: str | None, parallel: int,
             baselines: list[str]) -> None:
    """Every arm through the driver (the first alone: it makes the prompts and the base's answers the others
    reuse), then the baselines on the first arm's prompts, then the other arms `parallel` at a time."""
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
    run_commands(commands[:1], 1)
    if baselines:
        run_commands(baseline_commands(config, corpus, chosen[0], self_teacher, engine, baselines), 1)
    for arm in chosen[1:]:  # the first arm's prompts and base answers, now that they exist
        prepare_arm(corpus, arm_root(corpus, arm), first)
    run_commands(commands[1:], parallel)


def paired_markdown(results: dict) -> str:
    """The primary endpoint per arm and task: the paired difference over patients per seed, and over seeds."""
    rows = latest_paired(results.get("paired", []))
    if not rows:
        return "(no paired comparison yet)"
    lines = ["| teacher | notes | answers | seed | task | comparison | difference [95% CI] | patients |",
             "|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(f"| {teacher_label(row['teacher'], row.get('filters'))} | {row['notes'] or ''} "
                     f"| {row.get('answers', AS_WRITTEN)} | {'' if row.get('seed') is None else row['seed']} "
                     f"| {row['task']} | {row['comparison']} "
                     f"| {row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}] | {row['patients']} |")
    return "\n".join(lines)


def joined_repeats(argv: list[str], flag: str) -> list[str]:
    """`argv` with every `--flag VALUE` (or `--flag=VALUE`) given once, their values joined by commas."""
    values, kept, index = [], [], 0
    while index < len(argv):
        word = argv[index]
        if word == f"--{flag}" and index + 1 < len(argv):
            values.append(argv[index + 1])
            index += 2
            continue
        if word.startswith(f"--{flag}="):
            values.append(word.split("=", 1)[1])
        else:
            kept.append(word)
        index += 1
    return kept + ([f"--{flag}", ",".join(values)] if values else [])


if __name__ == "__main__":
    sys.argv[1:] = joined_repeats(sys.argv[1:], "n2c2_dir")
    run(main)
