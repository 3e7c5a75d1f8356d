"""The run report's figures (PNG): teacher-rated difficulty, the fine-tuning loss, the evaluation's scores per
task and per question type."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from clinical_distil.layout import MODEL_ROLES
from clinical_distil.prompts import QUESTION_TYPES


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(figure, path: Path) -> Path:
    import matplotlib.pyplot as plt

    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)
    return path


def plot_difficulty(kept: pd.DataFrame, path: Path) -> Path:
    plt = _pyplot()
    figure, axes = plt.subplots(1, len(QUESTION_TYPES), figsize=(13, 3), sharey=True)
    for axis, question_type in zip(axes, QUESTION_TYPES):
        values = kept.loc[kept["question_type"] == question_type, "difficulty"].dropna().astype(int)
        counts = values.value_counts().reindex(range(1, 11), fill_value=0)
        axis.bar(counts.index, counts.values, color="#4C72B0")
        axis.set_title(f"{question_type} ({len(values)})")
        axis.set_xlabel("difficulty")
        axis.set_xticks(range(1, 11))
    axes[0].set_ylabel("items")
    figure.suptitle("Teacher-rated difficulty of the kept items")
    return _save(figure, path)


def plot_loss(history: list[dict[str, Any]], path: Path) -> Path | None:
    train = [(entry["step"], entry["loss"]) for entry in history if "loss" in entry and "step" in entry]
    evaluation = [(entry["step"], entry["eval_loss"]) for entry in history if "eval_loss" in entry]
    if not train and not evaluation:
        return None
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(6.5, 3.5))
    if train:
        axis.plot(*zip(*train), marker=".", label="training loss")
    if evaluation:
        axis.plot(*zip(*evaluation), marker="o", linestyle="--", label="eval loss")
    axis.set_xlabel("optimizer step")
    axis.set_ylabel("loss")
    axis.set_title("Fine-tuning")
    axis.legend()
    return _save(figure, path)


def plot_tasks(summaries: dict[str, pd.DataFrame], path: Path) -> Path:
    plt = _pyplot()
    metrics = ("balanced_accuracy", "micro_f1")
    figure, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics) + 1, 3.6), sharey=True)
    width = 0.8 / len(MODEL_ROLES)
    tasks = list(summaries)
    for axis, metric in zip(axes, metrics):
        for offset, role in enumerate(MODEL_ROLES):
            values, errors = [], [[], []]
            for task in tasks:
                rows = summaries[task][summaries[task]["model"] == role]
                value = float(rows[metric].iloc[0]) if len(rows) else np.nan
                low = float(rows[f"{metric}_ci_questions_low"].iloc[0]) if len(rows) else np.nan
                high = float(rows[f"{metric}_ci_questions_high"].iloc[0]) if len(rows) else np.nan
                values.append(value)
                errors[0].append(max(value - low, 0))
                errors[1].append(max(high - value, 0))
            positions = np.arange(len(tasks)) + (offset - (len(MODEL_ROLES) - 1) / 2) * width
            axis.bar(positions, values, width, yerr=errors, capsize=4, label=role)
        axis.set_xticks(np.arange(len(tasks)), tasks)
        axis.set_ylim(0, 1)
        axis.set_title(f"{metric.replace('_', ' ')} (95% CI over questions)")
    axes[0].legend()
    return _save(figure, path)


def plot_types(summary: pd.DataFrame, path: Path) -> Path:
    plt = _pyplot()
    types = [kind for kind in QUESTION_TYPES if f"accuracy_{kind}" in summary]
    figure, axis = plt.subplots(figsize=(6.5, 3.5))
    width = 0.8 / len(MODEL_ROLES)
    for offset, role in enumerate(MODEL_ROLES):
        rows = summary[summary["model"] == role]
        values = [float(rows[f"accuracy_{kind}"].iloc[0]) if len(rows) else np.nan for kind in types]
        axis.bar(np.arange(len(types)) + (offset - (len(MODEL_ROLES) - 1) / 2) * width, values, width, label=role)
    axis.set_xticks(np.arange(len(types)), types)
    axis.set_ylim(0, 1)
    axis.set_ylabel("accuracy")
    axis.set_title("Annotated synthetic questions: accuracy per question type")
    axis.legend()
    return _save(figure, path)
