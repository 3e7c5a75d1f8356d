"""Stage C: balanced, formatted, patient-grouped train/test sets for fine-tuning.

Each example is the answer prompt (note + question) and, as target, the gold item as JSON
in a json code fence. The split is grouped by patient so no patient's notes sit on both
sides (the published split was by example, which let test notes leak into training).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from clinical_distil import layout
from clinical_distil.files import InputError, atomic_group, write_csv
from clinical_distil.prompts import ANSWER_KEYS, PromptTemplates, answer_messages, answer_target

log = logging.getLogger(__name__)

DATASET_COLUMNS = ["id", "prompt", "output", "question_type", "subject_id", "note_id"]
NO_SUPPORT_KEYS = ("question", "type", "answer", "section")  # the paper's "no support": no source, no explanation


def balance(items: pd.DataFrame, per_type: int | None = None, hardest: bool = False, seed: int = 42) -> pd.DataFrame:
    """The same number of items per question type: the smallest type's count, or `per_type`.

    `hardest` takes each type's highest-difficulty items instead of a random sample (the
    paper's "hardest 25K" variant); ties are broken by the seeded shuffle.
    """
    counts = items["question_type"].value_counts()
    if counts.empty:
        raise InputError("no items to balance")
    size = int(counts.min()) if per_type is None else int(per_type)
    if per_type is not None and size > counts.min():
        raise InputError(f"per_type {size} is more than the smallest type has ({counts.idxmin()}: {counts.min()})")
    shuffled = items.sample(frac=1.0, random_state=seed)
    if hardest:
        shuffled = shuffled.sort_values("difficulty", ascending=False, kind="stable")
    return shuffled.groupby("question_type", sort=True).head(size).reset_index(drop=True)


def format_examples(items: pd.DataFrame, support: bool = True, templates: PromptTemplates | None = None) -> pd.DataFrame:
    """`prompt` (chat messages: system + user) and `output` (the target) for every item."""
    keys = ANSWER_KEYS if support else NO_SUPPORT_KEYS
    examples = pd.DataFrame({
        "id": [f"{note_id}-{question_type}-{index}" for note_id, question_type, index
               in zip(items["note_id"], items["question_type"], items["item_index"])],
        "prompt": [answer_messages(text, question, templates) for text, question in zip(items["text"],
                                                                                         items["question"])],
        "output": [answer_target(row, keys) for row in items.to_dict("records")],
        "question_type": items["question_type"].values,
        "subject_id": items["subject_id"].values,
        "note_id": items["note_id"].astype(str).values,
    })
    return examples[DATASET_COLUMNS]


def split(examples: pd.DataFrame, test_size: float = 0.1, seed: int = 42,
          grouped: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    if grouped:
        if examples["subject_id"].nunique() < 2:
            raise InputError("a patient-grouped split needs at least two patients")
        splitter = GroupShuffleSplit(n_splits=1, test_size=test_size, random_state=seed)
        train_index, test_index = next(splitter.split(examples, groups=examples["subject_id"]))
        return examples.iloc[train_index].reset_index(drop=True), examples.iloc[test_index].reset_index(drop=True)
    train, test = train_test_split(examples, test_size=test_size, random_state=seed)
    return train.reset_index(drop=True), test.reset_index(drop=True)


def load_tokenizer(name: str):
    """The student's tokenizer (a local folder, or a hub id where the hub is reachable), or one clear line."""
    from transformers import AutoTokenizer

    from clinical_distil.files import check_model_folder
    from clinical_distil.layout import resolve

    check_model_folder(name)
    try:
        return AutoTokenizer.from_pretrained(str(resolve(name)) if resolve(name).exists() else name)
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load the tokenizer {name!r} ({str(error).splitlines()[0]}); give a local model "
                         "folder") from None


def check_target(output_dir: Path, name: str, overwrite: bool = False) -> None:
    """Refuse, before any work, to replace a training set unless asked."""
    for split_name in ("train", "test"):
        arrow_dir = layout.training_dataset(output_dir, split_name, name)
        if arrow_dir.exists() and not overwrite:
            raise InputError(f"{arrow_dir} exists; set overwrite=True (papermill: -p overwrite True) to replace "
                             "stage C's output")


def write_datasets(train: pd.DataFrame, test: pd.DataFrame, output_dir: Path, name: str,
                   overwrite: bool = False) -> dict[str, Path]:
    """`{train,test}_{name}.arrow` (datasets save_to_disk) and the same rows as csv.gz (prompt as JSON); all
    of both splits' files or none."""
    from datasets import Dataset

    check_target(output_dir, name, overwrite)
    splits = {"train": train, "test": test}
    targets = [path for split_name in splits for path in (layout.training_dataset(output_dir, split_name, name),
                                                          layout.training_table(output_dir, split_name, name))]
    with atomic_group(targets) as staged:
        for (arrow_dir, table), frame in zip(zip(staged[::2], staged[1::2]), splits.values()):
            Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(arrow_dir))
            write_csv(frame.assign(prompt=frame["prompt"].map(json.dumps)), table)  # the chat messages as JSON
    return {split_name: layout.training_dataset(output_dir, split_name, name) for split_name in splits}
