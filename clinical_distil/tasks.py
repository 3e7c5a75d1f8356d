"""The evaluation tasks: one registry, and the tasks' fixed vocabularies.

A task is one `EvalTask` entry in TASKS plus its folder, which holds two notebooks named from the
entry's prefix: `{prefix}-a-preprocess.ipynb` (raw data -> eval-data/{task}/{file}.csv) and
`{prefix}-b-evaluate-performance.ipynb` (every model's answers -> scores). The driver, eval-inference,
the metrics and the report take everything they need about a task from its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinical_distil.files import InputError
from clinical_distil.layout import REPO_ROOT, task_notebooks

N2C2_CRITERIA = (
    "ABDOMINAL", "ADVANCED-CAD", "ALCOHOL-ABUSE", "ASP-FOR-MI", "CREATININE", "DIETSUPP-2MOS",
    "DRUG-ABUSE", "ENGLISH", "HBA1C", "KETO-1YR", "MAJOR-DIABETES", "MAKES-DECISIONS", "MI-6MOS",
)
# asked as numbers and thresholded; every other criterion is asked as yes/no
N2C2_NUMERIC = ("CREATININE", "HBA1C")

APIXABAN_BOOLEAN = (
    "afib", "mdd", "schizophrenia", "bipolar", "hemorrhagic", "recent_stroke", "peptic_ulcer_disease",
    "bleeding", "afib_ablation", "surgical_valvular_disease", "heart_failure", "t2d",
    "arterial_hypertension", "prior_stroke", "med_decisions",
)
APIXABAN_NUMERIC = (
    "lowest_platelets", "highest_bilirubin", "highest_ast", "highest_creatinine", "lowest_hemoglobin",
    "highest_chads2", "lowest_lvef", "highest_glucose",
)

# how a task's answers are scored (clinical_distil.metrics.SCORERS): "n2c2" met / not met per criterion
# (numeric criteria thresholded) with the official F1 too; "yes_or_not" yes/no questions as Yes against
# anything else, numeric ones by value; "answers" every answer against its gold answer, with accuracy
# per question type
SCORERS = ("n2c2", "yes_or_not", "answers")


@dataclass(frozen=True)
class EvalTask:
    name: str  # eval-data/{name}/ and outputs/{name}/
    folder: str  # the task's folder (relative to the repository, or absolute)
    prefix: str  # of its two notebooks
    title: str  # for tables and figures
    question_column: str  # per-question metrics are computed per value of this column
    scorer: str  # one of SCORERS
    input_dir: str  # the raw data's default folder, under the data root
    eval_files: tuple[str, ...] = ("prompts",)  # files the preprocess notebook writes; the first is the default
    labelled_splits: bool = False  # the eval files are splits of the raw folder (train/, test/), with gold XML
    # what a headline 95% interval resamples: "questions" where every patient is asked the same questions
    # (the paper's bootstrap); "examples" where questions are written per note and question_column holds
    # only their types
    interval_over: str = "questions"

    @property
    def notebooks(self) -> tuple[Path, Path]:
        return task_notebooks(str(REPO_ROOT / self.folder), self.prefix)

    @property
    def preprocess_notebook(self) -> Path:
        return self.notebooks[0]

    @property
    def evaluate_notebook(self) -> Path:
        return self.notebooks[1]


TASKS: dict[str, EvalTask] = {task.name: task for task in (
    EvalTask("annotated-synthetic", "b-synthetic-eval-task", "annotated_synthetic", "Annotated synthetic questions",
             "question_type", "answers", "annotated-synthetic", interval_over="examples"),
    EvalTask("i2b2", "c-i2b2-eval-task", "i2b2", "n2c2 2018 cohort selection", "question_label", "n2c2",
             "n2c2-2018-track1", eval_files=("test", "train"), labelled_splits=True),
    EvalTask("apixaban", "d-apixaban-eval-task", "apixaban", "Apixaban trial criteria", "criterion", "yes_or_not",
             "apixaban"),
)}


def get_task(name: str) -> EvalTask:
    if name not in TASKS:
        raise InputError(f"unknown evaluation task {name!r}; choose from {', '.join(TASKS)}")
    return TASKS[name]
