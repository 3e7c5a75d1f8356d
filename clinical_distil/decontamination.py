"""Evaluation leakage: training notes and patients that are also in the evaluation sets.

Two checks, made by stage C before it writes a training set:
- patients: subject ids that a training note and an evaluation set share (where the evaluation set has them);
- text: a training note and an evaluation note that share at least 60% of the word 13-grams of the shorter
  of the two (13 words, as in the decontamination of GPT-3's evaluation sets). A copy shares 100%, an
  excerpt of either in the other nearly so, a copy with one word in 40 changed 72%; unrelated notes written
  from one set of templates (the bundled simulated samples) share at most 45%, the known-answer corpus's
  varied notes at most 19%, so boilerplate such as discharge instructions does not count as a leak.
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from clinical_distil import n2c2
from clinical_distil.files import read_csv

NGRAM = 13
SHARE = 0.6
WORD = re.compile(r"\w+")


def shingles(text: str, size: int = NGRAM) -> set[int]:
    """The hashes of a text's word n-grams (lowercased); a text shorter than n words is one n-gram."""
    words = WORD.findall(text.lower())
    if len(words) < size:
        return {hash(tuple(words))} if words else set()
    return {hash(tuple(words[index:index + size])) for index in range(len(words) - size + 1)}


def evaluation_notes(folders: dict[str, Path]) -> pd.DataFrame:
    """The notes of evaluation sets' raw folders: n2c2 XML files (a patient's records together) and CSV files
    with a text column (subject_id kept where there is one), as `task, note, subject_id, text`."""
    rows = []
    for task, folder in folders.items():
        folder = Path(folder)
        if not folder.is_dir():
            continue
        for path in sorted(folder.rglob("*.xml")):
            patient = n2c2.read_patient_file(path)
            rows.append({"task": task, "note": str(path.relative_to(folder)), "subject_id": None,
                         "text": patient.text})
        for path in sorted(folder.rglob("*.csv")) + sorted(folder.rglob("*.csv.gz")):
            frame = read_csv(path, keep_default_na=False, dtype=str)
            if "text" not in frame.columns:
                continue
            subjects = frame["subject_id"] if "subject_id" in frame.columns else pd.Series([None] * len(frame))
            for index, (text, subject) in enumerate(zip(frame["text"], subjects)):
                rows.append({"task": task, "note": f"{path.relative_to(folder)}:{index}",
                             "subject_id": subject or None, "text": text})
    frame = pd.DataFrame(rows, columns=["task", "note", "subject_id", "text"])
    return frame.drop_duplicates(subset=["task", "text"]).reset_index(drop=True)


@dataclass(frozen=True)
class Leak:
    note_id: str
    subject_id: str
    reason: str  # "patient" or "text"
    task: str
    evaluation_note: str
    share: float  # of the shorter note's 13-grams the two share (text); 1.0 for a patient


def find_leaks(training: pd.DataFrame, evaluation: pd.DataFrame, share: float = SHARE) -> list[Leak]:
    """Training notes (`note_id, subject_id, text`, one row per note) that are in the evaluation notes: by
    patient, or by the share of 13-grams they have in common with one evaluation note."""
    leaks: list[Leak] = []
    if evaluation.empty or training.empty:
        return leaks
    by_subject = {str(subject): row for row in evaluation.to_dict("records")
                  if (subject := row["subject_id"]) not in (None, "")}
    holders: dict[int, list[int]] = {}  # an n-gram -> the evaluation notes holding it
    sizes = []
    for index, text in enumerate(evaluation["text"]):
        grams = shingles(text)
        sizes.append(len(grams))
        for gram in grams:
            holders.setdefault(gram, []).append(index)
    for note in training.drop_duplicates("note_id").to_dict("records"):
        subject = str(note.get("subject_id", ""))
        if subject in by_subject:
            match = by_subject[subject]
            leaks.append(Leak(str(note["note_id"]), subject, "patient", match["task"], match["note"], 1.0))
            continue
        grams = shingles(str(note["text"]))
        common = Counter(index for gram in grams for index in holders.get(gram, ()))
        if not common:
            continue
        best, shared = max(common.items(), key=lambda item: item[1] / max(1, min(len(grams), sizes[item[0]])))
        fraction = shared / max(1, min(len(grams), sizes[best]))
        if fraction >= share:
            leaks.append(Leak(str(note["note_id"]), subject, "text", evaluation.loc[best, "task"],
                              evaluation.loc[best, "note"], round(fraction, 3)))
    return leaks
