"""Seeded generator of the bundled sample data, in the real formats, with known ground truth.

Real MIMIC, n2c2 and apixaban data sit behind data-use agreements, so the project ships
simulated stand-ins. Each simulated patient starts as a fact sheet (simulation/fact_sheets.py:
diagnoses, dated events, medications, social history, dated labs); every note is rendered from its
fact sheet (simulation/notes.py), and every label is computed from it, so the labels agree with the
text by construction and the tests can check that they do.

    python -m simulation.samples                 # rewrite data/samples (seed 2018)
    python -m simulation.samples --output_dir /tmp/s --seed 7

What is written (see write_samples):
    mimic-iii/NOTEEVENTS.csv.gz          all NOTEEVENTS columns, "[**2150-3-4**]" placeholders
    mimic-iv-note/discharge.csv.gz       MIMIC-IV-Note discharge table, "___" placeholders
    n2c2-2018-track1/{train,test}/*.xml  2-5 dated records per patient, the 13 TAGS
    apixaban/apixaban_batch_{1,2}.csv    note_id, criterion, answer, text (23 criteria per note)
    annotated-synthetic/annotated_{1,2}.csv   question, answer, difficulty, type, text, ...
    fact_sheets.json                     the ground truth behind all of the above
"""

from __future__ import annotations

import dataclasses
import json
import random
from datetime import date
from pathlib import Path

import pandas as pd

from clinical_distil.files import atomic_path, write_csv, write_text
from clinical_distil.layout import REPO_ROOT, resolve
from simulation.fact_sheets import FactSheet, annotated_questions, apixaban_answers, make_fact_sheet, make_sheets
from simulation.notes import DateStyle, render_discharge_summary, render_n2c2_xml

SAMPLES_DIR = REPO_ROOT / "data" / "samples"
DEFAULT_SEED = 2018


def _mimic_iii_rows(sheets: list[FactSheet], rng: random.Random) -> list[dict]:
    style = DateStyle("mimic-iii")
    rows: list[dict] = []

    def add(sheet: FactSheet, category: str, description: str, text: str, iserror: float | None = None,
            chartdate: str | None = None) -> None:
        chartdate = chartdate or sheet.discharge
        rows.append(dict(ROW_ID=len(rows) + 1, SUBJECT_ID=sheet.subject_id, HADM_ID=sheet.hadm_id,
                         CHARTDATE=chartdate,
                         CHARTTIME="" if category == "Discharge summary" else f"{chartdate} 08:00:00",
                         STORETIME="" if category == "Discharge summary" else f"{chartdate} 08:30:00",
                         CATEGORY=category, DESCRIPTION=description,
                         CGID="" if category == "Discharge summary" else rng.randint(14000, 21000),
                         ISERROR=iserror if iserror is not None else "", TEXT=text))

    for position, sheet in enumerate(sheets):
        add(sheet, "Nursing/other", "Report", "Nursing progress note. Pt resting comfortably. VSS. "
            "Plan per team.", chartdate=sheet.admit)
        add(sheet, "Radiology", "CHEST (PA & LAT)", "FINDINGS: No acute cardiopulmonary process.",
            chartdate=sheet.admit)
        if position == 0:
            # a discharge summary written in error: selection must skip it
            add(sheet, "Discharge summary", "Report", "This note was entered on the wrong patient.", iserror=1)
        add(sheet, "Discharge summary", "Report", render_discharge_summary(sheet, style))
        if position == 1:
            # an addendum on the same admission: one note per admission must survive selection
            add(sheet, "Discharge summary", "Addendum",
                f"Addendum:\nPatient's follow-up appointment was moved to {style(sheet.discharge)}.\n")
        if position % 5 == 2:
            add(sheet, "ECG", "Report", "Sinus rhythm. Normal ECG.", chartdate=sheet.admit)
    return rows


def _mimic_iv_rows(sheets: list[FactSheet]) -> list[dict]:
    style = DateStyle("mimic-iv")
    rows = []
    for position, sheet in enumerate(sheets):
        note_seq = 20 + position
        text = render_discharge_summary(sheet, style)
        base = dict(subject_id=sheet.subject_id, hadm_id=sheet.hadm_id, note_type="DS", note_seq=note_seq,
                    charttime=f"{sheet.discharge} 00:00:00", storetime=f"{sheet.discharge} 14:12:00")
        if position == 0:
            # an earlier draft of the same admission, stored before the final one
            rows.append(dict(base, note_id=f"{sheet.subject_id}-DS-{note_seq - 1}", note_seq=note_seq - 1,
                             storetime=f"{sheet.discharge} 09:00:00", text=text.split("Brief Hospital Course")[0]))
        rows.append(dict(base, note_id=f"{sheet.subject_id}-DS-{note_seq}", text=text))
        if position == 1:
            rows.append(dict(base, note_id=f"{sheet.subject_id}-AD-{note_seq + 1}", note_type="AD",
                             note_seq=note_seq + 1, storetime=f"{sheet.discharge} 16:00:00",
                             text="Addendum: follow-up with cardiology was arranged.\n"))
    return rows


def write_samples(output_dir: str | Path = SAMPLES_DIR, seed: int = DEFAULT_SEED, mimic_iii_patients: int = 32,
                  mimic_iv_patients: int = 24, n2c2_train: int = 12, n2c2_test: int = 6,
                  apixaban_notes: int = 8, annotated_notes: int = 12) -> dict[str, int]:
    """Write every sample file under `output_dir`; the same seed always gives the same bytes."""
    rng = random.Random(seed)
    output_dir = Path(output_dir)
    mimic_iii = make_sheets(rng, mimic_iii_patients, 10_001, 100_001, 2110)
    # one patient with two admissions, so that selection by admission (not subject) is exercised
    second_admission = make_fact_sheet(rng, mimic_iii[3].subject_id, 199_999, date(2179, 5, 2))
    mimic_iii.append(second_admission)
    mimic_iv = make_sheets(rng, mimic_iv_patients, 20_000_001, 20_100_001, 2130)
    n2c2 = make_sheets(rng, n2c2_train + n2c2_test, 1, 1, 2060)
    annotated = make_sheets(rng, annotated_notes, 30_001, 300_001, 2120)

    frame = pd.DataFrame(_mimic_iii_rows(mimic_iii, rng))
    write_csv(frame, output_dir / "mimic-iii" / "NOTEEVENTS.csv.gz")
    mimic_iv_columns = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime", "storetime", "text"]
    write_csv(pd.DataFrame(_mimic_iv_rows(mimic_iv))[mimic_iv_columns], output_dir / "mimic-iv-note" / "discharge.csv.gz")

    n2c2_files = {}
    for index, sheet in enumerate(n2c2):
        split = "train" if index < n2c2_train else "test"
        xml, labels = render_n2c2_xml(sheet, rng)
        name = f"{100 + index * 3:03d}.xml"
        write_text(xml, output_dir / "n2c2-2018-track1" / split / name)
        n2c2_files[name] = dict(split=split, subject_id=sheet.subject_id, labels=labels)

    # apixaban: MIMIC-IV notes, 23 criteria each, in two annotation batches as real folders hold them
    style = DateStyle("mimic-iv")
    apixaban_rows = []
    apixaban_sheets = mimic_iv[-apixaban_notes:]
    for sheet in apixaban_sheets:
        text = render_discharge_summary(sheet, style)
        note_id = f"{sheet.subject_id}-DS-{20 + mimic_iv.index(sheet)}"
        for criterion, answer in apixaban_answers(sheet).items():
            apixaban_rows.append(dict(note_id=note_id, criterion=criterion, answer=answer, text=text))
    apixaban = pd.DataFrame(apixaban_rows)
    half = len(apixaban_sheets) // 2 * 23
    write_csv(apixaban.iloc[:half], output_dir / "apixaban" / "apixaban_batch_1.csv")
    write_csv(apixaban.iloc[half:], output_dir / "apixaban" / "apixaban_batch_2.csv")

    annotated_rows = []
    iii_style = DateStyle("mimic-iii")
    for index, sheet in enumerate(annotated):
        text = render_discharge_summary(sheet, iii_style)
        for row in annotated_questions(sheet, rng):
            annotated_rows.append(dict(subject_id=sheet.subject_id, hadm_id=sheet.hadm_id,
                                       note_id=5_000_000 + index, **row, text=text))
    annotated_frame = pd.DataFrame(annotated_rows)
    half = len(annotated_frame) // 2
    write_csv(annotated_frame.iloc[:half], output_dir / "annotated-synthetic" / "annotated_1.csv")
    write_csv(annotated_frame.iloc[half:], output_dir / "annotated-synthetic" / "annotated_2.csv")

    facts = {
        "seed": seed,
        "mimic_iii": [dataclasses.asdict(sheet) for sheet in mimic_iii],
        "mimic_iv": [dataclasses.asdict(sheet) for sheet in mimic_iv],
        "n2c2": {name: dict(info, facts=dataclasses.asdict(sheet))
                 for (name, info), sheet in zip(n2c2_files.items(), n2c2)},
        "annotated": [dataclasses.asdict(sheet) for sheet in annotated],
    }
    with atomic_path(output_dir / "fact_sheets.json") as temp_path:
        temp_path.write_text(json.dumps(facts, indent=1, sort_keys=True) + "\n")
    return {"mimic_iii_notes": len(frame), "mimic_iv_notes": len(mimic_iv), "n2c2_files": len(n2c2_files),
            "apixaban_rows": len(apixaban), "annotated_rows": len(annotated_frame)}


def main(output_dir: str = str(SAMPLES_DIR), seed: int = DEFAULT_SEED) -> None:
    """Regenerate the bundled sample data (deterministic for a seed)."""
    counts = write_samples(resolve(output_dir), seed=seed)
    for name, count in counts.items():
        print(f"{name}: {count}")


if __name__ == "__main__":
    from clinical_distil.cli import run

    run(main)
