"""Two models' scores on the same patients compared: the paired, patient-level bootstrap of their difference.

A patient answers several questions (n2c2: 13 criteria; apixaban: 23), so questions of one patient are not
independent and resampling questions understates the uncertainty. Each resample here draws patients with
replacement and scores both models on the same drawn patients, so the interval is of the difference itself
(paired), not two intervals compared. The score is the one the tables report: the mean over questions of each
question's metric (balanced accuracy: the mean recall over the label values present), computed on the rows of
the drawn patients, each as often as it was drawn.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from clinical_distil.files import InputError


def _weighted_scores(weights: np.ndarray, question: np.ndarray, label: np.ndarray, correct: np.ndarray,
                     metric: str) -> np.ndarray:
    """The mean per-question metric for each row of `weights` (resamples x rows: how often each row was drawn)."""
    scores = []
    for value in np.unique(question):
        rows = question == value
        drawn = weights[:, rows]
        if metric == "micro_f1":  # accuracy over the question's drawn rows
            scores.append(drawn @ correct[rows] / drawn.sum(axis=1))
            continue
        recalls = []
        for label_value in pd.unique(label[rows]):
            of_value = label[rows] == label_value
            total = drawn[:, of_value].sum(axis=1)
            hits = drawn[:, of_value] @ correct[rows][of_value]
            recalls.append(np.where(total > 0, hits / np.where(total > 0, total, 1), np.nan))
        scores.append(np.nanmean(np.vstack(recalls), axis=0))
    return np.nanmean(np.vstack(scores), axis=0)


def aligned(student: pd.DataFrame, base: pd.DataFrame, key: str = "id") -> tuple[pd.DataFrame, pd.DataFrame]:
    """Both models' scored rows in one order, refused in one line unless they answered the same prompts."""
    for name, frame in (("student", student), ("base", base)):
        if frame[key].duplicated().any():
            raise InputError(f"the {name}'s answers hold prompt {frame[key][frame[key].duplicated()].iloc[0]!r} "
                             "twice; score each prompt once")
    if set(student[key]) != set(base[key]):
        only = sorted(set(student[key]) ^ set(base[key]), key=str)
        raise InputError(f"the two models answered different prompts ({len(only)} in one only, e.g. {only[0]!r}); "
                         "compare answers to the same eval file and rows")
    return student.set_index(key).sort_index().reset_index(), base.set_index(key).sort_index().reset_index()


def paired_difference(student: pd.DataFrame, base: pd.DataFrame, question_column: str,
                      patient_column: str = "patient", metric: str = "balanced_accuracy", resamples: int = 2000,
                      seed: int = 0, label_column: str = "target",
                      prediction_column: str = "prediction") -> dict[str, Any]:
    """student - base of the mean per-question metric, with its 95% percentile interval over patient resamples.

    Both frames are scored answers (clinical_distil.metrics.score_outputs) to the same prompts (`id`)."""
    student, base = aligned(student, base)
    if not student[patient_column].equals(base[patient_column]) or \
            not student[label_column].equals(base[label_column]):
        raise InputError("the two models' answers disagree on a prompt's patient or label; score both on the same "
                         "eval file")
    question = student[question_column].to_numpy()
    label = student[label_column].to_numpy()
    patients, patient_of_row = np.unique(student[patient_column].astype(str).to_numpy(), return_inverse=True)
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(patients), size=(resamples, len(patients)))
    per_patient = np.zeros((resamples, len(patients)))
    np.add.at(per_patient, (np.repeat(np.arange(resamples), len(patients)), drawn.ravel()), 1)
    weights = np.vstack([np.ones(len(patients)), per_patient])[:, patient_of_row]  # row 0: the data as it is
    scores = {}
    for name, frame in (("student", student), ("base", base)):
        correct = (frame[prediction_column].to_numpy() == label).astype(float)
        scores[name] = _weighted_scores(weights, question, label, correct, metric)
    difference = scores["student"] - scores["base"]
    low, high = np.percentile(difference[1:], [2.5, 97.5])
    return {"metric": metric, "student": float(scores["student"][0]), "base": float(scores["base"][0]),
            "difference": float(difference[0]), "ci": (float(low), float(high)), "patients": len(patients),
            "resamples": resamples, "seed": seed}


POSITIVE, NEGATIVE = {"1", "yes", "met", "true"}, {"0", "no", "not met", "false"}


def per_criterion(student: pd.DataFrame, base: pd.DataFrame, question_column: str, label_column: str = "target",
                  prediction_column: str = "prediction") -> pd.DataFrame:
    """One row per criterion (question): its examples, positives, negatives and other labels (values, N/A), and
    each model's balanced accuracy on it with student - base; the table a reader needs to weigh each figure."""
    from clinical_distil.metrics import balanced_accuracy

    student, base = aligned(student, base)
    rows = []
    for criterion, rows_of in student.groupby(question_column, sort=True).groups.items():
        labels = student.loc[rows_of, label_column].to_numpy()
        words = [str(label).strip().lower() for label in labels]
        scores = {name: balanced_accuracy(labels, frame.loc[rows_of, prediction_column].to_numpy())
                  for name, frame in (("student", student), ("base", base))}
        rows.append({question_column: criterion, "n": len(labels), "positives": sum(w in POSITIVE for w in words),
                     "negatives": sum(w in NEGATIVE for w in words),
                     "other": sum(w not in POSITIVE | NEGATIVE for w in words),
                     "base": scores["base"], "student": scores["student"],
                     "difference": scores["student"] - scores["base"]})
    return pd.DataFrame(rows)
