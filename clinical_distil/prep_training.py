"""`prep_training` (stage C): balanced, formatted, patient-grouped train/test sets for fine-tuning.

Each example is the answer prompt (note + question) and, as target, the gold item as JSON
in a json code fence. The split is grouped by patient so no patient's notes sit on both
sides (the published split was by example, which let test notes leak into training).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.model_selection import GroupShuffleSplit, train_test_split

from clinical_distil import layout
from clinical_distil.files import InputError, atomic_group, write_csv, write_text
from clinical_distil.prompts import ANSWER_KEYS, PromptTemplates, answer_messages, answer_target
from clinical_distil.tables import markdown_table

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


def permute_answers(items: pd.DataFrame, seed: int = 42) -> pd.DataFrame:
    """The items with their answers shuffled among the items of each question type (seeded): the same questions,
    notes and answer format with the facts taken away, so that a student trained on them measures what format
    alone gains (the format-only baseline)."""
    permuted = items.copy()
    rng = np.random.default_rng(seed)
    for _, rows in items.groupby("question_type", sort=True).groups.items():
        permuted.loc[rows, "answer"] = items.loc[rows, "answer"].to_numpy()[rng.permutation(len(rows))]
    return permuted


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

    from clinical_distil.files import check_model, model_location

    check_model(name, "tokenizer")
    try:
        return AutoTokenizer.from_pretrained(model_location(name))
    except (OSError, ValueError) as error:
        raise InputError(f"cannot load the tokenizer {name!r} ({str(error).splitlines()[0]}); give a local model "
                         "folder") from None


def evaluation_overlap(items: pd.DataFrame, root: Path, eval_dirs: dict | None = None,
                       allow: bool = False) -> dict:
    """The training items' notes and patients checked against the evaluation sets' raw folders
    (clinical_distil.decontamination); refused in one line when some are there, unless `allow`."""
    from dataclasses import asdict

    from clinical_distil.decontamination import NGRAM, SHARE, evaluation_notes, find_leaks
    from clinical_distil.tasks import TASKS

    folders = {task: layout.resolve(folder, base=root) for task, folder in eval_dirs.items()} if eval_dirs else \
        {task: root / spec.input_dir for task, spec in TASKS.items()}
    evaluation = evaluation_notes(folders)
    training = items.drop_duplicates("note_id")
    leaks = find_leaks(training, evaluation)
    result = {"checked": {task: str(folder) for task, folder in folders.items() if Path(folder).is_dir()},
              "evaluation_notes": len(evaluation), "training_notes": len(training), "ngram": NGRAM, "share": SHARE,
              "leaks": [asdict(leak) for leak in leaks]}
    if leaks and not allow:
        first = leaks[0]
        raise InputError(f"{len(leaks)} training note(s) are in the evaluation sets (note {first.note_id}: "
                         f"{'its patient' if first.reason == 'patient' else f'{first.share:.0%} of its 13-grams'} in "
                         f"{first.task} {first.evaluation_note}); remove them from the notes, or pass "
                         "allow_eval_overlap=True to train on them anyway")
    return result


def _size_category(count: int) -> str:
    """The Hugging Face card's size_categories bucket."""
    for bound, label in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if count < bound:
            return label
    return "n>1M"


def read_stage_b_summary(raw: Path) -> dict | None:
    """Stage B's summary for the card (None where the items did not come from the stage B notebook: a table given by
    hand)."""
    path = layout.stage_b_summary_file(raw)
    return json.loads(path.read_text()) if path.exists() else None


def _card_counts(train: pd.DataFrame, test: pd.DataFrame,
                 balanced: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Both splits in one table with each example's difficulty, and their counts per question type (with a
    row "all") and per difficulty."""
    difficulty = dict(zip([f"{note}-{kind}-{index}" for note, kind, index in
                           zip(balanced["note_id"], balanced["question_type"], balanced["item_index"])],
                          balanced["difficulty"]))
    splits = pd.concat([train.assign(split="train"), test.assign(split="test")], ignore_index=True)
    splits["difficulty"] = splits["id"].map(difficulty)
    by_type = splits.groupby(["question_type", "split"]).size().unstack(fill_value=0).reindex(
        columns=["train", "test"], fill_value=0)
    by_type.loc["all"] = by_type.sum()
    by_difficulty = splits.groupby(["difficulty", "split"]).size().unstack(fill_value=0).reindex(
        columns=["train", "test"], fill_value=0)
    return splits, by_type, by_difficulty


def _teacher_lines(stage_b: dict | None) -> list[str]:
    """The card's teacher and sampling, from stage B's summary."""
    teacher = (stage_b or {}).get("teacher", {})
    sampling = teacher.get("sampling") or {}
    if not teacher:
        return ["Not recorded (stage B's stage_b.json was not found)."]
    return [f"- teacher: {teacher.get('model_id')} ({teacher.get('engine')} engine)",
            f"- questions per type and note (k): {teacher.get('questions_per_type')}; question types: "
            f"{', '.join(teacher.get('question_types') or [])}",
            f"- sampling: temperature {sampling.get('temperature')}, top_p {sampling.get('top_p')}, "
            f"at most {sampling.get('max_tokens')} tokens; structured output: {teacher.get('structured_output')}",
            f"- notes sent to the teacher and checked in stage B: {stage_b.get('notes')}; items checked: "
            f"{stage_b.get('items_checked')}, kept: {stage_b.get('items_kept')}; distinct questions: "
            f"{stage_b.get('distinct_questions')}"]


def _filter_lines(stage_b: dict | None, verified: dict | None) -> list[str]:
    """The card's stage B filters and, where one was run, the re-answer verification."""
    if stage_b and stage_b.get("filters"):
        filters = pd.DataFrame(stage_b["filters"])[["filter", "flags", "applied", "flagged", "removed"]]
        lines = [markdown_table(filters), "",
                 "Flagged: items the filter would remove; removed: those it did remove (it was applied). Off by "
                 "default, as in the paper, which filtered only by the teacher's difficulty rating."]
    else:
        lines = ["Not recorded."]
    if verified is not None:
        lines += ["", f"Re-answer verification (synthetic-b2-verify.py): the verifier gave the teacher's answer for "
                      f"{verified['agree']} of {verified['verified']} items; "
                  + (f"{verified['removed']} items it disagreed with were removed (require_verified)."
                     if verified["applied"] else "none removed (require_verified off).")]
    return lines


def _overlap_line(overlap: dict | None) -> str:
    """The card's sentence on the training notes checked against the evaluation sets."""
    if overlap is None:
        return "Not checked."
    if not overlap["checked"]:
        return "No evaluation set's raw folder was found to check against."
    return (f"The {overlap['training_notes']} training notes were checked against {overlap['evaluation_notes']} "
            f"notes of {', '.join(overlap['checked'])} (same patient, or at least {overlap['share']:.0%} "
            f"of the shorter note's {overlap['ngram']}-word sequences shared): "
            + (f"{len(overlap['leaks'])} overlap, kept as asked (allow_eval_overlap)."
               if overlap["leaks"] else "none overlap."))


# the card's closing sections, the same for every training set
_CARD_LIMITS = [
    "## Known limits", "",
    "- The answers are the teacher's, not checked by a person; the paper's physicians edited 12.8% of a "
    "sample of 1,000 items. The quote check (stage B) finds whether a cited source stands in the note, "
    "not whether the answer is right.",
    "- Questions are as varied as the teacher made them: a question asked of many notes is a template "
    "(see distinct questions above).",
    "- Notes longer than the student's context are shortened inside the note at training time.", "",
    "## Protected health information", "",
    "The examples hold the full text of clinical notes. They are covered by the data-use agreement of the "
    "notes they come from (MIMIC: PhysioNet credentialed access): keep them on the machines that "
    "agreement allows, never upload them to a hub or a tracker, and share only models and aggregate "
    "figures where the agreement permits it.", ""]


def dataset_card(name: str, train: pd.DataFrame, test: pd.DataFrame, balanced: pd.DataFrame,
                 stage_b: dict | None, choices: dict, overlap: dict | None = None,
                 verified: dict | None = None) -> str:
    """A dataset card in the Hugging Face convention (YAML header, then sections): counts per question type
    and difficulty, the teacher and its sampling, stage B's filters and what each removed, stage C's
    choices, known limits and the protected-health-information notice."""
    splits, by_type, by_difficulty = _card_counts(train, test, balanced)
    lines = ["---", f"pretty_name: Synthetic clinical question-answer pairs ({name})", "language:", "- en",
             "task_categories:", "- question-answering", "size_categories:", f"- {_size_category(len(splits))}",
             "tags:", "- clinical", "- synthetic", "- distillation", "license: other", "---", "",
             f"# Training set {name}", "",
             "Question/answer pairs about clinical notes written by a teacher model (stage A), parsed, checked and "
             "filtered (stage B), balanced over question types and split by patient (stage C), for fine-tuning a "
             "student to answer questions about notes (synthetic data distillation, Woo et al.). Each example is "
             "the answer prompt (the note and the question) and the teacher's item as a JSON target.", "",
             "## Counts", "",
             f"{len(train)} training and {len(test)} test examples from {splits['note_id'].nunique()} notes of "
             f"{splits['subject_id'].nunique()} patients; no patient is on both sides"
             + ("" if choices.get("grouped_split", True) else " (except: this set was split by example)") + ".", "",
             markdown_table(by_type.reset_index().rename(columns={"question_type": "question type"})), "",
             "Per teacher-rated difficulty (1-10):", "",
             markdown_table(by_difficulty.reset_index()), "",
             "## Teacher and sampling", "",
             *_teacher_lines(stage_b),
             "", "## Filters (stage B)", "",
             *_filter_lines(stage_b, verified),
             "", "## Evaluation overlap", "",
             _overlap_line(overlap),
             "", "## Stage C choices", "",
             *[f"- {key}: {value}" for key, value in choices.items()], "",
             *_CARD_LIMITS]
    return "\n".join(lines)


def check_target(output_dir: Path, name: str, overwrite: bool = False) -> None:
    """Refuse, before any work, to replace a training set unless asked."""
    for split_name in ("train", "test"):
        arrow_dir = layout.training_dataset(output_dir, split_name, name)
        if arrow_dir.exists() and not overwrite:
            raise InputError(f"{arrow_dir} exists; set overwrite=True (papermill: -p overwrite True) to replace "
                             "stage C's output")


def write_datasets(train: pd.DataFrame, test: pd.DataFrame, output_dir: Path, name: str,
                   overwrite: bool = False, card: str | None = None) -> dict[str, Path]:
    """`{train,test}_{name}.arrow` (datasets save_to_disk) and the same rows as csv.gz (prompt as JSON), and the
    dataset card when given; all of these files or none."""
    from datasets import Dataset

    check_target(output_dir, name, overwrite)
    splits = {"train": train, "test": test}
    targets = [path for split_name in splits for path in (layout.training_dataset(output_dir, split_name, name),
                                                          layout.training_table(output_dir, split_name, name))]
    if card is not None:
        targets.append(layout.dataset_card(output_dir, name))
    with atomic_group(targets) as staged:
        for (arrow_dir, table), frame in zip(zip(staged[:4:2], staged[1:4:2]), splits.values()):
            Dataset.from_pandas(frame, preserve_index=False).save_to_disk(str(arrow_dir))
            write_csv(frame.assign(prompt=frame["prompt"].map(json.dumps)), table)  # the chat messages as JSON
        if card is not None:
            write_text(card, staged[4])
    return {split_name: layout.training_dataset(output_dir, split_name, name) for split_name in splits}
