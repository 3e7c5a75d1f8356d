"""The known-answer benchmark: does distillation make a better extractor, on patients whose truth is known?

    python experiments/known_answer.py --engine vllm                     # the arms of experiments/RESULTS.md (one GPU)
    python experiments/known_answer.py --arms reference:25,reference:300,self:25 --parallel 3   # transformers engine
    python experiments/known_answer.py --arms self:300 --engine vllm --keep_earlier True

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

Results go to experiments/known_answer.json: one record per arm, task and model (balanced accuracy with its
95% interval, over questions or, for annotated-synthetic, over examples; micro-F1; the official n2c2
micro-F1; accuracy per question type), the teacher's precision against the truth per question type,
and each arm's seconds per stage.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import NamedTuple

import pandas as pd

from clinical_distil import layout
from clinical_distil.cli import run
from clinical_distil.files import InputError, read_csv, write_text
from clinical_distil.layout import REPO_ROOT as REPO
from clinical_distil.post_process import FILTERS
from clinical_distil.tasks import get_task
from simulation import reference_teacher
from simulation.corpus import CORPUS_FILE, write_corpus

RUN = "known-answer"  # configs/known-answer.yaml's run name: the same in every arm, so base answers carry over
TASKS = ("annotated-synthetic", "i2b2", "apixaban")


# stage B's filters a filtered arm applies: all of them (the stage B notebook's parameters); an unfiltered arm none
ARM_FILTERS = {name: True for name in FILTERS}
FILTERED = "filtered"


class Arm(NamedTuple):
    teacher: str
    notes: int
    filtered: bool = False

    @property
    def label(self) -> str:
        return f"{self.teacher}:{self.notes}" + (f":{FILTERED}" if self.filtered else "")

    @property
    def filters(self) -> str:
        """What the results JSON says of the arm's stage B filters."""
        return ",".join(ARM_FILTERS) if self.filtered else "none"

    @property
    def twin(self) -> "Arm":
        return Arm(self.teacher, self.notes, not self.filtered)


def known_teacher(teacher: str) -> bool:
    """reference, reference@P (its answers right with chance P), text-only, or self (the student as teacher)."""
    name, at, precision = teacher.partition("@")
    if not at:
        return teacher in ("reference", "text-only", "self")
    try:
        return name == "reference" and 0 < float(precision) <= 1
    except ValueError:
        return False


def parse_arms(arms: str | tuple) -> list[Arm]:
    parsed = []
    for arm in (arms.split(",") if isinstance(arms, str) else arms):
        teacher, _, rest = str(arm).strip().partition(":")
        notes, _, kind = rest.partition(":")
        if not known_teacher(teacher) or not notes.isdigit() or int(notes) < 1 or kind not in ("", FILTERED):
            raise InputError(f"arm {arm!r}: write TEACHER:NOTES or TEACHER:NOTES:filtered with TEACHER reference, "
                             "reference@P (P in (0, 1]), text-only or self, e.g. reference:150, reference@0.8:150 or "
                             "self:100:filtered")
        parsed.append(Arm(teacher, int(notes), kind == FILTERED))
    if len(set(parsed)) < len(parsed):
        raise InputError(f"--arms names an arm twice ({arms}); give each once")
    return parsed


def arm_root(corpus: Path, arm: Arm) -> Path:
    return corpus / "arms" / (f"{arm.teacher}-{arm.notes}" + (f"-{FILTERED}" if arm.filtered else ""))


def record_key(record: dict) -> tuple:
    """The arm a results record belongs to (records written before filtered arms existed are unfiltered)."""
    return record["teacher"], record["notes"], record.get("filters", "none")


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


def arm_command(config: Path, corpus: Path, root: Path, arm: Arm, self_teacher: str,
                engine: str | None = None, per_type: int | None = None, to_stage: str | None = None) -> list[str]:
    """The driver's command for one arm (`engine`: stage A's and the answers' engine, else the config's;
    `per_type`: stage C's items per type; `to_stage`: the last stage to run)."""
    summary = json.loads((corpus / CORPUS_FILE).read_text())
    evals = {task: {"input_dir": str(corpus / folder)} for task, folder in summary["eval_input_dirs"].items()}
    argv = [sys.executable, str(REPO / "run-pipeline.py"), "--config", str(config), "--data_dir", str(root),
            "--reports_dir", str(root / layout.REPORTS.name), "--results_dir", str(root / layout.RESULTS.name),
            "--models_dir", str(root / layout.MODELS.name), "--notes", str(layout.corpus_notes(corpus)),
            "--select", json.dumps({"num_notes": arm.notes}),
            "--teacher", self_teacher if arm.teacher == "self" else arm.teacher, "--eval", json.dumps(evals)]
    if arm.filtered:
        argv += ["--post_process", json.dumps(ARM_FILTERS)]
    if per_type is not None:
        argv += ["--prep_training", json.dumps({"per_type": per_type})]
    if to_stage:
        argv += ["--to_stage", to_stage]
    return argv + (["--engine", engine] if engine else [])


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


def collect(corpus: Path, arms: list[Arm]) -> dict:
    """The records of experiments/known_answer.json from the arms' files."""
    runs, precision, arm_seconds = [], [], []
    for arm in arms:
        teacher, notes, filters = arm.teacher, arm.notes, arm.filters
        root = arm_root(corpus, arm)
        training = layout.training_summary(root / layout.RESULTS.name / RUN)
        train_items = json.loads(training.read_text())["train_examples"] if training.exists() else None
        for task in TASKS:
            path = layout.evaluation_dir(root, task, RUN) / "summary.csv"
            if not path.exists():
                continue
            over = get_task(task).interval_over  # questions, or examples where questions are written per note
            for row in read_csv(path).to_dict("records"):
                model = row["model"].removeprefix(f"{RUN}-")
                runs.append({"teacher": teacher, "notes": notes, "filters": filters, "train_items": train_items,
                             "task": task,
                             "model": model, "examples": row["examples"],
                             "balanced_accuracy": row["balanced_accuracy"],
                             "ci_over": over, "ci_low": row[f"balanced_accuracy_ci_{over}_low"],
                             "ci_high": row[f"balanced_accuracy_ci_{over}_high"], "micro_f1": row["micro_f1"],
                             "n2c2_micro_f1": row.get("n2c2_micro_f1"),
                             "parse_failure_rate": row["parse_failure_rate"],
                             # annotated-synthetic: accuracy per question type (format and abstention apart
                             # from finding a fact)
                             **{key: row[key] for key in row if key.startswith("accuracy_")}})
        state = layout.report_dir(root / layout.REPORTS.name, RUN) / "run.json"
        if state.exists():  # the driver's seconds per stage, summed over sessions
            stages = json.loads(state.read_text()).get("stages", {})
            arm_seconds.append({"teacher": teacher, "notes": notes, "filters": filters, "seconds": round(sum(
                record.get("seconds") or 0 for record in stages.values()), 1),
                "stages": {stage: record.get("seconds") for stage, record in stages.items()}})
        truth = layout.teacher_truth_file(layout.report_dir(root / layout.REPORTS.name, RUN))
        if truth.exists():
            precision += [{"teacher": teacher, "notes": notes, "filters": filters, **row}
                          for row in read_csv(truth).to_dict("records")]
    clean = lambda value: None if isinstance(value, float) and value != value else value  # noqa: E731 (NaN -> null)
    return {"arm_seconds": arm_seconds,
            "runs": [{key: clean(value) for key, value in record.items()} for record in runs],
            "teacher_precision": [{key: clean(value) for key, value in record.items()} for record in precision]}


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
    """The commit measured, `-dirty` when the working tree differs from it (`git describe`); unknown outside git."""
    done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=REPO, capture_output=True,
                          text=True)
    return done.stdout.strip() if done.returncode == 0 and done.stdout.strip() else "unknown"


def keep_earlier_arms(results: dict, output: Path, arms: list[Arm]) -> dict:
    """`results` with `output`'s earlier records. Measured alike (same corpus, same reference teacher): its
    other arms' records come before the new ones, and arms run now replace theirs. Measured otherwise: the
    earlier file is kept whole under `superseded` (newest first), apart from the new arms' table."""
    earlier = earlier_results(output)
    if earlier is None:
        return results
    superseded = earlier.pop("superseded", [])
    if not measured_alike(earlier, results):
        results["superseded"] = [earlier, *superseded]
        return results
    ran = {(arm.teacher, arm.notes, arm.filters) for arm in arms}
    for key in ("runs", "teacher_precision", "arm_seconds"):
        kept = [record for record in earlier.get(key, []) if record_key(record) not in ran]
        results[key] = kept + results[key]
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
    if "filters" not in frame:
        frame["filters"] = "none"
    frame["filters"] = frame["filters"].fillna("none")
    for (teacher, notes, filters, task), group in frame.groupby(["teacher", "notes", "filters", "task"], sort=False):
        by_model = {row["model"]: row for row in group.to_dict("records")}
        teacher = teacher_label(teacher, filters)
        base, distilled = by_model.get("base"), by_model.get("distilled")
        if base is None or distilled is None:
            continue
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
         self_teacher: str = "models/SmolLM2-135M-Instruct", output: str = "experiments/known_answer.json",
         parallel: int = 1, collect_only: bool = False, keep_earlier: bool = False, engine: str = "",
         split: str = "dev") -> None:
    """Run the arms (resuming; after the first, `parallel` at a time, each logging to its arm's folder), then
    write the results JSON (with --keep_earlier, also the other arms already in it) and print the tables.
    --engine auto, vllm or transformers overrides the config's engine for stage A and the answers; --split the
    held-out patients' split of a corpus written now (dev, or final for the analysis plan's runs)."""
    corpus_dir, config_path = layout.resolve(corpus), layout.resolve(config)
    chosen = parse_arms(arms)
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
    started = time.time()
    if not collect_only:
        if not (corpus_dir / CORPUS_FILE).exists():
            write_corpus(corpus_dir, patients=patients, seed=seed, annotated_notes=annotated_notes,
                         n2c2_test=n2c2_test, apixaban_notes=apixaban_notes, split=split)
        if keep_earlier:  # an unreadable file is found before any arm runs
            earlier_results(layout.resolve(output))
        for arm in chosen:
            prepare_arm(corpus_dir, arm_root(corpus_dir, arm), None)
        # a filtered arm first runs to stage C (its teacher's replies, or its twin's), so that its twin trains on
        # as many items as it kept
        per_type = {}
        for arm in [arm for arm in chosen if arm.filtered]:
            root, twin_root = arm_root(corpus_dir, arm), arm_root(corpus_dir, arm.twin)
            share_teacher_replies(twin_root, root, arm.notes)
            run_commands([(f"{arm.label} to stage C", arm_command(config_path, corpus_dir, root, arm, self_teacher,
                                                                  engine or None, to_stage="prep_training"), None)], 1)
            if arm.twin in chosen:
                per_type[arm.twin] = items_per_type(root, config_path)
                share_teacher_replies(root, twin_root, arm.notes)
        # the first arm alone: it makes the prompts and the base model's answers the others reuse
        first = arm_root(corpus_dir, chosen[0])
        commands = []
        for arm in chosen:
            root = arm_root(corpus_dir, arm)
            log = root / "bench.log" if parallel > 1 and root != first else None
            commands.append((arm.label, arm_command(config_path, corpus_dir, root, arm, self_teacher, engine or None,
                                                    per_type=per_type.get(arm)), log))
        run_commands(commands[:1], 1)
        for arm in chosen[1:]:  # the first arm's prompts and base answers, now that they exist
            prepare_arm(corpus_dir, arm_root(corpus_dir, arm), first)
        run_commands(commands[1:], parallel)
    # every arm's record says its run (date, card, command, code): experiments/RESULTS.md names it per row
    run_record = {"date": time.strftime("%Y-%m-%d"), "card": card(),
                  "command": " ".join(["python experiments/known_answer.py", *sys.argv[1:]]), "code": code_version(),
                  "split": corpus_summary(corpus_dir).get("split")}
    digest = hashlib.sha256(config_path.read_bytes()).hexdigest()[:12]
    results = {**run_record, "config": str(config), "corpus": corpus_summary(corpus_dir),
               "reference_teacher": reference_teacher.behaviour_digest(),
               "seconds": round(time.time() - started, 1), **collect(corpus_dir, chosen)}
    results["arm_seconds"] = [{**run_record, "config_digest": digest, **arm} for arm in results["arm_seconds"]]
    if keep_earlier:
        results = keep_earlier_arms(results, layout.resolve(output), chosen)
    write_text(json.dumps(results, indent=1) + "\n", layout.resolve(output))
    print(markdown(results))
    print()
    print(precision_markdown(results))


if __name__ == "__main__":
    run(main)
