"""Scoring students' answers: answer extraction, the paper's metrics, the official n2c2 ones, tables.

The paper scores each question (criterion) with balanced accuracy and sklearn micro-F1 and
averages over questions; n2c2 2018 Track 1's official scorer instead pools counts over criteria
separately for "met" and "not met" and reports the mean of the two F1 scores. Both are here.
Confidence intervals are percentile bootstraps (1,000 resamples, seeded), over questions (as the
paper) and over examples.
"""

from __future__ import annotations

import logging
import math
import re
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from clinical_distil.chunks import check_no_overlap
from clinical_distil.files import InputError, write_text
from clinical_distil.inference import IDENTIFIER_DTYPES, chunk_files, read_chunk
from clinical_distil.parsing import CUT_OFF_REASONS, ZERO_WIDTH, json_values, strip_reasoning
from clinical_distil.answers import NUMBER, is_number, normalize_answer, parse_number
from clinical_distil.tasks import N2C2_CRITERIA, get_task

log = logging.getLogger(__name__)

ANSWER_FIELD = re.compile(r'"?answer"?\s*[:=]\s*"?\s*([^"}\n]+)', re.IGNORECASE)
LEADING_WORD = re.compile(r"^\W*(yes|no|na|n/a)\b", re.IGNORECASE)
LEADING_NUMBER = re.compile(rf"^\s*({NUMBER})(?![\d.,/-])")


def _text(value: Any) -> str | None:
    """A table cell as text: None for missing (None, NaN, pandas' NA), whatever the column's dtype."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    return str(value)


def _blank_answer(answer: Any) -> bool:
    """An answer that says nothing: an empty string, or only whitespace (Unicode and zero-width spaces too),
    as a reply cut inside its answer string is mended. Not an NA: "" normalizes to NA, which would score a
    reply that said nothing as a correct "not in the note"."""
    return isinstance(answer, str) and all(char.isspace() or char in ZERO_WIDTH for char in answer)


def _clean_answer(fragment: str) -> str:
    """An answer written in prose ("Yes, per the note", "2.1 on day 3"): the whole of it where it reads as
    Yes / No / NA / one number, else its leading Yes / No / NA or number, else the text."""
    whole = normalize_answer(fragment)
    if whole in ("Yes", "No", "NA") or is_number(whole):
        return whole
    word = LEADING_WORD.match(fragment)
    if word:
        return normalize_answer(word.group(1))
    number = LEADING_NUMBER.match(fragment)
    return normalize_answer(number.group(1)) if number else whole


# --- answers --------------------------------------------------------------------------------------

def extract_answer(output: Any, finish_reason: Any = "stop") -> str | None:
    """The normalized answer (Yes / No / NA / a plain number / text) of one reply, or None if unparseable.

    A reasoning block (<think> ... </think>, closed or cut off) is skipped first: its drafts are not
    the answer. Then the JSON object's "answer" (the trained format, mended where broken); then an
    `answer: X` field in prose; then a bare reply: a lone number, or a leading Yes/No/NA. An empty
    answer (a reply cut inside its answer string, `{"answer": "`, mends to one) is unparseable, whatever
    the finish reason, and so is an `answer:` field of a cut-off reply that runs to the reply's end.
    """
    output, finish_reason = _text(output), _text(finish_reason) or "stop"
    if output is None or _blank_answer(output):
        return None
    output = strip_reasoning(output)[0]
    for value in json_values(output, finish_reason):
        candidates = [value] if isinstance(value, dict) else [item for item in value if isinstance(item, dict)] \
            if isinstance(value, list) else []
        for candidate in candidates:
            lowered = {str(key).strip().lower(): item for key, item in candidate.items()}
            if "answer" in lowered:
                answer = lowered["answer"]
                return None if _blank_answer(answer) else normalize_answer(answer)
    text = output.strip()
    field = ANSWER_FIELD.search(text)
    if field:
        fragment = field.group(1).strip()
        cut_in_it = finish_reason in CUT_OFF_REASONS and field.end() == len(text)  # the limit cut the value itself
        return None if _blank_answer(fragment) or cut_in_it else _clean_answer(fragment)
    if parse_number(text) is not None:
        return normalize_answer(text)
    word = LEADING_WORD.match(text)
    if word:
        return normalize_answer(word.group(1))
    return None


def same_answer(prediction: Any, label: Any) -> bool:
    """Equal after normalization; numbers compare as numbers ("1.40 mg/dL" == 1.4, "210,000" == 210000)."""
    prediction = None if _text(prediction) is None else normalize_answer(prediction)
    if prediction is None:
        return False
    label = normalize_answer(label)
    expected, found = parse_number(label), parse_number(prediction)
    if expected is not None and found is not None:
        return abs(found - expected) <= 1e-9 * max(1.0, abs(expected))
    return prediction == label


def boolean_prediction(answer: Any) -> int:
    """1 for Yes; No, NA and unparseable replies (None, NaN) count as No (as in the paper)."""
    return int(_text(answer) is not None and normalize_answer(answer) == "Yes")


def threshold_prediction(answer: Any, low: float, high: float = float("inf"), strict_low: bool = False) -> int:
    """1 when a numeric answer falls in [low, high] ((low, high] with strict_low); NA, text or unparseable: 0."""
    value = None if _text(answer) is None else parse_number(answer)
    if value is None:
        return 0
    above = value > low if strict_low else value >= low
    return int(above and value <= high)


def n2c2_predictions(answers: Sequence[Any], criteria: Sequence[str], hba1c_low: float = 6.5,
                     hba1c_high: float = 9.5, creatinine_above: float = 1.3) -> pd.Series:
    """met (1) / not met (0) per row: yes/no criteria from Yes, CREATININE and HBA1C from thresholds.

    HbA1c: the published code used [6.5, 9.5], the paper's text >= 6.5 (pass hba1c_high=inf).
    """
    def decide(answer: Any, criterion: str) -> int:
        if criterion == "CREATININE":
            return threshold_prediction(answer, creatinine_above, strict_low=True)
        if criterion == "HBA1C":
            return threshold_prediction(answer, hba1c_low, hba1c_high)
        return boolean_prediction(answer)

    index = answers.index if isinstance(answers, pd.Series) else None
    return pd.Series([decide(answer, str(criterion)) for answer, criterion in zip(answers, criteria)],
                     index=index, dtype=int)


def met_label(value: Any) -> int:
    """An n2c2 gold label as 1 (met) / 0 (not met): 1/0 as numbers or text, met / not met, yes / no, true / false."""
    text = (_text(value) or "").strip().lower()
    if text in ("1", "1.0", "met", "yes", "true"):
        return 1
    if text in ("0", "0.0", "not met", "no", "false"):
        return 0
    raise InputError(f"n2c2 label {value!r} is neither met (1) nor not met (0); score a labelled split")


# --- per-question metrics (numpy: the bootstrap calls them thousands of times) ---------------------

def balanced_accuracy(labels: np.ndarray, predictions: np.ndarray) -> float:
    """Mean recall over the classes present in the labels (sklearn's balanced_accuracy_score)."""
    classes = np.unique(labels)
    return float(np.mean([np.mean(predictions[labels == value] == value) for value in classes]))


def micro_f1(labels: np.ndarray, predictions: np.ndarray) -> float:
    """sklearn f1_score(average="micro") for single-label data, which equals accuracy."""
    return float(np.mean(labels == predictions))


METRICS: dict[str, Callable[[np.ndarray, np.ndarray], float]] = {
    "balanced_accuracy": balanced_accuracy, "micro_f1": micro_f1}


def per_question(frame: pd.DataFrame, question_column: str, label_column: str = "target",
                 prediction_column: str = "prediction") -> pd.DataFrame:
    """One row per question: n and each metric."""
    rows = []
    for question, group in frame.groupby(question_column, sort=True):
        labels, predictions = group[label_column].to_numpy(), group[prediction_column].to_numpy()
        rows.append({question_column: question, "n": len(group),
                     **{name: metric(labels, predictions) for name, metric in METRICS.items()}})
    return pd.DataFrame(rows)


def bootstrap_over_questions(scores: np.ndarray, resamples: int = 1000, seed: int = 0) -> tuple[float, float]:
    """95% percentile interval of the mean of per-question scores, resampling questions."""
    rng = np.random.default_rng(seed)
    means = rng.choice(scores, size=(resamples, len(scores)), replace=True).mean(axis=1)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def bootstrap_over_examples(frame: pd.DataFrame, question_column: str, metric: str, resamples: int = 1000,
                            seed: int = 0, label_column: str = "target",
                            prediction_column: str = "prediction") -> tuple[float, float]:
    """95% interval of the mean per-question metric, resampling examples within each question."""
    rng = np.random.default_rng(seed)
    function = METRICS[metric]
    groups = [(group[label_column].to_numpy(), group[prediction_column].to_numpy())
              for _, group in frame.groupby(question_column, sort=True)]
    means = np.empty(resamples)
    for index in range(resamples):
        values = []
        for labels, predictions in groups:
            picked = rng.integers(0, len(labels), len(labels))
            values.append(function(labels[picked], predictions[picked]))
        means[index] = np.mean(values)
    return float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def summarize(frame: pd.DataFrame, question_column: str, resamples: int = 1000, seed: int = 0) -> dict[str, Any]:
    """Mean per-question metrics with both bootstrap intervals."""
    table = per_question(frame, question_column)
    summary: dict[str, Any] = {"questions": len(table), "examples": len(frame)}
    for metric in METRICS:
        scores = table[metric].to_numpy()
        summary[metric] = float(scores.mean())
        summary[f"{metric}_ci_questions"] = bootstrap_over_questions(scores, resamples, seed)
        summary[f"{metric}_ci_examples"] = bootstrap_over_examples(frame, question_column, metric, resamples, seed)
    return summary


# --- n2c2 2018 Track 1, official scoring ----------------------------------------------------------

def _f1(true_positive: int, false_positive: int, false_negative: int) -> float:
    precision = true_positive / (true_positive + false_positive) if true_positive + false_positive else 0.0
    recall = true_positive / (true_positive + false_negative) if true_positive + false_negative else 0.0
    return 2 * precision * recall / (precision + recall) if precision + recall else 0.0


def n2c2_counts(gold: pd.Series, predicted: pd.Series) -> dict[str, int]:
    """TP/FP/FN for "met" and for "not met" (whose positives are the not-met rows)."""
    gold, predicted = gold.astype(int).to_numpy(), predicted.astype(int).to_numpy()
    return {"met_tp": int(((gold == 1) & (predicted == 1)).sum()),
            "met_fp": int(((gold == 0) & (predicted == 1)).sum()),
            "met_fn": int(((gold == 1) & (predicted == 0)).sum()),
            "not_met_tp": int(((gold == 0) & (predicted == 0)).sum()),
            "not_met_fp": int(((gold == 1) & (predicted == 0)).sum()),
            "not_met_fn": int(((gold == 0) & (predicted == 1)).sum())}


def n2c2_official(frame: pd.DataFrame, criterion_column: str = "question_label", gold_column: str = "target",
                  prediction_column: str = "prediction") -> dict[str, Any]:
    """Overall micro-F1 (counts pooled over criteria per class, F1 of "met" and of "not met", their mean) and
    macro-F1 (the two F1s per criterion, averaged over criteria, then their mean), with per-criterion rows.

    A class with no gold and no predicted rows for a criterion (no met patient in a split, say)
    scores F1 0 there, as with sklearn's default zero_division: macro-F1 stays below 1 even for
    perfect answers on such a split, micro-F1 does not.
    """
    per_criterion, pooled = [], dict.fromkeys(("met_tp", "met_fp", "met_fn", "not_met_tp", "not_met_fp",
                                               "not_met_fn"), 0)
    for criterion, group in frame.groupby(criterion_column, sort=True):
        counts = n2c2_counts(group[gold_column], group[prediction_column])
        for key, value in counts.items():
            pooled[key] += value
        per_criterion.append({criterion_column: criterion, **counts,
                              "f1_met": _f1(counts["met_tp"], counts["met_fp"], counts["met_fn"]),
                              "f1_not_met": _f1(counts["not_met_tp"], counts["not_met_fp"], counts["not_met_fn"])})
    table = pd.DataFrame(per_criterion)
    micro_met = _f1(pooled["met_tp"], pooled["met_fp"], pooled["met_fn"])
    micro_not_met = _f1(pooled["not_met_tp"], pooled["not_met_fp"], pooled["not_met_fn"])
    macro_met, macro_not_met = float(table["f1_met"].mean()), float(table["f1_not_met"].mean())
    return {"micro_f1": (micro_met + micro_not_met) / 2, "micro_f1_met": micro_met,
            "micro_f1_not_met": micro_not_met, "macro_f1": (macro_met + macro_not_met) / 2,
            "macro_f1_met": macro_met, "macro_f1_not_met": macro_not_met, "per_criterion": table}


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


BOOLEAN_TYPES = ("yes_no", "na-bool", "boolean")  # the annotated set's and apixaban's yes/no question types


def _score_n2c2(scored: pd.DataFrame, answers: list[str | None], hba1c_low: float, hba1c_high: float) -> None:
    """met (1) / not met (0): yes/no criteria from Yes, CREATININE and HBA1C from thresholds."""
    scored["target"] = [met_label(label) for label in scored["label"]]
    scored["prediction"] = n2c2_predictions(answers, list(scored["question_label"]), hba1c_low, hba1c_high).to_numpy()


def _score_yes_or_not(scored: pd.DataFrame, answers: list[str | None], *_: Any) -> None:
    """Yes/no questions as "1" (Yes) / "0" (anything else); numeric ones by value ("unparseable" when none)."""
    kinds = [(_text(kind) or "").strip().lower() for kind in scored["question_type"]]
    targets = [str(int(normalize_answer(label) == "Yes")) if kind == "boolean" else normalize_answer(label)
               for label, kind in zip(scored["label"], kinds)]
    scored["target"] = pd.Series(targets, index=scored.index, dtype=object)
    scored["prediction"] = pd.Series(
        [str(boolean_prediction(answer)) if kind == "boolean" else
         (label if same_answer(answer, label) else (answer if answer is not None else "unparseable"))
         for answer, label, kind in zip(answers, targets, kinds)], index=scored.index, dtype=object)


def _score_answers(scored: pd.DataFrame, answers: list[str | None], *_: Any) -> None:
    """Every answer against its gold answer (numbers as numbers); an unparseable yes/no reply is No."""
    kinds = [(_text(kind) or "").strip().lower() for kind in scored["question_type"]]
    targets = [normalize_answer(label) for label in scored["label"]]
    predictions = [label if same_answer(answer, label) else
                   (answer if answer is not None else ("No" if kind in BOOLEAN_TYPES else "unparseable"))
                   for answer, label, kind in zip(answers, targets, kinds)]
    scored["target"] = pd.Series(targets, index=scored.index, dtype=object)
    scored["prediction"] = pd.Series(predictions, index=scored.index, dtype=object)
    scored["correct"] = [prediction == target for prediction, target in zip(predictions, targets)]


def _extra_n2c2(frame: pd.DataFrame) -> dict[str, Any]:
    official = n2c2_official(frame)
    # the official scorer's figures, named apart from the paper's per-question micro_f1
    return {f"n2c2_{key}": value for key, value in official.items() if key != "per_criterion"}


def _extra_answers(frame: pd.DataFrame) -> dict[str, Any]:
    extra = {"accuracy": float(frame["correct"].mean())}
    for question_type, group in frame.groupby("question_type", sort=True):
        extra[f"accuracy_{question_type}"] = float(group["correct"].mean())
    return extra


# each scorer of tasks.SCORERS: how it decides target and prediction, and the figures it adds to a summary
SCORERS: dict[str, tuple[Callable[..., None], Callable[[pd.DataFrame], dict[str, Any]] | None]] = {
    "n2c2": (_score_n2c2, _extra_n2c2), "yes_or_not": (_score_yes_or_not, None), "answers": (_score_answers,
                                                                                           _extra_answers)}


def score_outputs(outputs: pd.DataFrame, task: str, hba1c_low: float = 6.5, hba1c_high: float = 9.5) -> pd.DataFrame:
    """Add `answer` (extracted, None when unparseable), `parsed`, `target` and `prediction` for a task.

    The task's scorer decides (tasks.SCORERS): n2c2 met (1) / not met (0); yes_or_not yes/no criteria as
    "1"/"0" and numeric ones by value; answers every normalized answer. An unparseable reply to a yes/no
    question counts as No (not met), as in the paper; to a numeric one it is "unparseable". Every
    decision is made on Python values, never on a column's missing-value marker, so the result is the
    same whatever dtypes the frame was read with.
    """
    score, _ = SCORERS[get_task(task).scorer]
    scored = outputs.copy()
    reasons = list(scored["finish_reason"]) if "finish_reason" in scored else ["stop"] * len(scored)
    answers = [extract_answer(text, reason) for text, reason in zip(scored["output"], reasons)]
    scored["answer"] = pd.Series(answers, index=scored.index, dtype=object)
    scored["parsed"] = [answer is not None for answer in answers]
    score(scored, answers, hba1c_low, hba1c_high)
    return scored


def results_table(per_model: dict[str, pd.DataFrame], question_column: str, metric: str,
                  summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """The paper's table: question x model for one metric, plus Average and its 95% CI over questions."""
    table = pd.concat({model: frame.set_index(question_column)[metric] for model, frame in per_model.items()},
                      axis=1)
    average = {model: summaries[model][metric] for model in per_model}
    low = {model: summaries[model][f"{metric}_ci_questions"][0] for model in per_model}
    high = {model: summaries[model][f"{metric}_ci_questions"][1] for model in per_model}
    table.loc["Average"] = pd.Series(average)
    table.loc["Average 95% CI low"] = pd.Series(low)
    table.loc["Average 95% CI high"] = pd.Series(high)
    return table.round(4)


def plot_models(summaries: dict[str, dict[str, Any]], metric: str, path: Path, title: str) -> Path:
    """Bars per model with the 95% CI over questions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(summaries)
    values = [summaries[model][metric] for model in models]
    intervals = [summaries[model][f"{metric}_ci_questions"] for model in models]
    errors = np.array([[value - low, high - value] for value, (low, high) in zip(values, intervals)]).T
    figure, axis = plt.subplots(figsize=(max(4, 1.4 * len(models) + 2), 3.6))
    axis.bar(models, values, yerr=errors, capsize=5, color="#4C72B0")
    axis.set_ylim(0, 1)
    axis.set_ylabel(metric.replace("_", " "))
    axis.set_title(title)
    for index, value in enumerate(values):
        axis.text(index, min(value + 0.03, 0.97), f"{value:.3f}", ha="center", fontsize=9)
    axis.tick_params(axis="x", rotation=20)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_heatmap(table: pd.DataFrame, path: Path, title: str) -> Path:
    """Question x model heatmap of one metric (the per-question rows of `results_table`)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = table.drop(index=[name for name in table.index if str(name).startswith("Average")])
    figure, axis = plt.subplots(figsize=(max(4, 1.3 * rows.shape[1] + 3), 0.35 * rows.shape[0] + 1.5))
    image = axis.imshow(rows.to_numpy(dtype=float), vmin=0, vmax=1, cmap="viridis", aspect="auto")
    axis.set_xticks(range(rows.shape[1]), rows.columns, rotation=20, ha="right")
    axis.set_yticks(range(rows.shape[0]), rows.index)
    for (row, column), value in np.ndenumerate(rows.to_numpy(dtype=float)):
        axis.text(column, row, f"{value:.2f}", ha="center", va="center", fontsize=7,
                  color="white" if value < 0.6 else "black")
    figure.colorbar(image, ax=axis)
    axis.set_title(title)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


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
        if spec.scorer == "n2c2" and any((_text(label) or "").strip() == "" for label in outputs["label"]):
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


def summary_frame(summaries: dict[str, dict[str, Any]]) -> pd.DataFrame:
    """One row per model; each interval split into _low / _high columns."""
    rows = []
    for model, summary in summaries.items():
        row: dict[str, Any] = {"model": model}
        for key, value in summary.items():
            if isinstance(value, tuple):
                row[f"{key}_low"], row[f"{key}_high"] = value
            else:
                row[key] = value
        rows.append(row)
    return pd.DataFrame(rows).round(4)


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


def by_kind(evaluation: dict[str, Any], question_column: str) -> pd.DataFrame:
    """Mean per-question metrics of each kind of question (question_type: boolean, numeric), per model."""
    kinds = []
    for model, frame in evaluation["scored"].items():
        table = per_question(frame, question_column).merge(
            frame.groupby(question_column)["question_type"].first().reset_index())
        kinds.append(table.groupby("question_type")[list(METRICS)].mean().assign(model=model))
    return pd.concat(kinds).reset_index().round(4)


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
