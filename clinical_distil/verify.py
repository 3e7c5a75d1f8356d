"""`verify` (stage B2): re-answer verification of the teacher's items: a verifier model answers each item's question on its note with
the answer prompt the students are trained on, and an item whose two answers disagree is flagged.

Answers are read as the metrics read a student's (clinical_distil.metrics.extract_answer: a reasoning
verifier's <think> block and the drafts in it are skipped; an answer cut to nothing is no answer, and agrees
with nothing, not even the teacher's NA) and compare as the metrics compare them (same_answer): Yes / No / NA
as words, numbers as numbers ("1.40 mg/dL" agrees with 1.4). Stage C joins the flag to its items and, with
require_verified, keeps only the items the verifier agrees with.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clinical_distil import layout
from clinical_distil.preprocess import prompt_text
from clinical_distil.files import InputError, read_csv
from clinical_distil.metrics import extract_answer, same_answer
from clinical_distil.prompts import PromptTemplates

KEY = ["note_id", "question_type", "item_index"]
COLUMNS = ["id", *KEY, "question", "teacher_answer", "verifier_answer", "verifier_agrees", "finish_reason",
           "verifier"]


def item_id(note_id, question_type, item_index) -> str:
    """An item's id, as stage C names its training example (training_data.format_examples)."""
    return f"{note_id}-{question_type}-{item_index}"


def read_items(raw: Path) -> pd.DataFrame:
    """Stage B's kept items with their notes."""
    return read_csv(layout.items_file(raw), required=[*KEY, "question", "answer", "text"], what="stage B items",
                    keep_default_na=False, dtype={"note_id": str},
                    hint="run synthetic-b-post_process_join_notes.ipynb first")


def prompt_table(items: pd.DataFrame, templates: PromptTemplates | None = None) -> pd.DataFrame:
    """One answer prompt per item: its note and its question."""
    return pd.DataFrame({"id": [item_id(*key) for key in zip(items["note_id"], items["question_type"],
                                                                items["item_index"])],
                         **{column: items[column].values for column in KEY},
                         "question": items["question"].values, "teacher_answer": items["answer"].values,
                         "prompt": [prompt_text(text, question, templates)
                                    for text, question in zip(items["text"], items["question"])]})


def judge(answered: pd.DataFrame, verifier: str = "") -> pd.DataFrame:
    """The verifier's answer to each item and whether it agrees with the teacher's."""
    answers = [extract_answer(output, reason) for output, reason in zip(answered["output"], answered["finish_reason"])]
    table = answered.assign(verifier_answer=[answer if answer is not None else "" for answer in answers])
    table["verifier_agrees"] = [answer is not None and same_answer(answer, teacher)
                                for answer, teacher in zip(answers, table["teacher_answer"])]
    table["verifier"] = verifier
    return table[COLUMNS]


def read_verdicts(raw: Path) -> pd.DataFrame | None:
    """verification.csv with `verifier_agrees` as booleans; None where no verification was run."""
    path = layout.verification_file(raw)
    if not path.exists():
        return None
    verified = read_csv(path, keep_default_na=False, dtype={"note_id": str})
    verified["verifier_agrees"] = verified["verifier_agrees"].astype(str).str.lower() == "true"
    return verified


def join_verification(items: pd.DataFrame, raw: Path, required: bool = False) -> pd.DataFrame:
    """Stage C's items with `verifier_agrees` where a verification was run (else unchanged; refused when the
    filter asks for one that was not run, or that misses some of the items)."""
    path = layout.verification_file(raw)
    verified = read_verdicts(raw)
    if verified is None:
        if required:
            raise InputError(f"require_verified=True but {path} does not exist; run "
                             "a-generate-synthetic-training-data/synthetic-b2-verify.py first")
        return items
    keyed = items.assign(note_id=items["note_id"].astype(str), item_index=items["item_index"].astype(int))
    verified["item_index"] = verified["item_index"].astype(int)
    joined = keyed.merge(verified[[*KEY, "verifier_answer", "verifier_agrees"]], on=KEY, how="left",
                         validate="one_to_one")
    missing = int(joined["verifier_agrees"].isna().sum())
    if missing and required:
        raise InputError(f"{path} has no verdict for {missing} of the {len(items)} items (verified before stage B "
                         "was run again?); run synthetic-b2-verify.py again with --overwrite True")
    joined["verifier_agrees"] = joined["verifier_agrees"].astype("boolean")
    return joined


def apply_verification(items: pd.DataFrame, raw: Path, required: bool = False) -> tuple[pd.DataFrame, dict | None]:
    """Stage C's items, joined to the verifier's verdicts where there are some and, when `required`, only those
    it agrees with; and what the verification found (None when none was run)."""
    joined = join_verification(items, raw, required)
    if "verifier_agrees" not in joined:
        return joined, None
    agrees = joined["verifier_agrees"].fillna(False).astype(bool)
    summary = {"verified": int(joined["verifier_agrees"].notna().sum()), "agree": int(agrees.sum()),
               "applied": required, "removed": int((~agrees).sum()) if required else 0}
    return (joined[agrees].reset_index(drop=True) if required else joined), summary
