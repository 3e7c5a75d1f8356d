"""The paired, patient-level bootstrap of student - base: a hand-computed case, a plain loop as oracle, refusals."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_distil.files import InputError
from clinical_distil.metrics import per_question
from clinical_distil.paired_bootstrap import paired_difference


def scored(rows: list[tuple], predictions: list) -> pd.DataFrame:
    return pd.DataFrame([{"id": f"{patient}-{question}", "patient": patient, "question_label": question,
                          "target": label, "prediction": prediction}
                         for (patient, question, label), prediction in zip(rows, predictions)])


def test_a_hand_computed_case():
    """Patients A and B, two criteria each. The student is always right; the base only on A. Balanced accuracy,
    student - base: all data 1 - 0.5; drawn {A, A}: 1 - 1 (one label value per criterion, which the base gets);
    {B, B}: 1 - 0; {A, B}: 0.5. So the differences are 0, 0.5, 1 with chances 1/4, 1/2, 1/4: the 95% interval is
    [0, 1] and the estimate 0.5."""
    rows = [("A", "q1", 1), ("A", "q2", 0), ("B", "q1", 0), ("B", "q2", 1)]
    student = scored(rows, [1, 0, 0, 1])
    base = scored(rows, [1, 0, 1, 0])
    result = paired_difference(student, base, "question_label", resamples=4000, seed=3)
    assert (result["student"], result["base"], result["difference"]) == (1.0, 0.5, 0.5)
    assert result["ci"] == (0.0, 1.0) and result["patients"] == 2
    # the same data scored per prompt (micro-F1, i.e. accuracy): 1 - 0.5
    assert paired_difference(student, base, "question_label", metric="micro_f1")["difference"] == 0.5


def plain_loop(student: pd.DataFrame, base: pd.DataFrame, resamples: int, seed: int) -> tuple[float, tuple]:
    """The bootstrap written out: draw patients (the function's draws), concatenate their rows, score each model."""
    patients = np.unique(student["patient"].astype(str))
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, len(patients), size=(resamples, len(patients)))

    def score(frame: pd.DataFrame) -> float:
        return float(per_question(frame, "question_label")["balanced_accuracy"].mean())

    def on(frame: pd.DataFrame, picks) -> pd.DataFrame:
        return pd.concat([frame[frame["patient"].astype(str) == patients[pick]] for pick in picks])

    differences = [score(on(student, picks)) - score(on(base, picks)) for picks in drawn]
    return score(student) - score(base), tuple(np.percentile(differences, [2.5, 97.5]))


@settings(max_examples=10, deadline=None)
@given(st.integers(2, 6), st.integers(1, 4), st.integers(0, 10**6))
def test_it_is_the_plain_loop(patients, questions, seed):
    rng = np.random.default_rng(seed)
    rows = [(f"p{patient}", f"q{question}", int(rng.integers(0, 3)))
            for patient in range(patients) for question in range(questions)]
    student = scored(rows, list(rng.integers(0, 3, len(rows))))
    base = scored(rows, list(rng.integers(0, 3, len(rows))))
    result = paired_difference(student, base, "question_label", resamples=60, seed=seed)
    expected, interval = plain_loop(student, base, 60, seed)
    assert result["difference"] == pytest.approx(expected)
    assert result["ci"] == pytest.approx(interval)


def test_rows_out_of_order_are_paired_by_prompt():
    rows = [("A", "q1", 1), ("A", "q2", 0), ("B", "q1", 0), ("B", "q2", 1)]
    student, base = scored(rows, [1, 0, 0, 1]), scored(rows, [1, 0, 1, 0])
    shuffled = paired_difference(student.iloc[::-1], base, "question_label", resamples=200)
    assert shuffled == paired_difference(student, base, "question_label", resamples=200)


@pytest.mark.parametrize("change, message", [
    (lambda frame: frame.iloc[:3], "the two models answered different prompts (1 in one only, e.g. 'B-q2')"),
    (lambda frame: pd.concat([frame, frame.iloc[:1]]), "the student's answers hold prompt 'A-q1' twice"),
    (lambda frame: frame.assign(target=[1, 1, 0, 1]), "disagree on a prompt's patient or label"),
])
def test_answers_to_other_prompts_are_refused(change, message):
    rows = [("A", "q1", 1), ("A", "q2", 0), ("B", "q1", 0), ("B", "q2", 1)]
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        paired_difference(change(scored(rows, [1, 0, 0, 1])), scored(rows, [1, 0, 1, 0]), "question_label")


def test_the_per_criterion_table_counts_positives_and_negatives():
    from clinical_distil.paired_bootstrap import per_criterion

    rows = [("A", "q1", 1), ("A", "q2", "N/A"), ("B", "q1", 0), ("B", "q2", "7.5"), ("C", "q1", 1), ("C", "q2", "No")]
    student = scored(rows, [1, "N/A", 0, "7.5", 0, "No"])
    base = scored(rows, [0, "N/A", 0, "7", 0, "Yes"])
    table = per_criterion(student, base, "question_label").set_index("question_label")
    assert table.loc["q1", ["n", "positives", "negatives", "other"]].tolist() == [3, 2, 1, 0]
    assert table.loc["q2", ["n", "positives", "negatives", "other"]].tolist() == [3, 0, 1, 2]
    # q1: student recall 1/2 on met, 1 on not met -> 0.75; base 0 and 1 -> 0.5
    assert table.loc["q1", ["student", "base", "difference"]].tolist() == [0.75, 0.5, 0.25]
    # q2: three label values, each once: student right on all (1.0), base on N/A only (1/3)
    assert table.loc["q2", "student"] == 1.0 and table.loc["q2", "base"] == pytest.approx(1 / 3)
