"""Seeded generator of the bundled sample data, in the real formats, with known ground truth.

Real MIMIC, n2c2 and apixaban data sit behind data-use agreements, so the project ships
simulated stand-ins. Each simulated patient starts as a fact sheet (diagnoses, dated
events, medications, social history, dated labs); every note is rendered from its fact
sheet, and every label is computed from it, so the labels agree with the text by
construction and the tests can check that they do.

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
from dataclasses import dataclass, field
from datetime import date, timedelta
from pathlib import Path
from xml.sax.saxutils import quoteattr

import pandas as pd

from clinical_distil.files import atomic_path, write_csv, write_text
from clinical_distil.layout import REPO_ROOT, resolve
from clinical_distil.tasks import APIXABAN_BOOLEAN, APIXABAN_NUMERIC, N2C2_CRITERIA

SAMPLES_DIR = REPO_ROOT / "data" / "samples"
DEFAULT_SEED = 2018

RECORD_SEPARATOR = "*" * 100


# ----------------------------------------------------------------------------- fact sheets

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


def make_fact_sheet(rng: random.Random, subject_id: int, hadm_id: int, admit: date,
                    scenario: str | None = None) -> FactSheet:
    scenario = scenario or rng.choice(sorted(SCENARIOS))
    sex = rng.choice("MF")
    age = rng.randint(48, 88)
    los = rng.randint(3, 8)
    discharge = admit + timedelta(days=los)
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
    sheet = FactSheet(subject_id=subject_id, hadm_id=hadm_id, sex=sex, age=age, admit=admit.isoformat(),
                      discharge=discharge.isoformat(), scenario=scenario, conditions=c)
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
    sheet.alcohol_drinks_per_week = rng.choice([0, 0, 0, 2, 4, 6, 10, 21, 28])
    sheet.drug_use = rng.choice(DRUGS) if _chance(rng, 0.15) else None
    sheet.smoking = rng.choice(["never smoker", "former smoker, quit 10 years ago", "current smoker, 1 ppd"])
    sheet.language = "English" if _chance(rng, 0.8) else rng.choice(["Spanish", "Portuguese", "Haitian Creole"])
    sheet.cannot_decide = c["dementia"]
    sheet.angina = c["cad"] and _chance(rng, 0.5)
    sheet.ischemia = c["cad"] and _chance(rng, 0.4)

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

    # Dated labs: two or three draws during the stay; LFTs and HbA1c only for some patients,
    # so that some numeric criteria are truly "not in the note".
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
    sheet.chads2_documented = c["afib"]
    return sheet


# ----------------------------------------------------------------------------- ground truth

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


# ----------------------------------------------------------------------------- rendering

class DateStyle:
    """How a de-identified note shows a date: MIMIC-III shifts and brackets, MIMIC-IV masks."""

    def __init__(self, style: str):
        self.style = style

    def __call__(self, day: str | date) -> str:
        if self.style == "mimic-iv":
            return "___"
        day = date.fromisoformat(day) if isinstance(day, str) else day
        return f"[**{day.year}-{day.month}-{day.day}**]"

    def placeholder(self, kind: str, number: int = 0) -> str:
        return "___" if self.style == "mimic-iv" else f"[**{kind} {number}**]"


def _ago(days: int) -> str:
    if days <= 10:
        return "during this admission"
    if days < 60:
        return f"{days // 7} weeks ago"
    if days < 365:
        return f"{days // 30} months ago"
    return f"{days // 365} years ago"


def _history_lines(sheet: FactSheet) -> list[str]:
    c = sheet.conditions
    lines = []
    if c["hypertension"]:
        lines.append("Hypertension, on treatment")
    if c["t2d"]:
        lines.append("Type 2 diabetes mellitus" + (", complicated by " + " and ".join(sheet.diabetes_complications)
                                                   if sheet.diabetes_complications else ""))
    if c["afib"]:
        lines.append("Paroxysmal atrial fibrillation" + (", s/p pulmonary vein isolation ablation"
                                                         if c["afib_ablation"] else ""))
    if c["afib_reversible"]:
        lines.append("Transient atrial fibrillation in the setting of sepsis, resolved with treatment of the "
                     "infection; not anticoagulated")
    if c["heart_failure"]:
        lines.append("Chronic systolic heart failure (HFrEF)")
    if c["cad"]:
        lines.append("Coronary artery disease" + (", stable angina on exertion" if sheet.angina else ""))
    if sheet.mi_days_ago is not None and sheet.mi_days_ago > 10:
        lines.append(f"NSTEMI {_ago(sheet.mi_days_ago)}, medically managed")
    if sheet.ischemia:
        lines.append("Positive nuclear stress test with reversible inferior ischemia")
    if c["prior_stroke"] and sheet.stroke_days_ago and sheet.stroke_days_ago > 10:
        lines.append(f"Ischemic stroke {_ago(sheet.stroke_days_ago)} with residual mild dysarthria")
    if c["surgical_valvular_disease"]:
        lines.append("Severe aortic stenosis, referred to cardiac surgery for surgical aortic valve replacement")
    if c["peptic_ulcer_disease"] and sheet.scenario != "gi_bleed":
        lines.append("Peptic ulcer disease")
    if sheet.bleed_days_ago is not None and sheet.bleed_days_ago > 10:
        lines.append(f"Upper GI bleed {_ago(sheet.bleed_days_ago)} requiring transfusion")
    if c["hemorrhagic"]:
        lines.append("Von Willebrand disease type 1")
    if sheet.keto_days_ago is not None and sheet.keto_days_ago > 10:
        lines.append(f"Diabetic ketoacidosis {_ago(sheet.keto_days_ago)}")
    if c["mdd"]:
        lines.append("Major depressive disorder")
    if c["schizophrenia"]:
        lines.append("Schizophrenia, followed by outpatient psychiatry")
    if c["bipolar"]:
        lines.append("Bipolar I disorder")
    if c["dementia"]:
        lines.append("Alzheimer dementia, moderate; daughter is health care proxy")
    if sheet.abdominal_surgery:
        lines.append(sheet.abdominal_surgery.capitalize())
    return lines or ["None significant"]


def _social_history(sheet: FactSheet, lives_with: str) -> str:
    drinks = ("Denies alcohol use" if sheet.alcohol_drinks_per_week == 0
              else f"Drinks about {sheet.alcohol_drinks_per_week} alcoholic beverages per week")
    drugs = f"History of {sheet.drug_use} use" if sheet.drug_use else "Denies illicit drug use"
    language = ("Speaks English" if sheet.language == "English"
                else f"Speaks {sheet.language} only; a {sheet.language} interpreter was used for all conversations")
    return f"Lives with {lives_with}. {sheet.smoking.capitalize()}. {drinks}. {drugs}. {language}."


LAB_LABELS = {"wbc": "WBC", "hemoglobin": "Hgb", "platelets": "Plt Ct", "glucose": "Glucose",
              "creatinine": "Creat", "ast": "AST", "alt": "ALT", "bilirubin": "TotBili", "hba1c": "%HbA1c"}


def _lab_lines(sheet: FactSheet, style: DateStyle) -> list[str]:
    by_day: dict[str, list[Lab]] = {}
    for lab in sheet.labs:
        by_day.setdefault(lab.day, []).append(lab)
    lines = []
    for day in sorted(by_day):
        labs = by_day[day]
        blood = [lab for lab in labs if lab.name in ("wbc", "hemoglobin", "platelets")]
        chem = [lab for lab in labs if lab.name in ("glucose", "creatinine")]
        lfts = [lab for lab in labs if lab.name in ("ast", "alt", "bilirubin")]
        other = [lab for lab in labs if lab.name == "hba1c"]
        for group in (blood, chem, lfts, other):
            if group:
                values = " ".join(f"{LAB_LABELS[lab.name]}-{lab.value}" for lab in group)
                lines.append(f"{style(day)} 06:40AM BLOOD {values}")
    return lines


def _hospital_course(sheet: FactSheet) -> str:
    c = sheet.conditions
    course = {
        "afib_rvr": "Presented in atrial fibrillation with rates to 150s. Rate controlled with IV then PO metoprolol. "
                    "Anticoagulation continued given elevated stroke risk.",
        "chf": "Diuresed with IV furosemide with net negative 4 L. Transitioned to PO diuretic on day 3.",
        "nstemi": "Troponin elevation with ST depressions laterally. Started on heparin drip and taken for cardiac "
                  "catheterization with drug-eluting stent to the LAD. NSTEMI during this admission.",
        "stroke": "MRI showed acute left MCA territory infarct. Not a candidate for thrombolysis given time from "
                  "onset. Neurology followed; speech and physical therapy consulted.",
        "gi_bleed": "EGD showed a bleeding duodenal ulcer, treated with clips and epinephrine. Received 2 units "
                    "of packed red cells. Started on IV pantoprazole.",
        "dka": "Admitted to the ICU with anion gap acidosis and ketonuria consistent with diabetic ketoacidosis. "
               "Treated with insulin drip and fluids; gap closed within 24 hours.",
        "sbo": "CT showed small bowel obstruction with transition point in the mid ileum. Managed with NG tube "
               "decompression and bowel rest; resolved without surgery.",
        "pneumonia": "Chest x-ray with right lower lobe consolidation. Treated with ceftriaxone and azithromycin "
                     "with defervescence by day 2.",
    }[sheet.scenario]
    if sheet.chads2_documented:
        course += f" CHADS2 score of {sheet.chads2}."
    if sheet.lvef is not None:
        course += f" TTE this admission: LVEF {'>55' if sheet.lvef >= 55 else sheet.lvef}%."
    if c["afib"] and not c["afib_ablation"] and sheet.scenario == "afib_rvr":
        course += " Electrophysiology will see as an outpatient to discuss options."
    return course


def render_discharge_summary(sheet: FactSheet, style: DateStyle) -> str:
    """A discharge summary with MIMIC-style sections, every fact taken from the sheet."""
    complaint, diagnosis = SCENARIOS[sheet.scenario]
    pronoun = "He" if sheet.sex == "M" else "She"
    man = "man" if sheet.sex == "M" else "woman"
    history = _history_lines(sheet)
    medications = sheet.medications + sheet.supplements
    mental = ("Confused - always." if sheet.cannot_decide else "Clear and coherent.")
    mentions_history = ("a history of " + ", ".join(line.split(",")[0].lower() for line in history[:3])
                        if history != ["None significant"] else "no significant past history")
    sections = [
        f"Admission Date:  {style(sheet.admit)}              Discharge Date:   {style(sheet.discharge)}\n\n"
        f"Date of Birth:  {style(date(date.fromisoformat(sheet.admit).year - sheet.age, 1, 1))}"
        f"             Sex:   {sheet.sex}\n\nService: MEDICINE\n\nAllergies:\nNo Known Allergies / Adverse Drug Reactions\n\n"
        f"Attending: {style.placeholder('First Name3 (LF)', 3)}",
        f"Chief Complaint:\n{complaint.capitalize()}",
        f"History of Present Illness:\n{sheet.age} year old {man} with {mentions_history} who "
        f"presents with {complaint}. {pronoun} was seen at {style.placeholder('Hospital1', 18)} and transferred "
        "for further management.",
        "Past Medical History:\n" + "\n".join(f"- {line}" for line in history),
        f"Social History:\n{_social_history(sheet, style.placeholder('Name (NI)', 1) + ' in ' + style.placeholder('Location', 2))}",
        "Family History:\nMother with hypertension. Father died of colon cancer at 70.",
        "Physical Exam:\nVS: T 98.4 BP 132/78 HR 84 RR 18 O2 sat 96% RA\nGeneral: NAD, alert\n"
        "Lungs: CTAB\nCV: RRR, no murmurs\nAbd: soft, non-tender\nExt: no edema",
        "Pertinent Results:\n" + "\n".join(_lab_lines(sheet, style)),
        f"Brief Hospital Course:\n{_hospital_course(sheet)}",
        "Discharge Medications:\n" + "\n".join(f"{number}. {med}" for number, med in enumerate(medications, 1)),
        "Discharge Disposition:\n" + ("Extended Care" if sheet.cannot_decide else "Home"),
        f"Discharge Diagnosis:\n{diagnosis}",
        f"Discharge Condition:\nMental Status: {mental}\nLevel of Consciousness: Alert and interactive.\n"
        "Activity Status: Ambulatory - Independent.",
        f"Discharge Instructions:\nYou were admitted for {complaint}. Please take your medications as prescribed "
        f"and follow up with your primary care physician, Dr. {style.placeholder('Last Name (STitle)', 4)}.",
    ]
    return "\n\n".join(sections) + "\n"


def render_n2c2_record(sheet: FactSheet, record_day: date, labs: list[Lab], events: list[str]) -> str:
    """One outpatient record of an n2c2-style longitudinal file."""
    lab_text = "; ".join(f"{LAB_LABELS[lab.name].strip('%')} {lab.value}" for lab in labs) or "none today"
    medications = sheet.medications + sheet.supplements
    return (
        f"Record date: {record_day.isoformat()}\n\n"
        f"INTERNAL MEDICINE FOLLOW-UP\n\n"
        f"{sheet.age} yo {'man' if sheet.sex == 'M' else 'woman'} here for follow-up of chronic problems.\n"
        + "".join(f"{event}\n" for event in events) +
        "\nProblems:\n" + "\n".join(f"  {line}" for line in _history_lines(sheet)) +
        "\n\nMedications:\n" + "\n".join(f"  {med}" for med in medications) +
        f"\n\nSocial history: {_social_history(sheet, 'family')}\n"
        f"\nLabs: {lab_text}\n"
        f"\nAssessment and plan: continue current regimen; return in 3 months.\n"
    )


def render_n2c2_xml(sheet: FactSheet, rng: random.Random) -> tuple[str, dict[str, bool]]:
    """An n2c2 2018 Track 1 patient file and its labels.

    The discharge-relative event timings of the sheet are read relative to the last record.
    """
    last_day = date.fromisoformat(sheet.discharge)
    record_count = rng.randint(2, 5)
    spacing = sorted(rng.sample(range(30, 900), record_count - 1), reverse=True)
    record_days = [last_day - timedelta(days=gap) for gap in spacing] + [last_day]
    # spread the dated labs over the records (each record shows the draws made on its day)
    lab_days = sorted({lab.day for lab in sheet.labs})
    labs_by_record: list[list[Lab]] = [[] for _ in record_days]
    for position, day in enumerate(lab_days):
        labs_by_record[position % record_count].extend(lab for lab in sheet.labs if lab.day == day)
    events_by_record: list[list[str]] = [[] for _ in record_days]
    for days_ago, text in ((sheet.mi_days_ago, "Admitted {ago} with an NSTEMI, medically managed."),
                           (sheet.keto_days_ago, "Hospitalized {ago} for diabetic ketoacidosis."),
                           (sheet.stroke_days_ago, "Had an ischemic stroke {ago}.")):
        if days_ago is not None:
            events_by_record[-1].append(text.format(ago=_ago(days_ago).replace("during this admission", "last week")))
    if sheet.cannot_decide:
        events_by_record[-1].append("Daughter, the health care proxy, makes medical decisions for the patient.")
    records = [render_n2c2_record(sheet, day, labs, events)
               for day, labs, events in zip(record_days, labs_by_record, events_by_record)]
    text = f"\n{RECORD_SEPARATOR}\n\n".join(records)
    labels = n2c2_labels(sheet)
    tags = "\n".join(f'<{name} met={quoteattr("met" if labels[name] else "not met")} />' for name in N2C2_CRITERIA)
    xml = (f'<?xml version="1.0" encoding="UTF-8" ?>\n<PatientMatching>\n<TEXT><![CDATA[{text}]]></TEXT>\n'
           f"<TAGS>\n{tags}\n</TAGS>\n</PatientMatching>\n")
    return xml, labels


# ----------------------------------------------------------------------------- annotated synthetic

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


# ----------------------------------------------------------------------------- writing

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


def make_sheets(rng: random.Random, count: int, first_subject: int, first_hadm: int, first_year: int) -> list[FactSheet]:
    sheets = []
    scenarios = sorted(SCENARIOS)
    for index in range(count):
        admit = date(first_year + rng.randint(0, 60), rng.randint(1, 12), rng.randint(1, 28))
        sheets.append(make_fact_sheet(rng, first_subject + index, first_hadm + index * 7, admit,
                                      scenario=scenarios[index % len(scenarios)]))
    return sheets


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


def load_fact_sheet(record: dict) -> FactSheet:
    record = dict(record)
    record["labs"] = [Lab(**lab) for lab in record["labs"]]
    return FactSheet(**record)


def main(output_dir: str = str(SAMPLES_DIR), seed: int = DEFAULT_SEED) -> None:
    """Regenerate the bundled sample data (deterministic for a seed)."""
    counts = write_samples(resolve(output_dir), seed=seed)
    for name, count in counts.items():
        print(f"{name}: {count}")


if __name__ == "__main__":
    from clinical_distil.cli import run

    run(main)
