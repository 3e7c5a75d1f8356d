"""The known-answer corpus: simulated patients at scale, their notes, their truth, held-out test sets.

    python -m simulation.corpus --output_dir data/known-answer --patients 2000 --seed 7

writes, under `output_dir` (a data root the pipeline reads as it reads real data):
    mimic/NOTEEVENTS.csv.gz          MIMIC-III NOTEEVENTS: a varied discharge summary per admission,
                                     nursing, radiology and ECG notes around it (stage 0 selects from it)
    mimic/facts.jsonl.gz             per admission: the fact sheet and every fact's wording in its note
                                     (what the reference teacher and the truth checks read)
    raw/annotated-synthetic/*.csv    held-out patients: checked questions of the four types
    raw/n2c2-2018-track1/{train,test}/*.xml   held-out patients: longitudinal records, the 13 TAGS
    raw/apixaban/*.csv               held-out patients: MIMIC-IV-style notes, the 23 criteria
    corpus.json                      counts, seed, the held-out subject ids
The held-out patients never appear in NOTEEVENTS (their subject ids are disjoint), so a student is
scored on notes neither it nor its teacher saw. The same arguments always give the same bytes.
"""

from __future__ import annotations

import dataclasses
import gzip
import io
import json
import random
from pathlib import Path

import pandas as pd

from clinical_distil import layout
from clinical_distil.files import InputError, atomic_path, write_csv, write_text
from clinical_distil.layout import resolve
from simulation.fact_sheets import FactSheet, load_fact_sheet, make_sheets
from simulation.held_out_sets import split_seed, write_held_out_sets
from simulation.notes import DateStyle
from simulation.varied import RenderedNote, render_varied_discharge_summary

CORPUS_FILE = "corpus.json"
RAW_DIR = "raw"  # the evaluation tasks' raw data, under the corpus root

NURSING = ["Pt resting comfortably overnight. VSS. Plan per team.", "Pt ambulating in hall with PT. Tolerating diet.",
           "Pt anxious overnight, reassured. Pain controlled with acetaminophen.",
           "Foley removed, voiding without difficulty. Skin intact."]
RADIOLOGY = ["CHEST (PA & LAT): No acute cardiopulmonary process.",
             "CHEST (PORTABLE AP): Mild pulmonary vascular congestion. No focal consolidation.",
             "CT HEAD W/O CONTRAST: No acute intracranial hemorrhage.",
             "CT ABD & PELVIS WITH CONTRAST: No acute process in the abdomen or pelvis."]
ECG = ["Sinus rhythm. Normal ECG.", "Sinus tachycardia. Nonspecific ST-T wave changes.",
       "Atrial fibrillation with rapid ventricular response.", "Sinus bradycardia. Left axis deviation."]


def _note_rows(sheets: list[FactSheet], rng: random.Random) -> tuple[list[dict], list[dict]]:
    """NOTEEVENTS rows (a varied discharge summary per admission, other notes around it) and the truth."""
    style = DateStyle("mimic-iii")
    rows: list[dict] = []
    facts: list[dict] = []

    def add(sheet: FactSheet, category: str, description: str, text: str, chartdate: str) -> int:
        discharge = category == "Discharge summary"
        rows.append(dict(ROW_ID=len(rows) + 1, SUBJECT_ID=sheet.subject_id, HADM_ID=sheet.hadm_id, CHARTDATE=chartdate,
                         CHARTTIME="" if discharge else f"{chartdate} 08:00:00",
                         STORETIME="" if discharge else f"{chartdate} 08:30:00", CATEGORY=category,
                         DESCRIPTION=description, CGID="" if discharge else rng.randint(14000, 21000), ISERROR="",
                         TEXT=text))
        return len(rows)

    for sheet in sheets:
        add(sheet, "Nursing/other", "Report", rng.choice(NURSING), sheet.admit)
        add(sheet, "Radiology", rng.choice(RADIOLOGY).split(":")[0], rng.choice(RADIOLOGY), sheet.admit)
        if rng.random() < 0.4:
            add(sheet, "ECG", "Report", rng.choice(ECG[2:3] if sheet.conditions["afib"] else ECG[:2] + ECG[3:]),
                sheet.admit)
        note = render_varied_discharge_summary(sheet, style, rng)
        row_id = add(sheet, "Discharge summary", "Report", note.text, sheet.discharge)
        facts.append(fact_record(sheet, note, row_id))
    return rows, facts


def fact_record(sheet: FactSheet, note: RenderedNote, note_id: int | str) -> dict:
    return {"hadm_id": sheet.hadm_id, "subject_id": sheet.subject_id, "note_id": note_id,
            "sheet": dataclasses.asdict(sheet), "mentions": [dataclasses.asdict(mention) for mention in note.mentions]}


def write_jsonl_gz(records: list[dict], target: Path) -> Path:
    with atomic_path(target) as temp_path, open(temp_path, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
            io.TextIOWrapper(packed, encoding="utf-8") as text:
        for record in records:
            text.write(json.dumps(record, sort_keys=True) + "\n")
    return target


def read_facts(path: str | Path) -> dict[int, dict]:
    """hadm_id -> {"sheet": FactSheet, "mentions": [...], "note_id", "subject_id"} from a facts.jsonl.gz."""
    from simulation.varied import Mention

    found = {}
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        for line in lines:
            record = json.loads(line)
            record["sheet"] = load_fact_sheet(record["sheet"])
            record["mentions"] = [Mention(**mention) for mention in record["mentions"]]
            found[int(record["hadm_id"])] = record
    return found


def write_corpus(output_dir: str | Path, patients: int = 2000, seed: int = 7, annotated_notes: int = 150,
                 n2c2_train: int = 20, n2c2_test: int = 60, apixaban_notes: int = 40, split: str = "dev") -> dict:
    """Write the corpus (see the module's docstring; `split`: the held-out patients' split, dev or final);
    returns what corpus.json holds."""
    output_dir = Path(output_dir)
    split_seed(split)  # an unknown split stops before anything is written
    rng = random.Random(seed)
    training = make_sheets(rng, patients, 40_001, 400_001, 2100)
    rows, facts = _note_rows(training, rng)
    write_csv(pd.DataFrame(rows), layout.corpus_notes(output_dir))
    write_jsonl_gz(facts, layout.facts_file(layout.corpus_notes(output_dir)))

    held_out = write_held_out_sets(output_dir / RAW_DIR, split, annotated_notes, n2c2_train, n2c2_test,
                                   apixaban_notes)

    summary = {
        "seed": seed, "patients": patients, "notes": len(rows), "discharge_summaries": len(facts),
        "annotated_questions": held_out["annotated_questions"], "annotated_notes": annotated_notes,
        "n2c2_patients": {"train": n2c2_train, "test": n2c2_test}, "apixaban_notes": apixaban_notes,
        "apixaban_rows": held_out["apixaban_rows"], "split": split, "held_out_renderer": held_out["held_out_renderer"],
        "held_out_subject_ids": held_out["held_out_subject_ids"],
        "eval_input_dirs": {"annotated-synthetic": f"{RAW_DIR}/annotated-synthetic",
                            "i2b2": f"{RAW_DIR}/n2c2-2018-track1", "apixaban": f"{RAW_DIR}/apixaban"},
    }
    summary["leakage"] = held_out_leakage(pd.DataFrame(rows), output_dir, summary["eval_input_dirs"])
    write_text(json.dumps(summary, indent=1) + "\n", output_dir / CORPUS_FILE)
    return summary


def held_out_leakage(rows: pd.DataFrame, output_dir: Path, eval_dirs: dict[str, str]) -> dict:
    """Stage C's leakage check (prep_training.evaluation_overlap) of every training discharge summary against the
    held-out sets; its report is kept as raw/held-out/leakage.json, its counts returned for corpus.json."""
    from clinical_distil.prep_training import evaluation_overlap

    discharge = rows[rows["CATEGORY"] == "Discharge summary"]
    training = pd.DataFrame({"note_id": discharge["ROW_ID"].astype(str), "subject_id": discharge["SUBJECT_ID"],
                             "text": discharge["TEXT"]})
    report = evaluation_overlap(training, output_dir, eval_dirs, allow=True)
    report["checked"] = {task: eval_dirs[task] for task in report["checked"]}  # relative: the corpus may move
    write_text(json.dumps(report, indent=1) + "\n", output_dir / RAW_DIR / "held-out" / "leakage.json")
    return {"training_notes": report["training_notes"], "evaluation_notes": report["evaluation_notes"],
            "leaks": len(report["leaks"])}


def main(output_dir: str = "data/known-answer", patients: int = 2000, seed: int = 7, annotated_notes: int = 150,
         n2c2_train: int = 20, n2c2_test: int = 60, apixaban_notes: int = 40, split: str = "dev",
         overwrite: bool = False) -> None:
    """Write the known-answer corpus (deterministic for its arguments); an existing one only with --overwrite."""
    for name, value, least in (("patients", patients, 1), ("annotated_notes", annotated_notes, 1),
                               ("n2c2_train", n2c2_train, 0), ("n2c2_test", n2c2_test, 1),
                               ("apixaban_notes", apixaban_notes, 1)):
        if value < least:
            raise InputError(f"--{name} must be at least {least}, got {value}")
    if (resolve(output_dir) / CORPUS_FILE).exists() and not overwrite:
        raise InputError(f"{resolve(output_dir)} already holds a corpus; pass --overwrite True to write it again")
    summary = write_corpus(resolve(output_dir), patients=patients, seed=seed, annotated_notes=annotated_notes,
                           n2c2_train=n2c2_train, n2c2_test=n2c2_test, apixaban_notes=apixaban_notes, split=split)
    print(f"{summary['discharge_summaries']} discharge summaries ({summary['notes']} notes) for the teacher; held out "
          f"({split} split): "
          f"{summary['annotated_questions']} annotated questions, {n2c2_test} n2c2 test patients, "
          f"{summary['apixaban_rows']} apixaban rows -> {resolve(output_dir)}")


if __name__ == "__main__":
    from clinical_distil.cli import run

    run(main)
