"""Simulated patients: their fact sheets, drawn at random, and the answers the evaluation tasks take from them.

A simulated patient starts as a fact sheet (diagnoses, dated events, medications, social history,
dated labs). Every note is rendered from its fact sheet (simulation/notes.py, simulation/varied.py)
and every label is computed from it here, so the labels agree with the text by construction.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date, timedelta

from clinical_distil.tasks import APIXABAN_BOOLEAN, APIXABAN_NUMERIC


@dataclass
class Lab:
    day: str  # ISO date of the draw
    name: str  # creatinine, hba1c, platelets, hemoglobin, wbc, glucose, ast, alt, bilirubin
    value: float


@dataclass
class FactSheet:
    """Everything true about one simulated patient; notes and labels are derived from it."""

    subject_id: int
    hadm_id: int
    sex: str
    age: int
    admit: str
    discharge: str
    scenario: str
    conditions: dict[str, bool]
    # event timing in days before discharge (None = never); used for "in the last 6 months"-type criteria
    mi_days_ago: int | None = None
    keto_days_ago: int | None = None
    bleed_days_ago: int | None = None
    stroke_days_ago: int | None = None
    abdominal_surgery: str | None = None
    diabetes_complications: list[str] = field(default_factory=list)
    alcohol_drinks_per_week: int = 0
    drug_use: str | None = None
    smoking: str = "never smoker"
    language: str = "English"
    cannot_decide: bool = False
    medications: list[str] = field(default_factory=list)
    supplements: list[str] = field(default_factory=list)
    labs: list[Lab] = field(default_factory=list)
    lvef: int | None = None
    chads2_documented: bool = False
    angina: bool = False
    ischemia: bool = False

    def lab_values(self, name: str) -> list[float]:
        return [lab.value for lab in self.labs if lab.name == name]

    @property
    def chads2(self) -> int:
        c = self.conditions
        return (int(c["heart_failure"]) + int(c["hypertension"]) + int(self.age >= 75) + int(c["t2d"])
                + 2 * int(c["prior_stroke"]))


SCENARIOS = {
    "afib_rvr": ("palpitations", "Atrial fibrillation with rapid ventricular response"),
    "chf": ("shortness of breath", "Acute on chronic systolic heart failure exacerbation"),
    "nstemi": ("chest pain", "Non-ST elevation myocardial infarction"),
    "stroke": ("right-sided weakness", "Acute ischemic stroke, left MCA territory"),
    "gi_bleed": ("melena", "Upper gastrointestinal bleed from duodenal ulcer"),
    "dka": ("nausea, vomiting and hyperglycemia", "Diabetic ketoacidosis"),
    "sbo": ("abdominal pain", "Small bowel obstruction"),
    "pneumonia": ("fever and cough", "Community-acquired pneumonia"),
}

CV_MEDICATIONS = ["metoprolol succinate 50 mg PO daily", "lisinopril 10 mg PO daily",
                  "atorvastatin 80 mg PO QHS", "isosorbide mononitrate 30 mg PO daily",
                  "amlodipine 5 mg PO daily"]
SUPPLEMENTS = ["fish oil 1000 mg PO daily", "vitamin D3 2000 units PO daily", "multivitamin 1 tab PO daily",
               "calcium carbonate 500 mg PO BID", "magnesium oxide 400 mg PO daily"]
DRUGS = ["cocaine", "heroin", "methamphetamine", "marijuana daily"]
ABDOMINAL_SURGERIES = ["s/p partial colectomy for diverticulitis", "s/p small bowel resection",
                       "s/p cholecystectomy", "s/p exploratory laparotomy for small bowel obstruction"]
DIABETES_COMPLICATIONS = ["diabetic peripheral neuropathy", "diabetic retinopathy", "diabetic nephropathy",
                          "right transmetatarsal amputation"]


def _chance(rng: random.Random, probability: float) -> bool:
    return rng.random() < probability


def _value(rng: random.Random, low: float, high: float, digits: int, avoid: tuple[float, ...] = ()) -> float:
    """A value in [low, high], rounded, kept a clear step away from decision thresholds."""
    while True:
        value = round(rng.uniform(low, high), digits)
        if all(abs(value - threshold) >= 0.1 for threshold in avoid):
            return int(value) if digits == 0 else value


def _draw_conditions(rng: random.Random, scenario: str) -> dict[str, bool]:
    c = {
        "afib": scenario == "afib_rvr" or _chance(rng, 0.25),
        "afib_reversible": False,
        "heart_failure": scenario == "chf" or _chance(rng, 0.2),
        "t2d": scenario == "dka" or _chance(rng, 0.45),
        "hypertension": _chance(rng, 0.6),
        "cad": scenario == "nstemi" or _chance(rng, 0.25),
        "mdd": _chance(rng, 0.2),
        "schizophrenia": _chance(rng, 0.06),
        "bipolar": _chance(rng, 0.06),
        "hemorrhagic": _chance(rng, 0.08),
        "peptic_ulcer_disease": scenario == "gi_bleed" or _chance(rng, 0.08),
        "afib_ablation": False,
        "surgical_valvular_disease": _chance(rng, 0.08),
        "prior_stroke": scenario == "stroke" or _chance(rng, 0.12),
        "dementia": _chance(rng, 0.12),
    }
    if c["afib"] and scenario != "afib_rvr" and _chance(rng, 0.25):
        # afib only in the setting of a reversible cause does not count (criterion definition)
        c["afib"], c["afib_reversible"] = False, True
    c["afib_ablation"] = c["afib"] and _chance(rng, 0.35)
    return c


def _draw_history(rng: random.Random, sheet: FactSheet, los: int) -> None:
    """Dated events (this admission's own at `los` days), abdominal surgery and diabetes complications."""
    scenario, c = sheet.scenario, sheet.conditions
    if scenario == "nstemi":
        sheet.mi_days_ago = los
    elif c["cad"] and _chance(rng, 0.5):
        sheet.mi_days_ago = rng.choice([60, 120, 400, 1500])
    if scenario == "dka":
        sheet.keto_days_ago = los
    elif c["t2d"] and _chance(rng, 0.1):
        sheet.keto_days_ago = rng.choice([90, 700])
    if scenario == "gi_bleed":
        sheet.bleed_days_ago = los
    elif _chance(rng, 0.12):
        sheet.bleed_days_ago = rng.choice([45, 90, 1200])
    if scenario == "stroke":
        sheet.stroke_days_ago = los
    elif c["prior_stroke"]:
        sheet.stroke_days_ago = rng.choice([20, 800, 2000])
    if scenario == "sbo" or _chance(rng, 0.15):
        sheet.abdominal_surgery = rng.choice(ABDOMINAL_SURGERIES)
    if c["t2d"] and _chance(rng, 0.5):
        sheet.diabetes_complications = sorted(rng.sample(DIABETES_COMPLICATIONS, rng.randint(1, 2)))


def _draw_social(rng: random.Random, sheet: FactSheet) -> None:
    sheet.alcohol_drinks_per_week = rng.choice([0, 0, 0, 2, 4, 6, 10, 21, 28])
    sheet.drug_use = rng.choice(DRUGS) if _chance(rng, 0.15) else None
    sheet.smoking = rng.choice(["never smoker", "former smoker, quit 10 years ago", "current smoker, 1 ppd"])
    sheet.language = "English" if _chance(rng, 0.8) else rng.choice(["Spanish", "Portuguese", "Haitian Creole"])


def _draw_medications(rng: random.Random, sheet: FactSheet) -> None:
    c = sheet.conditions
    meds = []
    if c["cad"] or c["hypertension"] or c["heart_failure"]:
        meds += rng.sample(CV_MEDICATIONS, rng.randint(1, 3))
    if c["cad"] or _chance(rng, 0.2):
        meds.append("aspirin 81 mg PO daily")
    if c["t2d"]:
        meds.append(rng.choice(["metformin 1000 mg PO BID", "insulin glargine 20 units SC QHS"]))
    if c["heart_failure"]:
        meds.append("furosemide 40 mg PO daily")
    if c["afib"]:
        meds.append(rng.choice(["apixaban 5 mg PO BID", "warfarin 5 mg PO daily"]))
    if c["mdd"]:
        meds.append("sertraline 50 mg PO daily")
    if c["schizophrenia"] or c["bipolar"]:
        meds.append(rng.choice(["quetiapine 100 mg PO QHS", "olanzapine 10 mg PO QHS"]))
    sheet.medications = sorted(set(meds))
    sheet.supplements = sorted(rng.sample(SUPPLEMENTS, rng.randint(1, 2))) if _chance(rng, 0.35) else []


def _draw_labs(rng: random.Random, sheet: FactSheet, admit: date, los: int) -> None:
    """Dated labs and the LVEF.

    Two or three draws during the stay; LFTs and HbA1c only for some patients, so that some numeric
    criteria are truly "not in the note".
    """
    scenario, c = sheet.scenario, sheet.conditions
    draw_days = sorted(rng.sample(range(los + 1), min(los + 1, rng.randint(2, 3))))
    renal = scenario == "dka" or _chance(rng, 0.4)
    has_lfts = _chance(rng, 0.6)
    for offset in draw_days:
        day = (admit + timedelta(days=offset)).isoformat()
        sheet.labs += [
            Lab(day, "wbc", _value(rng, 4.0, 15.0, 1)),
            Lab(day, "hemoglobin", _value(rng, 7.5 if scenario == "gi_bleed" else 9.5, 15.5, 1)),
            Lab(day, "platelets", _value(rng, 90, 380, 0)),
            Lab(day, "glucose", _value(rng, 80, 420 if scenario == "dka" else 220, 0)),
            Lab(day, "creatinine", _value(rng, 1.4, 2.9, 1, avoid=(1.3,)) if renal else _value(rng, 0.6, 1.2, 1, avoid=(1.3,))),
        ]
        if has_lfts and offset == draw_days[0]:
            sheet.labs += [Lab(day, "ast", _value(rng, 12, 140, 0)), Lab(day, "alt", _value(rng, 10, 120, 0)),
                           Lab(day, "bilirubin", _value(rng, 0.2, 3.5, 1))]
    if c["t2d"] or _chance(rng, 0.2):
        sheet.labs.append(Lab(sheet.admit, "hba1c", _value(rng, 5.4, 11.5, 1, avoid=(6.5, 9.5))))
    if c["heart_failure"] or scenario in ("nstemi", "stroke", "afib_rvr") or _chance(rng, 0.2):
        sheet.lvef = rng.choice([20, 25, 30, 35, 40]) if c["heart_failure"] else rng.choice([45, 55, 60, 65])


def make_fact_sheet(rng: random.Random, subject_id: int, hadm_id: int, admit: date,
                    scenario: str | None = None) -> FactSheet:
    """A patient admitted on `admit` (for a random scenario when none is given); the same rng state gives the same
    sheet."""
    scenario = scenario or rng.choice(sorted(SCENARIOS))
    sex = rng.choice("MF")
    age = rng.randint(48, 88)
    los = rng.randint(3, 8)
    discharge = admit + timedelta(days=los)
    c = _draw_conditions(rng, scenario)
    sheet = FactSheet(subject_id=subject_id, hadm_id=hadm_id, sex=sex, age=age, admit=admit.isoformat(),
                      discharge=discharge.isoformat(), scenario=scenario, conditions=c)
    _draw_history(rng, sheet, los)
    _draw_social(rng, sheet)
    sheet.cannot_decide = c["dementia"]
    sheet.angina = c["cad"] and _chance(rng, 0.5)
    sheet.ischemia = c["cad"] and _chance(rng, 0.4)
    _draw_medications(rng, sheet)
    _draw_labs(rng, sheet, admit, los)
    sheet.chads2_documented = c["afib"]
    return sheet


def make_sheets(rng: random.Random, count: int, first_subject: int, first_hadm: int, first_year: int) -> list[FactSheet]:
    sheets = []
    scenarios = sorted(SCENARIOS)
    for index in range(count):
        admit = date(first_year + rng.randint(0, 60), rng.randint(1, 12), rng.randint(1, 28))
        sheets.append(make_fact_sheet(rng, first_subject + index, first_hadm + index * 7, admit,
                                      scenario=scenarios[index % len(scenarios)]))
    return sheets


def load_fact_sheet(record: dict) -> FactSheet:
    record = dict(record)
    record["labs"] = [Lab(**lab) for lab in record["labs"]]
    return FactSheet(**record)


# ----------------------------------------------------------------------------- what the annotators answer

def apixaban_answers(sheet: FactSheet) -> dict[str, str]:
    """The 23 apixaban criteria for one discharge note, as the annotators would answer them."""
    c = sheet.conditions

    def yes(flag: bool) -> str:
        return "Yes" if flag else "No"

    def number(value: float | None) -> str:
        return "NA" if value is None else (str(int(value)) if float(value).is_integer() else f"{value:g}")

    def lab(name: str, pick) -> str:
        values = sheet.lab_values(name)
        return number(pick(values)) if values else "NA"

    answers = {
        "afib": yes(c["afib"]),
        "mdd": yes(c["mdd"]),
        "schizophrenia": yes(c["schizophrenia"]),
        "bipolar": yes(c["bipolar"]),
        "hemorrhagic": yes(c["hemorrhagic"]),
        "recent_stroke": yes(sheet.stroke_days_ago is not None and sheet.stroke_days_ago <= 30),
        "peptic_ulcer_disease": yes(c["peptic_ulcer_disease"]),
        "bleeding": yes(sheet.bleed_days_ago is not None and sheet.bleed_days_ago <= 183),
        "afib_ablation": yes(c["afib_ablation"]),
        "surgical_valvular_disease": yes(c["surgical_valvular_disease"]),
        "heart_failure": yes(c["heart_failure"]),
        "t2d": yes(c["t2d"]),
        "arterial_hypertension": yes(c["hypertension"]),
        "prior_stroke": yes(c["prior_stroke"]),
        "med_decisions": yes(sheet.cannot_decide),
        "lowest_platelets": lab("platelets", min),
        "highest_bilirubin": lab("bilirubin", max),
        "highest_ast": lab("ast", max),
        "highest_creatinine": lab("creatinine", max),
        "lowest_hemoglobin": lab("hemoglobin", min),
        "highest_chads2": number(sheet.chads2) if sheet.chads2_documented else "NA",
        "lowest_lvef": "NA" if sheet.lvef is None else number(min(sheet.lvef, 55)),
        "highest_glucose": lab("glucose", max),
    }
    assert set(answers) == set(APIXABAN_BOOLEAN) | set(APIXABAN_NUMERIC)
    return answers


def n2c2_labels(sheet: FactSheet, hba1c_range: tuple[float, float] = (6.5, 9.5),
                creatinine_above: float = 1.3) -> dict[str, bool]:
    """The 13 n2c2 2018 Track 1 criteria ("met" = True), as of the last record.

    CREATININE and HBA1C follow the project's evaluation: the highest value is compared
    with the threshold (the sample values never sit on a threshold).
    """
    creatinine = sheet.lab_values("creatinine")
    hba1c = sheet.lab_values("hba1c")
    cad_evidence = [sum(med in CV_MEDICATIONS for med in sheet.medications) >= 2,
                    sheet.mi_days_ago is not None, sheet.angina, sheet.ischemia]
    alcohol_limit = 14 if sheet.sex == "M" else 7
    return {
        "ABDOMINAL": sheet.abdominal_surgery is not None,
        "ADVANCED-CAD": sum(cad_evidence) >= 2,
        "ALCOHOL-ABUSE": sheet.alcohol_drinks_per_week > alcohol_limit,
        "ASP-FOR-MI": any(med.startswith("aspirin") for med in sheet.medications),
        "CREATININE": bool(creatinine) and max(creatinine) > creatinine_above,
        "DIETSUPP-2MOS": bool(sheet.supplements),
        "DRUG-ABUSE": sheet.drug_use is not None,
        "ENGLISH": sheet.language == "English",
        "HBA1C": bool(hba1c) and hba1c_range[0] <= max(hba1c) <= hba1c_range[1],
        "KETO-1YR": sheet.keto_days_ago is not None and sheet.keto_days_ago <= 365,
        "MAJOR-DIABETES": bool(sheet.diabetes_complications),
        "MAKES-DECISIONS": not sheet.cannot_decide,
        "MI-6MOS": sheet.mi_days_ago is not None and sheet.mi_days_ago <= 183,
    }


def annotated_questions(sheet: FactSheet, rng: random.Random) -> list[dict]:
    """Human-checked-style questions of the four types, with answers from the fact sheet."""
    c = sheet.conditions
    creatinine = sheet.lab_values("creatinine")
    platelets = sheet.lab_values("platelets")
    boolean = [
        ("Does the patient have a history of atrial fibrillation?", c["afib"], "Past Medical History", 3),
        ("Does the patient have type 2 diabetes mellitus?", c["t2d"], "Past Medical History", 2),
        ("Is the patient taking aspirin at discharge?",
         any(med.startswith("aspirin") for med in sheet.medications), "Discharge Medications", 4),
        ("Does the patient have a history of major depressive disorder?", c["mdd"], "Past Medical History", 3),
        ("Has the patient had an ischemic stroke at any time?", c["prior_stroke"], "Past Medical History", 5),
    ]
    numeric = [
        ("What was the highest creatinine value recorded in this note?", max(creatinine), "Pertinent Results", 6),
        ("What was the lowest platelet count recorded in this note?", min(platelets), "Pertinent Results", 5),
    ]
    not_answerable_numeric = [
        ("What was the patient's highest troponin T value?", "Pertinent Results", 7),
        ("What was the patient's most recent LDL cholesterol level?", "Pertinent Results", 6),
    ]
    not_answerable_bool = [
        ("Has the patient ever been tested positive for hepatitis C antibody?", 6),
        ("Did the patient receive the influenza vaccine this season?", 5),
    ]
    rows = []
    for question, flag, section, difficulty in rng.sample(boolean, 2):
        rows.append(dict(question=question, answer="Yes" if flag else "No", type="yes", section=section,
                         difficulty=difficulty))
    for question, value, section, difficulty in rng.sample(numeric, 1):
        rows.append(dict(question=question, answer=f"{value:g}", type="numeric", section=section,
                         difficulty=difficulty))
    for question, section, difficulty in rng.sample(not_answerable_numeric, 1):
        rows.append(dict(question=question, answer="N/A", type="na-numeric", section="not found",
                         difficulty=difficulty))
    for question, difficulty in rng.sample(not_answerable_bool, 1):
        rows.append(dict(question=question, answer="N/A", type="na-bool", section="not found", difficulty=difficulty))
    return rows

