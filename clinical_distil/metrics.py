"""Scoring students' answers: answer extraction, the paper's metrics, the official n2c2 ones, tables.

The paper scores each question (criterion) with balanced accuracy and sklearn micro-F1 and
averages over questions; n2c2 2018 Track 1's official scorer instead pools counts over criteria
separately for "met" and "not met" and reports the mean of the two F1 scores. Both are here.
Confidence intervals are percentile bootstraps (1,000 resamples, seeded), over questions (as the
paper) and over examples. Reading eval-inference's files and writing the scores are in
evaluate.py, the figures in plots.py.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from clinical_distil.files import InputError
from clinical_distil.lenient_json import ZERO_WIDTH
from clinical_distil.parsing import CUT_OFF_REASONS, json_values, strip_reasoning
from clinical_distil.answers import NUMBER, is_number, normalize_answer, parse_number
from clinical_distil.tasks import get_task

ANSWER_FIELD = re.compile(r'"?answer"?\s*[:=]\s*"?\s*([^"}\n]+)', re.IGNORECASE)
LEADING_WORD = re.compile(r"^\W*(yes|no|na|n/a)\b", re.IGNORECASE)
LEADING_NUMBER = re.compile(rf"^\s*({NUMBER})(?![\d.,/-])")


def cell_text(value: Any) -> str | None:
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
    output, finish_reason = cell_text(output), cell_text(finish_reason) or "stop"
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
    prediction = None if cell_text(prediction) is None else normalize_answer(prediction)
    if prediction is None:
        return False
    label = normalize_answer(label)
    expected, found = parse_number(label), parse_number(prediction)
    if expected is not None and found is not None:
        return abs(found - expected) <= 1e-9 * max(1.0, abs(expected))
    return prediction == label


def boolean_prediction(answer: Any) -> int:
    """1 for Yes; No, NA and unparseable replies (None, NaN) count as No (as in the paper)."""
    return int(cell_text(answer) is not None and normalize_answer(answer) == "Yes")


def threshold_prediction(answer: Any, low: float, high: float = float("inf"), strict_low: bool = False) -> int:
    """1 when a numeric answer falls in [low, high] ((low, high] with strict_low); NA, text or unparseable: 0."""
    value = None if cell_text(answer) is None else parse_number(answer)
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
    text = (cell_text(value) or "").strip().lower()
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


# --- each task's scorer ---------------------------------------------------------------------------

BOOLEAN_TYPES = ("yes_no", "na-bool", "boolean")  # the annotated set's and apixaban's yes/no question types


def _score_n2c2(scored: pd.DataFrame, answers: list[str | None], hba1c_low: float, hba1c_high: float) -> None:
    """met (1) / not met (0): yes/no criteria from Yes, CREATININE and HBA1C from thresholds."""
    scored["target"] = [met_label(label) for label in scored["label"]]
    scored["prediction"] = n2c2_predictions(answers, list(scored["question_label"]), hba1c_low, hba1c_high).to_numpy()


def _score_yes_or_not(scored: pd.DataFrame, answers: list[str | None], *_: Any) -> None:
    """Yes/no questions as "1" (Yes) / "0" (anything else); numeric ones by value ("unparseable" when none)."""
    kinds = [(cell_text(kind) or "").strip().lower() for kind in scored["question_type"]]
    targets = [str(int(normalize_answer(label) == "Yes")) if kind == "boolean" else normalize_answer(label)
               for label, kind in zip(scored["label"], kinds)]
    scored["target"] = pd.Series(targets, index=scored.index, dtype=object)
    scored["prediction"] = pd.Series(
        [str(boolean_prediction(answer)) if kind == "boolean" else
         (label if same_answer(answer, label) else (answer if answer is not None else "unparseable"))
         for answer, label, kind in zip(answers, targets, kinds)], index=scored.index, dtype=object)


def _score_answers(scored: pd.DataFrame, answers: list[str | None], *_: Any) -> None:
    """Every answer against its gold answer (numbers as numbers); an unparseable yes/no reply is No."""
    kinds = [(cell_text(kind) or "").strip().lower() for kind in scored["question_type"]]
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


# --- tables ---------------------------------------------------------------------------------------

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


def by_kind(evaluation: dict[str, Any], question_column: str) -> pd.DataFrame:
    """Mean per-question metrics of each kind of question (question_type: boolean, numeric), per model."""
    kinds = []
    for model, frame in evaluation["scored"].items():
        table = per_question(frame, question_column).merge(
            frame.groupby(question_column)["question_type"].first().reset_index())
        kinds.append(table.groupby("question_type")[list(METRICS)].mean().assign(model=model))
    return pd.concat(kinds).reset_index().round(4)
