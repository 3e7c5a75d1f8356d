"""The bundled sample generator: deterministic, parseable, and labels that agree with the facts."""

import filecmp
import json
import re
from pathlib import Path

import pandas as pd
import pytest

from clinical_distil import n2c2
from simulation.samples import write_samples
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


# --- reading the labels back from the text alone, as an annotator would (not from the fact sheets) ---

def _days(ago: str) -> int:
    """Days behind a phrase the notes use: "last week", "during this admission", "3 weeks/months/years ago"."""
    if ago in ("last week", "during this admission"):
        return 7
    number, unit = re.fullmatch(r"(\d+) (week|month|year)s? ago", ago).groups()
    return int(number) * {"week": 7, "month": 30, "year": 365}[unit]


def _event_days(text: str, pattern: str) -> list[int]:
    ago = r"(last week|during this admission|\d+ (?:weeks|months|years) ago)"
    return [_days(match) for match in re.findall(pattern.format(ago=ago), text)]


CV_MEDICATIONS = ("metoprolol succinate", "lisinopril", "atorvastatin", "isosorbide mononitrate", "amlodipine")
SUPPLEMENTS = ("fish oil", "vitamin D3", "multivitamin", "calcium carbonate", "magnesium oxide")


def n2c2_labels_from_text(text: str) -> dict[str, bool]:
    """The 13 criteria read from an n2c2 patient file's text, with the challenge's definitions."""
    medications = "\n".join(re.findall(r"Medications:\n((?:  .*\n)+)", text))
    man = " yo man " in text
    drinks = [int(value) for value in re.findall(r"Drinks about (\d+) alcoholic beverages per week", text)]
    creatinine = [float(value) for value in re.findall(r"Creat (\d+\.\d+)", text)]
    hba1c = [float(value) for value in re.findall(r"HbA1c (\d+\.\d+)", text)]
    mi_days = _event_days(text, r"Admitted {ago} with an NSTEMI")
    cad = [sum(name in medications for name in CV_MEDICATIONS) >= 2, bool(mi_days) or "NSTEMI" in text,
           "stable angina" in text, "reversible inferior ischemia" in text]
    return {
        "ABDOMINAL": bool(re.search(r"S/p (partial colectomy|small bowel resection|cholecystectomy|exploratory "
                                    r"laparotomy)", text)),
        "ADVANCED-CAD": sum(cad) >= 2,
        "ALCOHOL-ABUSE": bool(drinks) and max(drinks) > (14 if man else 7),
        "ASP-FOR-MI": "aspirin" in medications,
        "CREATININE": bool(creatinine) and max(creatinine) > 1.3,
        "DIETSUPP-2MOS": any(name in medications for name in SUPPLEMENTS),
        "DRUG-ABUSE": bool(re.search(r"History of [\w ]+ use", text)),
        "ENGLISH": "Speaks English" in text,
        "HBA1C": bool(hba1c) and 6.5 <= max(hba1c) <= 9.5,
        "KETO-1YR": any(days <= 365 for days in _event_days(text, r"Hospitalized {ago} for diabetic ketoacidosis")),
        "MAJOR-DIABETES": "Type 2 diabetes mellitus, complicated by" in text,
        "MAKES-DECISIONS": "makes medical decisions for the patient" not in text,
        "MI-6MOS": any(days <= 183 for days in mi_days),
    }


def test_n2c2_files_parse_and_labels_follow_the_text(facts):
    seen = {criterion: set() for criterion in N2C2_CRITERIA}
    for split, expected in (("train", 12), ("test", 6)):
        patients = n2c2.read_folder(SAMPLES / "n2c2-2018-track1" / split)
        assert len(patients) == expected
        for patient in patients:
            assert facts["n2c2"][f"{patient.patient}.xml"]["split"] == split
            assert list(patient.tags) == list(N2C2_CRITERIA)
            assert patient.tags == n2c2_labels_from_text(patient.text), patient.patient
            assert 2 <= len(patient.records) <= 5
            assert len(patient.record_dates) == len(patient.records)
            assert patient.record_dates == sorted(patient.record_dates)
            for criterion, met in patient.tags.items():
                seen[criterion].add(met)
    assert sum(values == {True, False} for values in seen.values()) >= 10  # most criteria have both classes


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


def apixaban_answers_from_text(text: str) -> dict[str, str]:
    """The 23 apixaban criteria read from a discharge summary's text, with the criteria's definitions."""
    history = text.split("Past Medical History:")[1].split("Social History:")[0]
    diagnosis = text.split("Discharge Diagnosis:")[1].split("Discharge Condition:")[0]

    def yes(flag: bool) -> str:
        return "Yes" if flag else "No"

    def lab(label: str, pick) -> str:
        values = [float(value) for value in re.findall(rf"\b{re.escape(label)}-(\d+(?:\.\d+)?)", text)]
        return "NA" if not values else f"{pick(values):g}"

    stroke_days = _event_days(history, r"Ischemic stroke {ago}") + ([0] if "Acute ischemic stroke" in diagnosis else [])
    bleed_days = _event_days(history, r"Upper GI bleed {ago}") + ([0] if "gastrointestinal bleed" in diagnosis else [])
    lvef = re.search(r"LVEF (>?)(\d+)%", text)
    chads2 = re.search(r"CHADS2 score of (\d+)", text)
    return {
        "afib": yes("Paroxysmal atrial fibrillation" in history),
        "mdd": yes("Major depressive disorder" in history),
        "schizophrenia": yes("Schizophrenia" in history),
        "bipolar": yes("Bipolar" in history),
        "hemorrhagic": yes("Von Willebrand" in history),
        "recent_stroke": yes(any(days <= 30 for days in stroke_days)),
        "peptic_ulcer_disease": yes("Peptic ulcer disease" in history or "ulcer" in diagnosis),
        "bleeding": yes(any(days <= 183 for days in bleed_days)),
        "afib_ablation": yes("ablation" in history),
        "surgical_valvular_disease": yes("surgical aortic valve replacement" in history),
        "heart_failure": yes("heart failure" in history),
        "t2d": yes("Type 2 diabetes" in history),
        "arterial_hypertension": yes("- Hypertension" in history),
        "prior_stroke": yes(bool(stroke_days)),
        "med_decisions": yes("Confused - always" in text),
        "lowest_platelets": lab("Plt Ct", min), "highest_bilirubin": lab("TotBili", max),
        "highest_ast": lab("AST", max), "highest_creatinine": lab("Creat", max),
        "lowest_hemoglobin": lab("Hgb", min), "highest_glucose": lab("Glucose", max),
        "highest_chads2": chads2.group(1) if chads2 else "NA",
        "lowest_lvef": "NA" if not lvef else ("55" if lvef.group(1) else str(min(int(lvef.group(2)), 55))),
    }


def test_apixaban_rows_cover_23_criteria_with_answers_from_the_text():
    frame = pd.concat([pd.read_csv(path, dtype={"answer": str}, keep_default_na=False)
                       for path in sorted((SAMPLES / "apixaban").glob("*.csv"))])
    assert {"criterion", "answer", "text", "note_id"} <= set(frame.columns)
    assert len(APIXABAN_BOOLEAN) == 15 and len(APIXABAN_NUMERIC) == 8
    for note_id, rows in frame.groupby("note_id"):
        assert sorted(rows["criterion"]) == sorted(APIXABAN_BOOLEAN + APIXABAN_NUMERIC)
        assert dict(zip(rows["criterion"], rows["answer"])) == apixaban_answers_from_text(rows["text"].iloc[0]), note_id
    answers = set(frame["answer"])
    assert {"Yes", "No", "NA"} <= answers


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
