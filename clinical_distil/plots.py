"""An evaluation's figures: the models' mean scores with their intervals, and scores by question and model."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


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
