"""`evaluate`: eval-inference's answers read per model and scored, and the scores written.

The evaluate notebooks read every model folder under outputs/{task}/ (evaluate_models: chunk files
checked for overlaps, each model's answers scored by clinical_distil.metrics), then write the tables,
figures and, for n2c2, one XML file per patient into a staging folder that replaces the results
folder whole (staging_dir, publish).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_distil.chunks import check_no_overlap
from clinical_distil.files import InputError, write_text
from clinical_distil.eval_inference import IDENTIFIER_DTYPES, answer_files as chunk_files, read_chunk
from clinical_distil.metrics import (METRICS, SCORERS, cell_text, per_question, results_table, score_outputs,
                                     summarize, summary_frame)
from clinical_distil.plots import plot_heatmap, plot_models
from clinical_distil.tasks import N2C2_CRITERIA, get_task

log = logging.getLogger(__name__)


# --- reading inference outputs --------------------------------------------------------------------

def read_model_outputs(model_dir: Path, input_file: str) -> pd.DataFrame:
    """Every chunk of one model on one eval file ({input_file}_{start}_{rows}_chunk_{i}.csv), in row order.

    Files whose rows overlap are refused (an answer would count twice), as are files that do not
    hold the rows their names say.
    """
    files = sorted(chunk_files(model_dir, input_file), key=lambda item: item.start)
    if not files:
        raise InputError(f"no outputs for {input_file} in {model_dir}; run eval-inference.py for this model")
    check_no_overlap(files, f"eval-inference {input_file}")
    frames = []
    for item in files:
        frame = read_chunk(item, keep_default_na=False, dtype=IDENTIFIER_DTYPES)
        missing = [column for column in ("id", "output") if column not in frame.columns]
        if missing:
            raise InputError(f"eval-inference output file {item.path} lacks column(s) {', '.join(missing)}; rerun "
                             "eval-inference.py with --overwrite for it")
        frames.append(frame)
    return pd.concat(frames, ignore_index=True)


def model_folders(outputs_dir: Path, models: list[str] | tuple[str, ...] | str | None = None) -> list[Path]:
    """The model folders under outputs/{dataset}/ (or the named ones), sorted."""
    if isinstance(models, str):
        models = [part.strip() for part in models.split(",") if part.strip()]
    folders = [outputs_dir / name for name in models] if models else sorted(
        path for path in outputs_dir.iterdir() if path.is_dir() and any(path.glob("*_chunk_*.csv"))) \
        if outputs_dir.is_dir() else []
    if not folders:
        raise InputError(f"no model output folders in {outputs_dir}; run eval-inference.py first")
    for folder in folders:
        if not folder.is_dir():
            raise InputError(f"no outputs for model {folder.name} in {outputs_dir}")
    return folders


# --- one task, every model ------------------------------------------------------------------------

def evaluate_models(outputs_dir: Path, input_file: str, task: str, models: list[str] | str | None = None,
                    resamples: int = 1000, seed: int = 0, hba1c_low: float = 6.5,
                    hba1c_high: float = 9.5) -> dict[str, Any]:
    """Score every model folder under outputs/{task}/ on one eval file.

    Returns {"scored": model -> rows with answer/target/prediction, "per_question": model -> metric
    table, "summaries": model -> means, CIs, parse failures and the task's own figures (the official
    n2c2 scores, accuracy per question type)}.
    """
    spec = get_task(task)
    question_column = spec.question_column
    _, extra = SCORERS[spec.scorer]
    scored, per_question_tables, summaries = {}, {}, {}
    for folder in model_folders(outputs_dir, models):
        outputs = read_model_outputs(folder, input_file)
        if spec.official_n2c2 and any((cell_text(label) or "").strip() == "" for label in outputs["label"]):
            raise InputError(f"{input_file} of {task} has rows without a gold label (unlabelled XML files); "
                             "score a labelled split")
        frame = score_outputs(outputs, task, hba1c_low, hba1c_high)
        scored[folder.name] = frame
        per_question_tables[folder.name] = per_question(frame, question_column)
        summary = summarize(frame, question_column, resamples, seed)
        summary["parse_failures"] = int((~frame["parsed"]).sum())
        summary["parse_failure_rate"] = float((~frame["parsed"]).mean())
        if extra is not None:
            summary.update(extra(frame))
        summaries[folder.name] = summary
        log.info("%s: %s", folder.name, {key: value for key, value in summary.items() if isinstance(value, float)})
    return {"scored": scored, "per_question": per_question_tables, "summaries": summaries,
            "question_column": question_column}


# --- writing the scores ---------------------------------------------------------------------------

def check_results_dir(output_dir: Path, overwrite: bool = False) -> None:
    """Refuse, before any work, to replace an earlier evaluation's scores unless asked."""
    if (output_dir / "summary.csv").exists() and not overwrite:
        raise InputError(f"{output_dir} holds an evaluation already; set overwrite=True (papermill: -p overwrite True) "
                         "to replace it, or another results_dir")


def staging_dir(output_dir: Path, overwrite: bool = False) -> Path:
    """A fresh folder beside `output_dir` that an evaluation writes into before `publish` puts it in place."""
    import shutil

    check_results_dir(output_dir, overwrite)
    staging = output_dir.with_name(f".{output_dir.name}.partial")
    shutil.rmtree(staging, ignore_errors=True)  # what an interrupted evaluation left
    staging.mkdir(parents=True)
    return staging


def publish(staging: Path, output_dir: Path) -> Path:
    """The staged evaluation replaces `output_dir` whole: its files appear all together or not at all."""
    import shutil

    if output_dir.exists():
        retired = output_dir.with_name(f".{output_dir.name}.old")
        shutil.rmtree(retired, ignore_errors=True)
        output_dir.rename(retired)
        staging.rename(output_dir)
        shutil.rmtree(retired, ignore_errors=True)
    else:
        staging.rename(output_dir)
    return output_dir


def write_evaluation(evaluation: dict[str, Any], output_dir: Path, title: str,
                     overwrite: bool = True) -> dict[str, Path]:
    """The tables (CSV) and figures (PNG) of one task into `output_dir`."""
    from clinical_distil.files import write_csv

    check_results_dir(output_dir, overwrite)
    output_dir.mkdir(parents=True, exist_ok=True)
    question_column, summaries = evaluation["question_column"], evaluation["summaries"]
    written = {"summary": write_csv(summary_frame(summaries), output_dir / "summary.csv")}
    for metric in METRICS:
        table = results_table(evaluation["per_question"], question_column, metric, summaries)
        written[f"table_{metric}"] = write_csv(table.reset_index(names=question_column),
                                               output_dir / f"{metric}_by_question.csv")
        written[f"bars_{metric}"] = plot_models(summaries, metric, output_dir / f"{metric}_by_model.png",
                                                f"{title}: mean {metric.replace('_', ' ')} (95% CI over questions)")
        written[f"heatmap_{metric}"] = plot_heatmap(table, output_dir / f"{metric}_heatmap.png",
                                                    f"{title}: {metric.replace('_', ' ')} by question")
    return written


def write_n2c2_xml(predictions: pd.DataFrame, output_dir: Path, gold_dir: Path | None = None,
                   patient_column: str = "patient", criterion_column: str = "question_label",
                   prediction_column: str = "prediction") -> list[Path]:
    """One n2c2-format file per patient ({patient}.xml, the gold file's name) with met / not met TAGS.

    The TEXT is copied from the gold file when `gold_dir` is given, so the official scorer can
    be pointed at the folder as it is.
    """
    from xml.sax.saxutils import quoteattr

    from clinical_distil.n2c2 import read_patient_file

    written = []
    for patient, group in predictions.groupby(patient_column, sort=True):
        decided = dict(zip(group[criterion_column], group[prediction_column].astype(int)))
        missing = [criterion for criterion in N2C2_CRITERIA if criterion not in decided]
        if missing:
            raise InputError(f"patient {patient} has no prediction for {', '.join(missing)}; run eval-inference.py "
                             "over every row of the i2b2 file")
        text = read_patient_file(gold_dir / f"{patient}.xml").text if gold_dir else ""
        tags = "\n".join(f"    <{criterion} met={quoteattr('met' if decided[criterion] else 'not met')} />"
                         for criterion in N2C2_CRITERIA)
        document = ('<?xml version="1.0" encoding="UTF-8" ?>\n<PatientMatching>\n  <TEXT><![CDATA['
                    f"{text}]]></TEXT>\n  <TAGS>\n{tags}\n  </TAGS>\n</PatientMatching>\n")
        written.append(write_text(document, output_dir / f"{patient}.xml"))
    return written
