"""The evaluation tasks: one registry, and the tasks' fixed vocabularies.

A task is one `EvalTask` entry in TASKS plus its folder, which holds two notebooks named from the
entry's prefix: `{prefix}-a-preprocess.ipynb` (raw data -> eval-data/{task}/{file}.csv) and
`{prefix}-b-evaluate-performance.ipynb` (every model's answers -> scores). The driver, eval-inference,
the metrics and the report take everything they need about a task from its entry.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from clinical_distil.criteria import Criterion, read_criteria
from clinical_distil.files import InputError
from clinical_distil.layout import REPO_ROOT, criteria_file, task_notebooks

# The criteria of the two cohort tasks and their questions come from the shipped criteria files, one source
# for the evaluation and for researchers' runs.
N2C2_FILE, APIXABAN_FILE = criteria_file("n2c2-2018"), criteria_file("apixaban")
N2C2: tuple[Criterion, ...] = tuple(read_criteria(N2C2_FILE))
APIXABAN: tuple[Criterion, ...] = tuple(read_criteria(APIXABAN_FILE))
N2C2_CRITERIA = tuple(criterion.id for criterion in N2C2)
# asked as numbers and thresholded; every other criterion is asked as yes/no
N2C2_NUMERIC = tuple(criterion.id for criterion in N2C2 if criterion.answer == "numeric")
APIXABAN_BOOLEAN = tuple(criterion.id for criterion in APIXABAN if criterion.answer == "yes/no")
APIXABAN_NUMERIC = tuple(criterion.id for criterion in APIXABAN if criterion.answer == "numeric")

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
    def official_n2c2(self) -> bool:
        """Scored as n2c2 2018 Track 1 is officially: micro-F1 over met / not met, predictions exported as XML."""
        return self.scorer == "n2c2"

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
