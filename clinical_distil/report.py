"""The run report: reports/{run}/report.md, report.html and PNG figures.

Every number comes from a file a stage wrote (the notes table, stage A's manifest, stage B's
tables, stage C's datasets, training_summary.json, the eval-inference manifests, the
evaluate notebooks' summary.csv) or from the driver's run.json (wall times). Nothing is
recomputed here except counts and means over those files.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_distil import layout as paths
from clinical_distil.files import read_csv, write_text
from clinical_distil.layout import MODEL_ROLES, RUN_STAGES, RunLayout
from clinical_distil.prompts import QUESTION_TYPES
from clinical_distil.report_figures import plot_difficulty, plot_loss, plot_tasks, plot_types
from clinical_distil.report_render import Block, render_html, render_markdown
from clinical_distil.tables import fmt
from clinical_distil.tasks import get_task
from clinical_distil.verify import read_verdicts

log = logging.getLogger(__name__)


def with_interval(row: pd.Series, metric: str, interval: str = "ci_questions") -> str:
    low, high = row.get(f"{metric}_{interval}_low"), row.get(f"{metric}_{interval}_high")
    if low is None or pd.isna(low):
        return fmt(row.get(metric))
    return f"{fmt(row[metric])} [{fmt(low)}, {fmt(high)}]"


def read_run_state(path: Path) -> dict[str, Any]:
    """The driver's run.json: each stage's status, seconds and commands."""
    if path.exists():
        try:
            return json.loads(path.read_text())
        except json.JSONDecodeError:
            log.warning("ignoring unreadable run state %s", path)
    return {"stages": {}}


def _read(path: Path, **kwargs) -> pd.DataFrame | None:
    return read_csv(path, **kwargs) if path.exists() else None


def _json(path: Path) -> dict[str, Any] | None:
    return json.loads(path.read_text()) if path.exists() else None


# --- sections ------------------------------------------------------------------------------------

def settings_section(layout: RunLayout) -> list[Block]:
    create, prepare = layout.settings["create"], layout.settings["prep_training"]
    manifest = _json(layout.create_manifest) or {}
    kind = manifest.get("teacher", "language model")
    teacher = create.model_id if kind == "language model" else kind
    rows = [("teacher", teacher), ("student", layout.student), ("notes", str(layout.notes_file)),
            ("stage A dataset", layout.dataset),
            ("notes read by the teacher", "all" if create.limit is None else create.limit),
            ("questions per type (k)", create.questions_per_type),
            ("teacher reply limit (tokens)", create.max_tokens),
            ("structured output", create.structured_output), ("engine", manifest.get("engine", create.engine)),
            ("training data", f"{prepare.input_file}, difficulty >= {prepare.min_difficulty}"),
            ("evaluation tasks", ", ".join(layout.tasks)), ("data root", str(layout.root))]
    for task in layout.tasks:
        recorded = _json(layout.inference_manifest(task, "base"))
        if recorded:
            start, stop = recorded["rows"]
            shortened = recorded.get("notes_shortened") or 0
            rows.append((f"{task} prompts answered", f"{stop - start} of {recorded.get('rows_in_file', '?')}" +
                         (f" ({shortened} notes shortened to fit {recorded.get('max_model_len')} tokens)"
                          if shortened else "")))
    blocks: list[Block] = [("h2", "Run settings"),
                           ("table", pd.DataFrame(rows, columns=["setting", "value"]).assign(
                               value=lambda frame: frame["value"].map(fmt)))]
    if kind != "language model":
        blocks.append(("p", f"The teacher was not a language model: {kind}. Its items are right by construction, "
                            "so this run measures what the student learns from correct synthetic data, not a "
                            "teacher's quality."))
    elif create.structured_output:
        blocks.append(("p", "Stage A constrained the teacher's replies to the JSON schema of the question list "
                            "(structured output). The paper's teacher wrote JSON unaided; a small teacher such as "
                            "the 135M default rarely does, so without it almost every reply would fail to parse."))
    return blocks


def counts_section(layout: RunLayout, figures: Path) -> list[Block]:
    prepare = layout.settings["prep_training"]
    combo, difficulty = prepare.input_file, prepare.min_difficulty
    numbers: dict[str, Any] = {}
    notes = _read(layout.notes_file, usecols=["note_id"])
    manifest = _json(layout.create_manifest) or {}
    replies = _read(paths.reply_counts_file(layout.raw_dir))
    failures = _read(paths.failures_file(layout.raw_dir))
    kept = _read(paths.items_file(layout.raw_dir),
                 usecols=["question_type", "difficulty", "source_in_note", "answer_type_ok", "duplicate_question"])
    chosen = _read(layout.combo_file, usecols=["question_type"])
    train = _read(paths.training_table(layout.raw_dir, "train", layout.training), usecols=["question_type"])
    test = _read(paths.training_table(layout.raw_dir, "test", layout.training), usecols=["question_type"])
    if manifest.get("rows"):
        start, stop = manifest["rows"]
        numbers["notes_to_teacher"] = stop - start
    if notes is not None:
        numbers["notes_selected"] = len(notes)
    per_type = pd.DataFrame(index=pd.Index(QUESTION_TYPES, name="question_type"))
    if replies is not None:
        per_type = per_type.join(replies.set_index("question_type"))
    for name, frame in (("kept_after_filters", kept), (f"difficulty_{difficulty}_plus", chosen),
                        ("train", train), ("test", test)):
        if frame is not None:
            per_type[name] = frame.groupby("question_type").size()
    per_type = per_type.fillna(0).astype(int)
    totals = per_type.sum()
    for column in per_type.columns:
        numbers[column] = int(totals[column])
    flow = [("notes selected", numbers.get("notes_selected")), ("notes sent to the teacher", numbers.get("notes_to_teacher")),
            ("teacher replies", numbers.get("replies")),
            ("replies generated again (cut off or unreadable)", numbers.get("retried")),
            ("replies cut at the token limit", numbers.get("cut_by_length")),
            ("replies that failed to parse", numbers.get("failed")),
            ("replies that were an empty list (nothing to ask)", numbers.get("empty_lists")),
            ("question/answer items parsed", numbers.get("items")),
            ("items left out as template placeholders", numbers.get("placeholder_items")),
            ("items kept after filters", numbers.get("kept_after_filters")),
            (f"items of '{combo}' with difficulty >= {difficulty}", numbers.get(f"difficulty_{difficulty}_plus")),
            ("training examples (balanced)", numbers.get("train")), ("test examples", numbers.get("test"))]
    blocks: list[Block] = [
        ("h2", "Counts through the stages"),
        ("table", pd.DataFrame([(label, fmt(value)) for label, value in flow], columns=["stage", "count"])),
        ("p", "Per question type:"),
        ("table", per_type.reset_index().astype(str))]
    if failures is not None and len(failures):
        levels = failures["level"] if "level" in failures else pd.Series("reply", index=failures.index)
        for level, label in (("reply", "Replies without an item, by reason"), ("item", "Items left out, by reason")):
            reasons = failures[levels == level].groupby("reason").size().sort_values(ascending=False)
            if len(reasons):
                blocks.append(("p", f"{label}: " + ", ".join(f"{reason} {count}" for reason, count in reasons.items())
                               + "."))

    blocks += filters_blocks(layout)
    blocks.append(("h2", "Teacher data quality"))
    if kept is not None and len(kept):
        quality = kept.groupby("question_type").agg(
            items=("question_type", "size"), source_in_note=("source_in_note", "mean"),
            answer_type_ok=("answer_type_ok", "mean"), duplicate_question=("duplicate_question", "mean"),
            difficulty_missing=("difficulty", lambda column: column.isna().mean()),
            median_difficulty=("difficulty", "median")).reindex(
                [kind for kind in QUESTION_TYPES if kind in set(kept["question_type"])])
        numbers["source_in_note_rate"] = float(kept["source_in_note"].mean())
        blocks.append(("p", f"Source quote found in the note for {fmt(numbers['source_in_note_rate'])} of the kept "
                            "items (exact, normalized or fuzzy match). N/A types quote 'not found' by design."))
        blocks.append(("table", quality.reset_index().map(fmt)))
        blocks.append(("image", plot_difficulty(kept, figures / "difficulty.png")))
    else:
        blocks.append(("p", "No stage B output yet."))
    return blocks


def filters_blocks(layout: RunLayout) -> list[Block]:
    """Stage B's filters (stage_b.json): per filter the items it flags, whether it was applied, the items it
    removed and those only it removed; then stage B2's re-answer verification, where one was run."""
    summary = _json(paths.stage_b_summary_file(layout.raw_dir))
    blocks: list[Block] = []
    if summary and summary.get("filters"):
        table = pd.DataFrame(summary["filters"])[["filter", "flags", "applied", "flagged", "removed",
                                                  "removed_only_by_it"]]
        blocks += [("p", f"Stage B filters: {fmt(summary.get('items_checked'))} items checked, "
                         f"{fmt(summary.get('items_kept'))} kept. Each filter flags items whether or not it is "
                         "applied (stage B's parameters; all off reproduces the paper):"),
                   ("table", table.map(fmt))]
    verdicts = read_verdicts(layout.raw_dir)
    if verdicts is not None and len(verdicts):
        agree = int(verdicts["verifier_agrees"].sum())
        required = layout.settings["prep_training"].require_verified
        verifier = ", ".join(sorted(set(verdicts["verifier"].astype(str)))) if "verifier" in verdicts else "unnamed"
        blocks.append(("p", f"Re-answer verification (stage B2, verifier {verifier}): {len(verdicts)} items "
                            f"verified, the verifier gave the teacher's answer for {agree}; "
                            + (f"{len(verdicts) - agree} removed by stage C (require_verified)."
                               if required else "none removed (require_verified off).")))
    return blocks


# Report sections from outside the library (a simulator's check against its truth, a site's own audit): each
# entry point of this group names a function (layout: RunLayout) -> list of blocks, shown after the counts.
SECTIONS_GROUP = "clinical_distil.report_sections"


def plugged_sections(layout: RunLayout) -> list[Block]:
    """The blocks of every report section installed under SECTIONS_GROUP, in the order of their names."""
    from importlib.metadata import entry_points

    blocks: list[Block] = []
    for entry in sorted(entry_points(group=SECTIONS_GROUP), key=lambda found: found.name):
        blocks += entry.load()(layout)
    return blocks


def training_section(layout: RunLayout, figures: Path) -> list[Block]:
    summary = _json(paths.training_summary(layout.finetune_dir))
    if summary is None:
        return [("h2", "Training"), ("p", "No training summary yet.")]
    rows = [("examples (train / test)", f"{summary['train_examples']} / {summary['test_examples']}"),
            ("optimizer steps", fmt(summary["global_step"])), ("mean training loss", fmt(summary["train_loss"])),
            ("eval loss before training", fmt(summary["eval_loss_before"])),
            ("eval loss after training", fmt(summary["eval_loss"])),
            ("trained tokens", fmt(int(summary["trained_tokens"] or 0))), ("tokens/s", fmt(summary["tokens_per_second"], 1)),
            ("training seconds", fmt(summary["seconds"], 1)), ("4-bit base", fmt(summary["load_in_4bit"])),
            ("optimizer", summary["optimizer"]), ("peak GPU memory (GiB)", fmt(summary["peak_memory_gib"], 2))]
    blocks: list[Block] = [("h2", "Training"), ("table", pd.DataFrame(rows, columns=["quantity", "value"]))]
    curve = plot_loss(summary["log_history"], figures / "training_loss.png")
    if curve is not None:
        blocks.append(("image", curve))
    return blocks


def evaluation_section(layout: RunLayout, figures: Path) -> list[Block]:
    blocks: list[Block] = [("h2", "Evaluation: base vs distilled student"),
                           ("p", "Means over questions of the per-question balanced accuracy and micro-F1 (the "
                                 "paper's metrics) with 95% bootstrap intervals over questions (over examples where "
                                 "questions are written per note, as in annotated-synthetic); unparseable answers "
                                 "count as No for yes/no questions, as in the paper.")]
    summaries: dict[str, pd.DataFrame] = {}
    for task in layout.tasks:
        summary = _read(layout.evaluation_dir(task) / "summary.csv")
        if summary is None:
            blocks.append(("p", f"{task}: not scored yet."))
            continue
        names = {layout.model_name(role): role for role in MODEL_ROLES}
        summary = summary[summary["model"].isin(names)].copy()
        summary["model"] = summary["model"].map(names)
        summaries[task] = summary
        interval = f"ci_{get_task(task).interval_over}"
        table = pd.DataFrame({"model": summary["model"], "examples": summary["examples"].map(fmt),
                              "balanced accuracy [95% CI]": [with_interval(row, "balanced_accuracy", interval)
                                                             for _, row in summary.iterrows()],
                              "micro-F1 [95% CI]": [with_interval(row, "micro_f1", interval)
                                                    for _, row in summary.iterrows()],
                              "parse failure rate": summary["parse_failure_rate"].map(fmt)})
        # the figures a task's scorer adds (the official n2c2 F1, accuracy per question type)
        if "n2c2_micro_f1" in summary:
            table["n2c2 official micro-F1"] = summary["n2c2_micro_f1"].map(fmt)
            table["n2c2 official macro-F1"] = summary["n2c2_macro_f1"].map(fmt)
        if "accuracy" in summary:
            table["accuracy"] = summary["accuracy"].map(fmt)
            for question_type in QUESTION_TYPES:
                column = f"accuracy_{question_type}"
                if column in summary:
                    table[f"accuracy {question_type}"] = summary[column].map(fmt)
        speed = []
        for role in summary["model"]:
            manifest = _json(layout.inference_manifest(task, role)) or {}
            speed.append(fmt(manifest.get("seconds_per_example")))
        table["s/example"] = speed
        blocks += [("h3", task), ("table", table)]
    if summaries:
        blocks.append(("image", plot_tasks(summaries, figures / "evaluation.png")))
        by_type = next((summary for summary in summaries.values()
                        if any(f"accuracy_{kind}" in summary for kind in QUESTION_TYPES)), None)
        if by_type is not None:
            blocks.append(("image", plot_types(by_type, figures / "accuracy_by_type.png")))
    return blocks


def cost_section(layout: RunLayout) -> list[Block]:
    """What answering cost per task and model: seconds per note and per patient, seconds and GPU-hours per
    1,000 notes, on the engine and GPUs the answers' manifests record."""
    from clinical_distil.eval_inference import cost
    from clinical_distil.prompts import load_templates, note_of

    first = layout.settings.get(f"eval_inference:{layout.tasks[0]}:base") if layout.tasks else None
    templates = load_templates(first.prompt_dir if first is not None else None)
    rows = []
    for task in layout.tasks:
        prompts = _read(layout.eval_file(task), keep_default_na=False, dtype={"patient": str})
        for role in MODEL_ROLES:
            manifest = _json(layout.inference_manifest(task, role))
            if not manifest or prompts is None:
                continue
            start, stop = manifest.get("rows", [0, len(prompts)])
            asked = prompts.iloc[start:stop]
            notes = asked["prompt"].map(lambda prompt: note_of(prompt, templates) or prompt).nunique()
            patients = asked["patient"].nunique() if "patient" in asked else notes
            gpus = int(manifest.get("gpus") or 0)
            spent = cost(manifest.get("wall_seconds"), notes, patients, gpus)
            rows.append({"task": task, "model": role, "engine": manifest.get("engine", ""), "GPUs": gpus,
                         "prompts": manifest.get("answered"), "notes": notes, "patients": patients,
                         "seconds": fmt(manifest.get("wall_seconds"), 1),
                         "s/note": fmt(spent["seconds_per_note"]), "s/patient": fmt(spent["seconds_per_patient"]),
                         "s/1,000 notes": fmt(spent["seconds_per_1000_notes"], 1),
                         "GPU-h/1,000 notes": fmt(spent["gpu_hours_per_1000_notes"], 4)})
    if not rows:
        return []
    return [("h2", "Cost of answering"),
            ("p", "Answering time per task and model from the answers' manifests (generation only, summed over "
                  "resumed sessions; model loading is not included): per note, per patient, and per 1,000 notes, "
                  "with GPU-hours where the answers ran on GPUs."),
            ("table", pd.DataFrame(rows))]


def reading_section(layout: RunLayout) -> list[Block]:
    """What this run's numbers can and cannot show, from its own sizes and intervals."""
    sentences = []
    summary = _json(paths.training_summary(layout.finetune_dir))
    if summary is not None:
        sentences.append(f"The student learned from {summary['train_examples']} training examples.")
    if str(layout.settings["create"].model_id) == str(layout.student):
        sentences.append("The teacher was the student's own base model (self-distillation): the student can at "
                         "best learn its teacher's answers, right or wrong.")
    names = {layout.model_name(role): role for role in MODEL_ROLES}
    for task in layout.tasks:
        scores = _read(layout.evaluation_dir(task) / "summary.csv")
        if scores is None:
            continue
        rows = {names[row["model"]]: row for row in scores.to_dict("records") if row["model"] in names}
        if set(rows) != set(MODEL_ROLES):
            continue
        base, distilled = rows["base"], rows["distilled"]
        over = get_task(task).interval_over
        low, high = f"balanced_accuracy_ci_{over}_low", f"balanced_accuracy_ci_{over}_high"
        gain = distilled["balanced_accuracy"] - base["balanced_accuracy"]
        if distilled[low] > base[high] or distilled[high] < base[low]:
            verdict = f"the 95% intervals (over {over}) do not overlap"
        else:
            verdict = (f"the 95% intervals (over {over}) overlap, so on {fmt(distilled['examples'])} examples this "
                       "run cannot tell the two models apart")
        sentences.append(f"{task}: balanced accuracy {fmt(base['balanced_accuracy'])} (base) against "
                         f"{fmt(distilled['balanced_accuracy'])} (distilled), {gain:+.3f}; {verdict}.")
    sentences.append("Whether distillation makes a better extractor is measured where the truth is known: on "
                     "simulated patients, with a teacher that is right by construction and with the student's own "
                     "base as teacher (experiments/known_answer.py; figures in experiments/RESULTS.md, section "
                     "Known-answer distillation, and experiments/known_answer.json).")
    return [("h2", "What these numbers can show"), ("p", " ".join(sentences))]


def timing_section(state: dict[str, Any]) -> list[Block]:
    rows, total = [], 0.0
    for stage in RUN_STAGES[:-1]:  # the report is being written as this table is
        record = state.get("stages", {}).get(stage)
        if record is None:
            continue
        seconds = record.get("seconds")
        total += seconds or 0
        rows.append((stage, record.get("status", ""), fmt(seconds, 1) if seconds is not None else "n/a"))
    rows.append(("total", "", fmt(total, 1)))
    return [("h2", "Wall time per stage"),
            ("p", "Seconds each stage took to make its outputs, summed over runs that were interrupted and resumed (a "
                  "skipped stage keeps the time of the runs that made its outputs)."),
            ("table", pd.DataFrame(rows, columns=["stage", "status", "seconds"]))]


def write_report(layout: RunLayout) -> Path:
    """Gather the run's files into report.md, report.html and figures/ under reports/{run}/."""
    report_dir = layout.report_dir
    figures = report_dir / "figures"
    figures.mkdir(parents=True, exist_ok=True)
    state = read_run_state(report_dir / "run.json")
    counts = counts_section(layout, figures)
    plugged = plugged_sections(layout)
    training = training_section(layout, figures)
    evaluation = evaluation_section(layout, figures)
    blocks = [("p", f"Written {time.strftime('%Y-%m-%d %H:%M')} from the files of run '{layout.run}' "
                    f"(data root {layout.root}). Executed stage notebooks are in notebooks/, the run state in run.json."),
              *settings_section(layout), *counts, *plugged, *training, *evaluation, *cost_section(layout),
              *reading_section(layout), *timing_section(state)]
    title = f"Distillation report: {layout.run}"
    write_text(render_html(title, blocks, report_dir), report_dir / "report.html")
    target = write_text(render_markdown(title, blocks, report_dir), report_dir / "report.md")
    log.info("report written to %s", target)
    return target
