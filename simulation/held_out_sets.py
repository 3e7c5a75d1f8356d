"""The known-answer corpus's held-out evaluation sets: patients of a split, their notes by the held-out renderer.

Each split (simulation/held_out_splits.json: dev for developing, final for the analysis plan's runs) draws
its own patients from its own seed, with subject and admission ids of its own, apart from the training
patients' whatever the corpus's seed. Their notes come from simulation/held_out.py, a renderer written apart
from the training notes' (other sections, wording and vocabulary), and the annotated questions from
simulation/held_out_questions.py (worded apart from the teachers').
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pandas as pd

from clinical_distil.files import InputError, write_csv, write_text
from simulation.fact_sheets import FactSheet, apixaban_answers, make_sheets
from simulation.held_out import render_held_out_discharge, render_held_out_n2c2
from simulation.held_out_questions import held_out_questions

SPLITS_FILE = Path(__file__).resolve().parent / "held_out_splits.json"


def split_seed(split: str) -> tuple[int, int]:
    """The split's seed and id offset, refused in one line when the split is not in SPLITS_FILE."""
    splits = {name: value for name, value in json.loads(SPLITS_FILE.read_text()).items() if name != "about"}
    if split not in splits:
        raise InputError(f"--split {split!r} is not a held-out split; choose {' or '.join(splits)}")
    return int(splits[split]["seed"]), int(splits[split]["id_offset"])


def _sheets(rng: random.Random, count: int, subject: int, hadm: int, year: int, offset: int) -> list[FactSheet]:
    return make_sheets(rng, count, subject + offset, hadm + 10 * offset, year)


def _annotated(sheets: list[FactSheet], rng: random.Random) -> tuple[pd.DataFrame, list[dict]]:
    rows, facts = [], []
    for index, sheet in enumerate(sheets):
        note = render_held_out_discharge(sheet, rng)
        note_id = 8_000_000 + index
        facts.append({"hadm_id": sheet.hadm_id, "subject_id": sheet.subject_id, "note_id": note_id,
                      "stated": note.stated})
        rows += [dict(subject_id=sheet.subject_id, hadm_id=sheet.hadm_id, note_id=note_id, **row, text=note.text)
                 for row in held_out_questions(sheet, rng)]
    return pd.DataFrame(rows), facts


def write_held_out_sets(raw: Path, split: str, annotated_notes: int, n2c2_train: int, n2c2_test: int,
                        apixaban_notes: int) -> dict:
    """The three evaluation sets of a split under `raw` (annotated-synthetic/, n2c2-2018-track1/, apixaban/)
    and what corpus.json says of them."""
    seed, offset = split_seed(split)
    rng = random.Random(seed)
    annotated = _sheets(rng, annotated_notes, 900_001, 9_000_001, 2120, offset)
    annotated_frame, facts = _annotated(annotated, rng)
    half = len(annotated_frame) // 2
    write_csv(annotated_frame.iloc[:half], raw / "annotated-synthetic" / "annotated_1.csv")
    write_csv(annotated_frame.iloc[half:], raw / "annotated-synthetic" / "annotated_2.csv")

    n2c2 = _sheets(rng, n2c2_train + n2c2_test, 950_001, 9_500_001, 2060, offset)
    for index, sheet in enumerate(n2c2):  # files numbered from 100, as the real ones
        xml, _ = render_held_out_n2c2(sheet, rng)
        write_text(xml, raw / "n2c2-2018-track1" / ("train" if index < n2c2_train else "test") / f"{100 + index}.xml")

    apixaban = _sheets(rng, apixaban_notes, 980_001, 9_800_001, 2130, offset)
    apixaban_rows = []
    for index, sheet in enumerate(apixaban):
        note = render_held_out_discharge(sheet, rng)
        note_id = f"{sheet.subject_id}-DS-{index + 1}"
        facts.append({"hadm_id": sheet.hadm_id, "subject_id": sheet.subject_id, "note_id": note_id,
                      "stated": note.stated})
        apixaban_rows += [dict(note_id=note_id, criterion=criterion, answer=answer, text=note.text)
                          for criterion, answer in apixaban_answers(sheet).items()]
    apixaban_frame = pd.DataFrame(apixaban_rows)
    criteria = len(apixaban_rows) // max(1, len(apixaban))
    write_csv(apixaban_frame.iloc[:len(apixaban) // 2 * criteria], raw / "apixaban" / "apixaban_batch_1.csv")
    write_csv(apixaban_frame.iloc[len(apixaban) // 2 * criteria:], raw / "apixaban" / "apixaban_batch_2.csv")
    write_text("".join(json.dumps(record) + "\n" for record in facts), raw / "held-out" / "stated.jsonl")
    return {"split": split, "held_out_renderer": "simulation/held_out.py",
            "annotated_questions": len(annotated_frame), "apixaban_rows": len(apixaban_frame),
            "held_out_subject_ids": sorted({sheet.subject_id for sheet in annotated + n2c2 + apixaban})}
