"""A fact sheet's notes in one fixed wording, as the bundled samples hold them.

MIMIC-style discharge summaries (MIMIC-III's shifted, bracketed dates or MIMIC-IV's masks) and n2c2
2018 Track 1 patient files of dated outpatient records with their TAGS. The de-identified dates
(DateStyle) and the words for an event's timing (`_ago`) serve the varied notes too.
"""

from __future__ import annotations

import random
from datetime import date, timedelta
from xml.sax.saxutils import quoteattr

from clinical_distil.tasks import N2C2_CRITERIA
from simulation.fact_sheets import SCENARIOS, FactSheet, Lab, n2c2_labels

RECORD_SEPARATOR = "*" * 100


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

