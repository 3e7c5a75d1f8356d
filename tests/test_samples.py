"""The bundled sample generator: deterministic, parseable, and labels that agree with the facts."""

import filecmp
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from clinical_distil import n2c2
from clinical_distil.samples import apixaban_answers, load_fact_sheet, n2c2_labels, write_samples
from clinical_distil.tasks import APIXABAN_BOOLEAN, APIXABAN_NUMERIC, N2C2_CRITERIA

from conftest import SAMPLES


def _files(root: Path) -> list[Path]:
    return sorted(path.relative_to(root) for path in root.rglob("*") if path.is_file())


@pytest.fixture(scope="module")
def facts() -> dict:
    return json.loads((SAMPLES / "fact_sheets.json").read_text())


def test_same_seed_same_bytes_and_committed_samples_are_current(tmp_path):
    first, second = tmp_path / "a", tmp_path / "b"
    write_samples(first, seed=2018)
    write_samples(second, seed=2018)
    assert _files(first) == _files(second) == _files(SAMPLES)
    for name in _files(first):
        assert filecmp.cmp(first / name, second / name, shallow=False), name
        # the committed samples are exactly what the generator writes (regenerate after changing it)
        assert filecmp.cmp(first / name, SAMPLES / name, shallow=False), name


def test_other_seed_gives_other_notes(tmp_path):
    write_samples(tmp_path, seed=7)
    other = pd.read_csv(tmp_path / "mimic-iii" / "NOTEEVENTS.csv.gz")
    bundled = pd.read_csv(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz")
    assert other["TEXT"].tolist() != bundled["TEXT"].tolist()


def test_samples_stay_small():
    total = sum((SAMPLES / name).stat().st_size for name in _files(SAMPLES))
    assert total < 3 * 2**20


def test_mimic_iii_has_every_column_and_the_selection_traps():
    notes = pd.read_csv(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz")
    assert list(notes.columns) == ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CHARTTIME", "STORETIME",
                                   "CATEGORY", "DESCRIPTION", "CGID", "ISERROR", "TEXT"]
    summaries = notes[notes["CATEGORY"] == "Discharge summary"]
    assert (notes["CATEGORY"] != "Discharge summary").sum() > 0
    assert (summaries["ISERROR"] == 1).sum() == 1
    assert (summaries["DESCRIPTION"] == "Addendum").sum() == 1
    assert summaries.groupby("HADM_ID").size().max() >= 2
    report = summaries[summaries["DESCRIPTION"] == "Report"]["TEXT"].iloc[1]
    for section in ("Chief Complaint:", "History of Present Illness:", "Past Medical History:", "Social History:",
                    "Family History:", "Physical Exam:", "Pertinent Results:", "Brief Hospital Course:",
                    "Discharge Medications:", "Discharge Disposition:", "Discharge Diagnosis:",
                    "Discharge Condition:", "Discharge Instructions:"):
        assert section in report
    assert re.search(r"\[\*\*\d{4}-\d{1,2}-\d{1,2}\*\*\] 06:40AM BLOOD .*Creat-\d", report)


def test_mimic_iv_uses_masked_placeholders():
    notes = pd.read_csv(SAMPLES / "mimic-iv-note" / "discharge.csv.gz")
    assert list(notes.columns) == ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "charttime",
                                   "storetime", "text"]
    text = notes["text"].iloc[5]
    assert "Admission Date:  ___" in text and "[**" not in text
    assert set(notes["note_type"]) == {"DS", "AD"}


def test_n2c2_files_parse_and_labels_agree_with_fact_sheets(facts):
    for split, expected in (("train", 12), ("test", 6)):
        patients = n2c2.read_folder(SAMPLES / "n2c2-2018-track1" / split)
        assert len(patients) == expected
        for patient in patients:
            info = facts["n2c2"][f"{patient.patient}.xml"]
            assert info["split"] == split
            assert list(patient.tags) == list(N2C2_CRITERIA)
            assert patient.tags == n2c2_labels(load_fact_sheet(info["facts"])) == info["labels"]
            assert 2 <= len(patient.records) <= 5
            assert len(patient.record_dates) == len(patient.records)
            assert patient.record_dates == sorted(patient.record_dates)


def test_n2c2_thresholded_labels_follow_the_values_in_the_text():
    """CREATININE and HBA1C must be decidable from the text alone, as a reader would."""
    seen = {"CREATININE": set(), "HBA1C": set()}
    for patient in n2c2.read_folder(SAMPLES / "n2c2-2018-track1" / "train"):
        creatinine = [float(value) for value in re.findall(r"Creat (\d+\.\d+)", patient.text)]
        hba1c = [float(value) for value in re.findall(r"HbA1c (\d+\.\d+)", patient.text)]
        assert patient.tags["CREATININE"] == (bool(creatinine) and max(creatinine) > 1.3)
        assert patient.tags["HBA1C"] == (bool(hba1c) and 6.5 <= max(hba1c) <= 9.5)
        seen["CREATININE"].add(patient.tags["CREATININE"])
        seen["HBA1C"].add(patient.tags["HBA1C"])
    assert seen == {"CREATININE": {True, False}, "HBA1C": {True, False}}  # both classes occur


def test_n2c2_labels_cover_both_classes_for_most_criteria():
    tags = [patient.tags for split in ("train", "test")
            for patient in n2c2.read_folder(SAMPLES / "n2c2-2018-track1" / split)]
    both = [name for name in N2C2_CRITERIA if {tag[name] for tag in tags} == {True, False}]
    assert len(both) >= 10


def test_apixaban_rows_cover_23_criteria_with_answers_from_the_text(facts):
    frame = pd.concat([pd.read_csv(path, dtype={"answer": str}, keep_default_na=False)
                       for path in sorted((SAMPLES / "apixaban").glob("*.csv"))])
    assert {"criterion", "answer", "text", "note_id"} <= set(frame.columns)
    assert len(APIXABAN_BOOLEAN) == 15 and len(APIXABAN_NUMERIC) == 8
    for note_id, rows in frame.groupby("note_id"):
        assert sorted(rows["criterion"]) == sorted(APIXABAN_BOOLEAN + APIXABAN_NUMERIC)
        answers = dict(zip(rows["criterion"], rows["answer"]))
        text = rows["text"].iloc[0]
        assert {answers[name] for name in APIXABAN_BOOLEAN} <= {"Yes", "No"}
        for name in ("lowest_platelets", "highest_creatinine", "lowest_hemoglobin", "highest_glucose"):
            assert re.search(rf"-{re.escape(answers[name])}(\.0)?\b", text), (note_id, name)
        if answers["highest_ast"] == "NA":
            assert "AST-" not in text
        if answers["lowest_lvef"] == "NA":
            assert "LVEF" not in text
        elif answers["lowest_lvef"] == "55":
            assert "LVEF >55%" in text
        sheet = next(load_fact_sheet(record) for record in facts["mimic_iv"]
                     if note_id.startswith(f"{record['subject_id']}-"))
        assert answers == apixaban_answers(sheet)
    assert "NA" in set(frame["answer"])


def test_annotated_synthetic_has_the_four_types():
    frame = pd.concat([pd.read_csv(path, keep_default_na=False)
                       for path in sorted((SAMPLES / "annotated-synthetic").glob("*.csv"))])
    assert {"question", "answer", "difficulty", "type", "text"} <= set(frame.columns)
    assert set(frame["type"]) == {"yes", "na-bool", "numeric", "na-numeric"}
    assert set(frame.loc[frame["type"] == "yes", "answer"]) <= {"Yes", "No"}
    assert set(frame.loc[frame["type"].str.startswith("na-"), "answer"]) == {"N/A"}
    numeric = frame[frame["type"] == "numeric"]
    for answer, text in zip(numeric["answer"], numeric["text"]):
        assert re.search(rf"-{re.escape(str(answer))}\b", text)
    assert frame["difficulty"].between(1, 10).all()
