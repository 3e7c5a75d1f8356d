"""The known-answer benchmark's results: the records collected from the arms' files (scores per task and model,
every paired comparison, the per-criterion tables, the teacher's precision, seconds per stage), the results file
kept across runs (on the dev split an arm run again replaces its records; the final split's log is never
replaced), and the tables the script prints.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from clinical_distil import layout
from clinical_distil.files import InputError, read_csv
from clinical_distil.tasks import get_task
from simulation.corpus import CORPUS_FILE

import known_answer_stats as stats  # experiments/: scripts beside each other
from known_answer_arms import (AS_WRITTEN, PERMUTED, Arm, arm_root, arms_at_once, compared_with, driver_stages,
                               n2c2_name, n2c2_root)
from known_answer_stats import RUN, TASKS


def record_key(record: dict) -> tuple:
    """The arm a results record belongs to (records written before filtered, permuted or seeded arms existed are
    unfiltered, as written, of the config's seed)."""
    return (record["teacher"], record["notes"], record.get("filters", "none"), record.get("answers", AS_WRITTEN),
            record.get("seed"))


def measured(record: dict) -> str:
    """A record without its run's fields (date, card, command, code, split): what it measured."""
    return json.dumps({key: value for key, value in record.items()
                       if key not in ("date", "card", "command", "code", "split")}, sort_keys=True, default=str)


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
                           "answers_digest": stats.answers_digest(root, "i2b2", arm_root(corpus, arm).name, "base"),
                           **found})
    return runs, paired


def collect(corpus: Path, arms: list[Arm], baselines: tuple[str, ...] = (), resamples: int = 2000) -> dict:
    """The records of the results JSON from the arms' files: each arm's scores per task and model, its paired
    comparisons (student - base; student - its format-only twin; an erring teacher's student - the reference
    teacher's), its per-criterion table, the teacher's precision
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
                           "answers_digest": stats.answers_digest(root, task, "distilled", "base"),
                           **stats.compare(student, base, task, resamples, seed=0)})
            criteria += [{**tag, "task": task, **row} for row in stats.criterion_rows(student, base, task)]
            for partner, comparison in compared_with(arm, arms):
                other = stats.scored_answers(arm_root(corpus, partner), task, "distilled")
                if other is not None:
                    paired.append({**tag, "task": task, "comparison": comparison, "train_items": train_items,
                                   "answers_digest": stats.answers_digest(root, task, "distilled") + "/" + str(
                                       stats.answers_digest(arm_root(corpus, partner), task, "distilled")),
                                   **stats.compare(student, other, task, resamples, 0)})
        stages = driver_stages(root)
        if stages:  # the driver's seconds per stage, summed over sessions
            # one eval-inference command per model answered (its steps share it): one engine start each
            answering = (stages.get("eval_inference") or {}).get("steps") or {}
            arm_seconds.append({**tag, "arms_at_once": arms_at_once(root) or 1,
                                "engine_starts": len({step.get("command") for step in answering.values()}) or None,
                                "seconds": round(sum(record.get("seconds") or 0 for record in stages.values()), 1),
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
                               "answers_digest": stats.answers_digest(first, task, baseline, "base"),
                               **stats.compare(answers, base, task, resamples, seed=0)})
    clean = lambda value: None if isinstance(value, float) and value != value else value  # noqa: E731 (NaN -> null)
    tidy = lambda records: [{key: clean(value) for key, value in record.items()} for record in records]  # noqa: E731
    results = {"arm_seconds": arm_seconds, "runs": tidy(runs), "teacher_precision": tidy(precision)}
    if paired:
        results |= {"paired": tidy(paired), "over_seeds": stats.mean_over_seeds(paired),
                    "per_criterion": tidy(criteria)}
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
        # a comparison is logged again only with other answers; an arm's scores and per-criterion rows of a task go
        # with its student - base comparison of that task, its precision and seconds with any comparison of it
        signature = lambda record: (record_key(record), record["comparison"], record["task"],  # noqa: E731
                                    record.get("answers_digest"))
        logged = {signature(record) for record in earlier.get("paired", [])}
        new = [record for record in results.get("paired", []) if signature(record) not in logged]
        tasks = {(record_key(record), record["task"]) for record in new if record["comparison"] == "student - base"}
        arms_new = {record_key(record) for record in new}
        results["paired"] = new
        for key in ("runs", "per_criterion"):
            results[key] = [record for record in results.get(key, []) if (record_key(record), record["task"]) in tasks]
        for key in ("teacher_precision", "arm_seconds"):
            # logged again only where they differ from the arm's logged ones (a rerun's seconds), not because a
            # later write (the format-only twin finishing, an n2c2 folder answered) compared the arm once more
            known = {measured(record) for record in earlier.get(key, [])}
            results[key] = [record for record in results.get(key, []) if record_key(record) in arms_new
                            and measured(record) not in known]
        for key in LOGGED:
            results[key] = earlier.get(key, []) + results[key]
        results["over_seeds"] = stats.mean_over_seeds(latest_paired(results["paired"]))
        return results
    if not measured_alike(earlier, results):
        results["superseded"] = [earlier, *superseded]
        return results
    # arms run now, and the baselines compared now, replace their earlier records
    ran = {arm.key for arm in arms} | {record_key(record) for record in results.get("paired", [])}
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
