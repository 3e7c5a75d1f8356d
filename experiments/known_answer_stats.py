"""The known-answer benchmark's statistics: every comparison paired over patients, per seed and over seeds.

experiments/known_answer.py runs the arms; this module reads their answers again (each model's answer folder in
an arm's data root), scores them as the evaluation does, and compares two models on the same held-out patients
with clinical_distil.paired_bootstrap: a student against its base (the primary endpoint of
docs/known_answer.md), a student against the format-only student of its teacher, size and seed, and each
baseline (the text-only rules, the base with worked examples) against the base. It also writes the tables and
the two figures (teacher precision, teacher notes) of the analysis plan.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pandas as pd

from clinical_distil import layout
from clinical_distil.evaluate import read_model_outputs
from clinical_distil.metrics import score_outputs
from clinical_distil.paired_bootstrap import paired_difference, per_criterion
from clinical_distil.tasks import get_task

RUN = "known-answer"  # configs/known-answer.yaml's run name: its answer folders are known-answer-{model}
TASKS = ("annotated-synthetic", "i2b2", "apixaban")
BASELINES = {"rules": "the text-only teacher's rules as a classifier",
             "few-shot": "the base model with worked examples before each prompt"}
PRIMARY = "balanced_accuracy"


def patient_of(frame: pd.DataFrame, task: str) -> pd.Series:
    """The patient each answered row belongs to, the unit a paired bootstrap resamples: n2c2's patient, an apixaban
    note's subject (one note per patient), an annotated question's note (its id before the question's index)."""
    if "patient" in frame:
        return frame["patient"].astype(str)
    if "note_id" in frame:
        return frame["note_id"].astype(str).str.split("-").str[0]
    return frame["id"].astype(str).str.rsplit("-", n=1).str[0]


def input_file(task: str) -> str:
    return get_task(task).eval_files[0]


def scored_answers(root: Path, task: str, model: str) -> pd.DataFrame | None:
    """One model's scored answers to a task's eval file in an arm's data root (None where it has none)."""
    folder = layout.model_outputs(root, task, f"{RUN}-{model}")
    if not folder.is_dir() or not any(folder.glob("*_chunk_*.csv")):
        return None
    frame = score_outputs(read_model_outputs(folder, input_file(task)), task)
    frame["patient_unit"] = patient_of(frame, task)
    return frame


def answers_digest(root: Path, task: str, *models: str) -> str | None:
    """A digest of the models' answer files (both sides of a comparison): the same answers give the same digest, so
    a logged comparison is not logged twice, and answers of either model redone otherwise make a new one."""
    digest, found = hashlib.sha256(), False
    for model in models:
        folder = layout.model_outputs(root, task, f"{RUN}-{model}")
        for path in sorted(folder.glob("*_chunk_*.csv")) if folder.is_dir() else []:
            digest.update(model.encode() + b"\0" + path.name.encode() + b"\0" + path.read_bytes())
            found = True
    return digest.hexdigest()[:12] if found else None


def compare(first: pd.DataFrame, second: pd.DataFrame, task: str, resamples: int, seed: int) -> dict[str, Any]:
    """first - second of the task's balanced accuracy (mean over questions), paired over patients."""
    found = paired_difference(first, second, get_task(task).question_column, patient_column="patient_unit",
                              resamples=resamples, seed=seed)
    return {"first": found["student"], "second": found["base"], "difference": found["difference"],
            "ci_low": found["ci"][0], "ci_high": found["ci"][1], "patients": found["patients"],
            "resamples": resamples, "unparseable_first": float((~first["parsed"]).mean()),
            "unparseable_second": float((~second["parsed"]).mean())}


def criterion_rows(student: pd.DataFrame, base: pd.DataFrame, task: str) -> list[dict[str, Any]]:
    """The per-criterion table of a student against its base (positives and negatives with each figure)."""
    column = get_task(task).question_column
    table = per_criterion(student, base, column)
    return [{"criterion": str(row[column]), **{key: row[key] for key in ("n", "positives", "negatives", "other")},
             "base": row["base"], "student": row["student"], "difference": row["difference"]}
            for row in table.to_dict("records")]


def mean_over_seeds(paired: list[dict[str, Any]], keys: tuple[str, ...] = ("teacher", "notes", "filters", "answers",
                                                                         "comparison", "task")) -> list[dict]:
    """Per arm, comparison and task: the mean of the per-seed differences, their spread (min, max) and a 95% t
    interval over seeds (None under two seeds). The per-seed intervals resample patients within one training run;
    the t interval treats each seed's run as one draw, so it holds the spread between runs that they leave out."""
    frame = pd.DataFrame(paired)
    if frame.empty:
        return []
    frame["seeded"] = frame["seed"].notna() if "seed" in frame else False  # an arm of the config's seed stands apart
    rows = []
    plain = lambda value: None if pd.isna(value) else int(value) if isinstance(value, float) and value.is_integer() \
        else value  # noqa: E731 (a column with gaps holds floats: 300.0 is 300, NaN none)
    for values, group in frame.groupby([*keys, "seeded"], sort=False, dropna=False):
        values = values[:-1]
        rows.append({**{key: plain(value) for key, value in zip(keys, values)},
                     "seeds": int(group["seed"].notna().sum()) or len(group),
                     "mean_difference": float(group["difference"].mean()),
                     "min_difference": float(group["difference"].min()),
                     "max_difference": float(group["difference"].max()),
                     **seed_interval(group["difference"]),
                     "every_interval_above_zero": bool((group["ci_low"] > 0).all()),
                     "every_interval_below_zero": bool((group["ci_high"] < 0).all())})
    return rows


def seed_interval(differences: pd.Series) -> dict[str, float | None]:
    """The mean's 95% interval over seeds from Student's t (n - 1 degrees of freedom); None under two seeds."""
    from scipy.stats import t as student_t

    count = len(differences)
    if count < 2:
        return {"seeds_ci_low": None, "seeds_ci_high": None}
    half = float(student_t.ppf(0.975, count - 1) * differences.std(ddof=1) / count ** 0.5)
    return {"seeds_ci_low": float(differences.mean()) - half, "seeds_ci_high": float(differences.mean()) + half}


def precision_axis(teacher: str) -> float | None:
    """Where a teacher sits on the precision curve: P for reference@P, 1 for the reference, None for others."""
    name, at, value = teacher.partition("@")
    return float(value) if at else 1.0 if name == "reference" else None


def write_figures(paired: list[dict[str, Any]], folder: Path, stem: str = "known_answer") -> list[Path]:
    """The two curves of the analysis plan, student - base per task with each seed's point and the mean: against
    the teacher (reference@P by P, the text-only teacher at its measured place on the left) at the largest size,
    and against the notes the precision-1.0 teacher read."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    frame = pd.DataFrame([row for row in paired if row["comparison"] == "student - base"
                          and row.get("answers", "as written") == "as written" and row.get("filters") == "none"])
    if frame.empty:
        return []
    written = []
    largest = int(frame["notes"].max())
    teachers = sorted({teacher for teacher in frame.loc[frame["notes"] == largest, "teacher"]},
                      key=lambda name: (precision_axis(name) is not None, precision_axis(name) or 0))
    curves = [("precision", frame[frame["notes"] == largest], "teacher", teachers,
               f"teacher ({largest} notes read)"),
              ("size", frame[frame["teacher"] == "reference"], "notes",
               sorted(frame.loc[frame["teacher"] == "reference", "notes"].unique()), "notes the teacher read")]
    for name, rows, column, order, label in curves:
        if rows.empty or len(order) < 2:
            continue
        figure, axes = plt.subplots(1, len(TASKS), figsize=(4 * len(TASKS), 3.2), sharey=True)
        for axis, task in zip(axes, TASKS):
            of_task = rows[rows["task"] == task]
            positions = {value: index for index, value in enumerate(order)}
            axis.scatter([positions[value] for value in of_task[column]], of_task["difference"], s=14, alpha=0.6)
            means = of_task.groupby(column)["difference"].mean().reindex(order)
            axis.plot(range(len(order)), means.to_numpy(), marker="o", color="black")
            axis.axhline(0, color="grey", linewidth=0.8)
            axis.set_xticks(range(len(order)), [str(value) for value in order], rotation=20)
            axis.set_title(task)
            axis.set_xlabel(label)
        axes[0].set_ylabel("student - base, balanced accuracy")
        figure.tight_layout()
        path = folder / f"{stem}_{name}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        figure.savefig(path, dpi=110)
        plt.close(figure)
        written.append(path)
    return written
