"""Phrases of the held-out notes: how each fact of a fact sheet is written, in a vocabulary of its own.

Every phrase that states a fact is recorded under a fact key (see `Statements`), so that tests can find
the exact words that support each label. Hedged phrases ("r/o", "possible", "cannot exclude",
"concern for ... ruled out") are only written for conditions the sheet says the patient does not have.
"""

from __future__ import annotations

import random
import re
from dataclasses import dataclass, field
from datetime import date, timedelta

from simulation.fact_sheets import FactSheet, Lab

# brand names written beside the generic name of each medication or supplement
BRANDS = {
    "apixaban": "Eliquis", "warfarin": "Coumadin", "metoprolol succinate": "Toprol XL", "lisinopril": "Zestril",
    "atorvastatin": "Lipitor", "isosorbide mononitrate": "Imdur", "amlodipine": "Norvasc", "furosemide": "Lasix",
    "metformin": "Glucophage", "insulin glargine": "Lantus", "sertraline": "Zoloft", "quetiapine": "Seroquel",
    "olanzapine": "Zyprexa", "aspirin": "Ecotrin", "fish oil": "omega-3", "vitamin D3": "cholecalciferol",
    "multivitamin": "Centrum Silver", "calcium carbonate": "Os-Cal", "magnesium oxide": "Mag-Ox",
}
ROUTES = {"PO": "by mouth", "SC": "subcut"}
FREQUENCIES = {"daily": "once a day", "BID": "twice a day", "QHS": "at bedtime"}
MEDICATION = re.compile(r"^(?P<name>.+?) (?P<dose>[\d.]+ (?:mg|units|tab)) (?P<route>PO|SC) (?P<freq>\S+)$")

# positive wording of each condition (the sheet's condition keys)
CONDITIONS = {
    "afib": ("paroxysmal AF", "persistent AF", "permanent atrial fibrillation (AF)"),
    "heart_failure": ("HFrEF", "chronic systolic CHF (HFrEF)"),
    "t2d": ("T2DM", "DM2"),
    "hypertension": ("HTN", "essential HTN"),
    "cad": ("CAD", "native-vessel CAD"),
    "mdd": ("MDD", "major depression (MDD), recurrent"),
    "schizophrenia": ("schizophrenia, paranoid type", "chronic schizophrenia"),
    "bipolar": ("bipolar I disorder (BPAD)", "BPAD, type I"),
    "hemorrhagic": ("von Willebrand disease type 1 (known bleeding diathesis)",
                    "hereditary bleeding diathesis (vWD type 1)"),
    "peptic_ulcer_disease": ("PUD", "peptic ulcer disease (PUD), H. pylori treated"),
    "surgical_valvular_disease": ("severe aortic stenosis, referred for surgical AVR",
                                  "severe mitral stenosis awaiting surgical valve replacement"),
    "dementia": ("Alzheimer dementia, moderate", "vascular dementia"),
}
# hedges of conditions the patient does not have: a doubt raised, then settled as absent
HEDGES = {
    "afib": ("possible paroxysmal AF flagged on telemetry -- reviewed, artifact; sinus rhythm throughout, AF ruled out",
             "r/o AF: 48 h of telemetry in sinus rhythm only, no AF"),
    "heart_failure": ("concern for CHF given ankle edema, ruled out: BNP wnl, lungs clear",
                      "r/o heart failure: euvolemic, BNP wnl, no HF"),
    "hypertension": ("possible HTN on one triage reading; every BP since 110s-120s/70s, no HTN",),
    "t2d": ("r/o diabetes: glucose rise read as stress hyperglycemia, no diabetes",),
    "cad": ("r/o ACS: troponin neg x2, ECG w/o acute changes; no known CAD",),
    "mdd": ("concern for depression screened, PHQ-9 of 2: MDD ruled out",),
    "peptic_ulcer_disease": ("cannot exclude PUD by history alone -- H. pylori stool Ag neg, no ulcer; PUD ruled out",),
    "hemorrhagic": ("concern for bleeding diathesis ruled out: PT/PTT and fibrinogen wnl",),
    "prior_stroke": ("r/o TIA for brief dizziness: MRI brain neg, no stroke or TIA",),
    "dementia": ("possible cognitive impairment raised by family; MoCA 28/30, no dementia",),
    "surgical_valvular_disease": ("concern for aortic stenosis (murmur), ruled out on echo",),
    "bipolar": ("cannot exclude bipolar d/o per outside records; psychiatry eval: no bipolar disorder",),
    "schizophrenia": ("r/o psychotic disorder per old records; psychiatry: no schizophrenia",),
}
HEDGE_MARKERS = ("possible", "r/o", "cannot exclude", "concern for", "ruled out")
ABDOMINAL = {
    "s/p partial colectomy for diverticulitis": "sigmoid colectomy for diverticulitis",
    "s/p small bowel resection": "small bowel resection",
    "s/p cholecystectomy": "laparoscopic cholecystectomy",
    "s/p exploratory laparotomy for small bowel obstruction": "ex-lap for SBO",
}
COMPLICATIONS = {
    "diabetic peripheral neuropathy": "diabetic peripheral neuropathy (monofilament absent both feet)",
    "diabetic retinopathy": "diabetic retinopathy s/p laser",
    "diabetic nephropathy": "diabetic nephropathy w/ microalbuminuria",
    "right transmetatarsal amputation": "R TMA (transmetatarsal amputation)",
}
DRUG_USE = {"cocaine": "cocaine, intranasal, intermittent", "heroin": "heroin use (intranasal)",
            "methamphetamine": "methamphetamine (smoked)", "marijuana daily": "marijuana daily"}
SMOKING = {"never smoker": "tobacco: never", "former smoker, quit 10 years ago": "ex-smoker, quit ~10 yrs ago",
           "current smoker, 1 ppd": "smokes 1 PPD"}
LAB_NAMES = {"wbc": "WBC", "hemoglobin": "Hgb", "platelets": "Plt", "glucose": "Glu", "creatinine": "Cr",
             "ast": "AST", "alt": "ALT", "bilirubin": "Tbili", "hba1c": "HbA1c"}
LAB_UNITS = {"wbc": "K/uL", "hemoglobin": "g/dL", "platelets": "K/uL", "glucose": "mg/dL", "creatinine": "mg/dL",
             "ast": "IU/L", "alt": "IU/L", "bilirubin": "mg/dL", "hba1c": "%"}
STALE_PROBLEMS = ("L ankle sprain", "acute cystitis", "cellulitis, R lower leg", "hypokalemia", "gout flare, R MTP",
                  "BPPV", "herpes zoster, T8", "influenza A", "contact dermatitis", "lumbar strain",
                  "cerumen impaction", "hyponatremia")


@dataclass
class Statements:
    """The phrases of one note or record that state facts, by fact key."""

    stated: dict[str, str] = field(default_factory=dict)

    def say(self, key: str, phrase: str) -> str:
        self.stated[key] = phrase
        return phrase


def us_date(day: str | date) -> str:
    """An ISO date (or date) written the US way, 3/4/2101."""
    day = date.fromisoformat(day) if isinstance(day, str) else day
    return f"{day.month}/{day.day}/{day.year}"


def days_before(sheet: FactSheet, days: int) -> date:
    return date.fromisoformat(sheet.discharge) - timedelta(days=days)


def number(value: float) -> str:
    return f"{value:g}"


def medication_line(medication: str, style: int) -> str:
    """One medication or supplement of the sheet, generic name and dose kept, in one of three sig styles."""
    match = MEDICATION.match(medication)
    if match is None:
        return medication
    name, dose, route, freq = match["name"], match["dose"], match["route"], match["freq"]
    brand = BRANDS.get(name, name)
    if style == 0:
        return f"{name} ({brand}) {dose} {route} {freq}"
    if style == 1:
        return f"{brand} [{name}] {dose} -- {ROUTES[route]} {FREQUENCIES.get(freq, freq)}"
    return f"{name} {dose} {ROUTES[route]}, {FREQUENCIES.get(freq, freq)} (brand {brand})"


def medication_name(medication: str) -> str:
    match = MEDICATION.match(medication)
    return match["name"] if match else medication


def condition_phrases(sheet: FactSheet, rng: random.Random, says: Statements) -> list[str]:
    """Problem-list items for the sheet's chronic conditions, each recorded as `condition:<key>`."""
    c, items = sheet.conditions, []
    for key, wordings in CONDITIONS.items():
        if c[key]:
            items.append(says.say(f"condition:{key}", rng.choice(wordings)))
    if c["afib"] and c["afib_ablation"]:
        items.append(says.say("afib_ablation", rng.choice(("s/p AF ablation (PVI)", "AF ablation (PVI) done"))))
    if c["afib_reversible"]:
        items.append(says.say("afib_reversible", rng.choice((
            "AF during sepsis, resolved with its cause: reversible, not chronic AF, no anticoagulation",
            "AF only while thyrotoxic, reverted once treated: secondary to a reversible cause"))))
    if "atorvastatin 80 mg PO QHS" in sheet.medications:
        items.append("HLD")
    if c["t2d"]:
        items += [says.say(f"complication:{name}", COMPLICATIONS[name]) for name in sheet.diabetes_complications]
    if sheet.angina:
        items.append(says.say("angina", rng.choice(("stable exertional angina, CCS II", "exertional angina"))))
    if sheet.ischemia:
        items.append(says.say("ischemia", rng.choice(("reversible inferior ischemia on nuclear stress test",
                                                      "stress echo with inducible anterior ischemia"))))
    return items


def event_phrases(sheet: FactSheet, rng: random.Random, says: Statements, dated: bool = True,
                  kinds: tuple[str, ...] = ("mi", "keto", "bleed", "stroke"),
                  wording: float | None = None) -> list[str]:
    """Dated history events (MI, DKA, major bleed, stroke) as `event:<kind>`; undated references when not `dated`.

    A `wording` seed names each kind of event the same way in every record that passes it.
    """
    wordings = {
        "mi": ("NSTEMI", "non-ST elevation MI (NSTEMI)"),
        "keto": ("DKA", "diabetic ketoacidosis (DKA)"),
        "bleed": ("major GI bleed needing 2 u PRBC", "serious bleed (LGIB, transfused)"),
        "stroke": ("ischemic CVA", "embolic CVA"),
    }
    if sheet.scenario == "gi_bleed":
        wordings["bleed"] = ("UGIB from duodenal ulcer",)
    if sheet.scenario == "stroke":
        wordings["stroke"] = ("acute L MCA CVA",)
    days = {"mi": sheet.mi_days_ago, "keto": sheet.keto_days_ago, "bleed": sheet.bleed_days_ago,
            "stroke": sheet.stroke_days_ago}
    items = []
    for kind in kinds:
        if days[kind] is None:
            continue
        name = (rng if wording is None else random.Random(f"{wording}:{kind}")).choice(wordings[kind])
        if not dated:
            items.append(f"h/o {name} (see prior notes)")
            continue
        items.append(says.say(f"event:{kind}", f"{name} on {us_date(days_before(sheet, days[kind]))}"))
    return items


def hedge_phrases(sheet: FactSheet, rng: random.Random, says: Statements, count: int) -> list[str]:
    """Up to `count` hedges, each of a condition the sheet says is absent, recorded as `hedge:<key>`."""
    c = sheet.conditions
    absent = [key for key in HEDGES if not c[key]]
    if c["afib_reversible"]:
        absent.remove("afib")
    if not c["t2d"] and any(value >= 6.5 for value in sheet.lab_values("hba1c")):
        absent.remove("t2d")
    return [says.say(f"hedge:{key}", rng.choice(HEDGES[key])) for key in rng.sample(absent, min(count, len(absent)))]


def social_phrases(sheet: FactSheet, rng: random.Random, says: Statements) -> list[str]:
    """Alcohol, drugs, tobacco and language, each stated whatever its value."""
    drinks = sheet.alcohol_drinks_per_week
    alcohol = "EtOH: denies" if drinks == 0 else f"EtOH: ~{drinks} drinks/wk"
    drugs = "illicits: denies" if sheet.drug_use is None else f"illicits: {DRUG_USE[sheet.drug_use]}"
    if sheet.language == "English":
        language = rng.choice(("speaks English", "primary language English"))
    else:
        language = f"{sheet.language}-speaking, limited English; interpreter used"
    return [says.say("alcohol", alcohol), says.say("drugs", drugs), says.say("smoking", SMOKING[sheet.smoking]),
            says.say("language", language)]


def decision_phrase(sheet: FactSheet, rng: random.Random, says: Statements) -> str:
    if sheet.cannot_decide:
        proxy = rng.choice(("daughter", "son", "spouse"))
        return says.say("decisions", f"Lacks capacity for medical decisions; HCP ({proxy}) decides")
    return says.say("decisions", rng.choice(("Has capacity, makes own decisions", "A&Ox3, decides for self")))


def surgery_phrase(sheet: FactSheet, rng: random.Random, says: Statements, before: str) -> str | None:
    """The abdominal surgery (`abdominal_surgery`), dated a few years before the ISO day `before`."""
    if sheet.abdominal_surgery is None:
        return None
    year = date.fromisoformat(before).year - rng.randint(2, 15)
    return says.say("abdominal_surgery", f"{ABDOMINAL[sheet.abdominal_surgery]} ({year})")


def cardiac_phrases(sheet: FactSheet, says: Statements, study_day: str) -> list[str]:
    """LVEF (`lvef`) and CHADS2 (`chads2`) where the sheet has them."""
    items = []
    if sheet.lvef is not None:
        items.append(says.say("lvef", f"TTE {us_date(study_day)}: LVEF {sheet.lvef}%"))
    if sheet.chads2_documented:
        items.append(says.say("chads2", f"CHADS2 score {sheet.chads2}"))
    return items


def lab_lines(labs: list[Lab], layout: str, says: Statements) -> list[str]:
    """Labs in one of three layouts (`table`, `trend`, `rows`); each lab recorded as `lab:<name>:<day>`."""
    days = sorted({lab.day for lab in labs})
    names = [name for name in LAB_NAMES if any(lab.name == name for lab in labs)]
    if layout == "trend":
        lines = []
        for name in names:
            points = [f"{number(lab.value)} [{us_date(lab.day)}]" for lab in labs if lab.name == name]
            line = f"{LAB_NAMES[name]} ({LAB_UNITS[name]}): " + " -> ".join(points)
            lines.append(line)
            for lab in labs:
                if lab.name == name:
                    says.say(f"lab:{name}:{lab.day}", line)
        return lines
    if layout == "rows":
        lines = []
        for day in days:
            cells = [f"{LAB_NAMES[lab.name]} {number(lab.value)}" for name in names for lab in labs
                     if lab.day == day and lab.name == name]
            lines.append(f"{us_date(day)} >> " + " | ".join(cells))
            for lab in labs:
                if lab.day == day:
                    says.say(f"lab:{lab.name}:{day}", lines[-1])
        return lines
    width = 11
    lines = ["date".ljust(width) + "".join(LAB_NAMES[name].rjust(7) for name in names),
             "units".ljust(width) + "".join(LAB_UNITS[name].rjust(7) for name in names)]
    for day in days:
        values = {lab.name: number(lab.value) for lab in labs if lab.day == day}
        lines.append(us_date(day).ljust(width) + "".join(values.get(name, "--").rjust(7) for name in names))
        for name in values:
            says.say(f"lab:{name}:{day}", lines[-1])
    return lines


# each scenario's complaint, story, principal diagnosis, course and key study, in the held-out wording
SCENARIO_TEXT = {
    "afib_rvr": dict(
        ed="ED: 2 L IV fluid and IV rate control, telemetry bed; TSH within normal range.",
        consults="cardiology/EP; pharmacy for anticoagulation teaching",
        cc=("palpitations x 2 days", "racing, irregular heartbeat since the day before"),
        hpi="Lightheaded with a pounding irregular heartbeat; in the ED HR 140s, irregularly irregular, and the "
            "ECG showed afib w/ RVR without ST elevation.",
        dx="afib w/ RVR",
        course="rate controlled with IV boluses, then oral rate control; HR 70s-80s at rest by HD2, "
               "telemetry without pauses.",
        study="ECG on discharge: controlled ventricular rate, QTc 438 ms."),
    "chf": dict(
        ed="ED: IV diuretic x1 with brisk urine output, placed on 2 L NC, admitted to step-down.",
        consults="HF cardiology; nutrition (2 g sodium teaching)",
        cc=("worsening DOE and orthopnea", "SOB, leg swelling"),
        hpi="Two weeks of DOE, three-pillow orthopnea and a 10 lb weight gain after dietary indiscretion. "
            "CXR with vascular congestion and small bilateral effusions; BNP 1840.",
        dx="acute on chronic HFrEF exacerbation",
        course="diuresed with IV furosemide (Lasix), net negative 4.2 L; back to PO diuretic on HD4, weight down "
               "to 78 kg, Cr followed daily.",
        study="CXR HD4: interval clearing of vascular congestion."),
    "nstemi": dict(
        ed="ED: pressure eased at rest on arrival, serial ECGs unchanged, admitted to cardiology step-down.",
        consults="cardiology; cardiac rehab",
        cc=("substernal chest pressure at rest", "chest pressure radiating to the L arm"),
        hpi="Forty minutes of pressure-like substernal discomfort at rest with diaphoresis. Troponin I 0.8 rising "
            "to 2.3 ng/mL; ECG without ST elevation.",
        dx="NSTEMI",
        course="medically managed per cardiology, outpatient LHC arranged; pain-free after HD1, walked the halls "
               "without symptoms.",
        study="Troponin I peak 2.3 ng/mL on HD1, downtrending at discharge."),
    "stroke": dict(
        ed="ED: code stroke called, CT head without bleed, CTA with L M2 cutoff not amenable to thrombectomy; "
           "admitted to the stroke unit.",
        consults="stroke neurology; PT/OT; speech-language pathology",
        cc=("R-sided weakness and word-finding trouble", "new R arm and leg weakness"),
        hpi="Woke with R arm/leg weakness and trouble finding words; last known well the night before, outside "
            "the thrombolysis window. NIHSS 6 in the ED.",
        dx="acute L MCA CVA",
        course="neuro checks q4h, BP allowed to run higher for 48 h then normalized; PT/OT/speech followed, "
               "aphasia improving, acute rehab recommended.",
        study="MRI brain HD1: acute infarct in the L MCA territory, no hemorrhage."),
    "gi_bleed": dict(
        ed="ED: two large-bore IVs, 1 u PRBC started, IV PPI bolus, admitted to the ICU overnight.",
        consults="GI (EGD HD1); nutrition",
        cc=("black tarry stools x 3 days", "melena and lightheadedness"),
        hpi="Three days of melena with presyncope on standing; Hgb down several grams from baseline. EGD on HD1: "
            "duodenal ulcer with a visible vessel, clipped.",
        dx="UGIB from duodenal ulcer",
        course="IV PPI BID then PO, transfused 2 u PRBC, no rebleeding over 72 h; diet advanced, Hgb stable.",
        study="EGD HD1: 1 cm duodenal bulb ulcer, visible vessel, clipped; H. pylori biopsies sent."),
    "dka": dict(
        ed="ED: 3 L LR, insulin gtt started, K repleted, admitted to the ICU for hourly checks.",
        consults="endocrine; diabetes education",
        cc=("N/V and polyuria", "vomiting, thirst and high sugars at home"),
        hpi="Three days of nausea, vomiting and polyuria after missed home diabetes meds. Anion gap 26, "
            "beta-hydroxybutyrate 6.1, venous pH 7.18.",
        dx="DKA",
        course="insulin gtt per protocol with fluids and K repletion; gap closed in 14 h, bridged to SC insulin, "
               "home regimen at discharge after diabetes teaching.",
        study="VBG at 14 h: pH 7.36, anion gap 11."),
    "sbo": dict(
        ed="ED: NGT placed with 1.2 L bilious output, IV fluids, surgery at the bedside within the hour.",
        consults="general surgery; nutrition",
        cc=("crampy abdominal pain, no flatus", "bilious emesis and distension"),
        hpi="Crampy periumbilical pain with bilious emesis and no flatus for a day. CT A/P: SBO with a transition "
            "point in the RLQ, likely adhesive.",
        dx="SBO",
        course="NGT decompression and bowel rest, serial exams with gen surg; flatus on HD3, NGT out, diet "
               "advanced, no operation needed.",
        study="KUB HD3: resolving small bowel dilation, gas in the colon."),
    "pneumonia": dict(
        ed="ED: blood cultures x2, lactate 1.6, first antibiotic dose within the hour, admitted to the floor.",
        consults="none beyond the primary team; respiratory therapy",
        cc=("fever and productive cough", "cough with rusty sputum, fevers"),
        hpi="Four days of fevers to 38.9 C, productive cough and R pleuritic pain. CXR: RLL consolidation.",
        dx="CAP (RLL)",
        course="ceftriaxone + azithromycin, then PO cefpodoxime to finish 5 days; weaned to room air on HD2, "
               "afebrile 48 h before discharge.",
        study="CXR on admission: dense RLL consolidation, no effusion."),
}
# why a home drug is held on admission (it is resumed at discharge)
HOLD_REASONS = {
    "metformin": "held on admission (IV contrast, NPO)", "lisinopril": "held on admission for soft BPs",
    "amlodipine": "held on admission for soft BPs", "metoprolol succinate": "held on admission for soft BPs",
    "isosorbide mononitrate": "held on admission for soft BPs", "furosemide": "held on admission for poor PO intake",
    "apixaban": "held on admission ahead of a procedure", "warfarin": "held on admission ahead of a procedure",
    "insulin glargine": "held on admission while NPO", "sertraline": "held on admission while NPO",
    "quetiapine": "held on admission for sedation", "olanzapine": "held on admission for sedation",
    "aspirin": "held on admission while NPO",
}


def exam_lines(sheet: FactSheet, rng: random.Random) -> list[str]:
    """Admission vitals and a short exam (filler that states no criterion)."""
    heart_rate = rng.randint(128, 152) if sheet.scenario == "afib_rvr" else rng.randint(64, 104)
    temperature = 38.6 if sheet.scenario == "pneumonia" else round(rng.uniform(36.4, 37.4), 1)
    vitals = (f"T {temperature} | HR {heart_rate} | BP {rng.randint(112, 136)}/{rng.randint(64, 84)} | "
              f"RR {rng.randint(14, 22)} | SpO2 {rng.randint(91, 99)}% RA")
    rhythm = "irregularly irregular" if sheet.conditions["afib"] else "regular rate and rhythm"
    return [vitals,
            f"Gen: {rng.choice(('NAD', 'uncomfortable but conversant', 'tired-appearing'))}",
            f"CV: {rhythm}, {rng.choice(('no murmur', 'soft systolic flow murmur'))}",
            f"Lungs: {'crackles RLL' if sheet.scenario == 'pneumonia' else 'clear bilaterally'}",
            f"Abd: {'distended, tympanitic' if sheet.scenario == 'sbo' else 'soft, non-tender'}",
            f"Ext: {'2+ pitting edema to the knees' if sheet.scenario == 'chf' else 'warm, no edema'}",
            f"Neuro: {'R hemiparesis 3/5, expressive aphasia' if sheet.scenario == 'stroke' else 'non-focal'}"]


def follow_up_lines(sheet: FactSheet, rng: random.Random) -> list[str]:
    """Appointments after discharge (the specialist follows the scenario)."""
    specialist = {"afib_rvr": "cardiology/EP", "chf": "HF clinic", "nstemi": "cardiology", "stroke": "stroke neurology",
                  "gi_bleed": "GI", "dka": "endocrine", "sbo": "general surgery", "pneumonia": "pulmonary"}
    return [f"- PCP in {rng.choice(('5-7 days', '1 week', '10 days'))}: recheck CBC and BMP",
            f"- {specialist[sheet.scenario]} in {rng.choice(('2 weeks', '3-4 weeks', '1 month'))}",
            "- return to the ED for chest pain, SOB, bleeding, new weakness or fever"]


def review_of_systems(sheet: FactSheet, rng: random.Random) -> list[str]:
    """Positive findings of the scenario, a few negatives, and the usual closing line."""
    positives = {"afib_rvr": "palpitations, lightheadedness", "chf": "DOE, orthopnea, leg swelling",
                 "nstemi": "chest pressure, diaphoresis", "stroke": "R weakness, word-finding trouble",
                 "gi_bleed": "melena, presyncope", "dka": "polyuria, polydipsia, vomiting",
                 "sbo": "abdominal pain, emesis, obstipation", "pneumonia": "fever, cough, pleuritic pain"}
    negatives = rng.sample(("headache", "vision change", "rash", "dysuria", "joint pain", "hematuria",
                            "night sweats", "sore throat", "weight loss"), 5)
    return [f"(+) {positives[sheet.scenario]}", f"(-) {', '.join(negatives)}",
            rng.choice(("12-point ROS otherwise negative.", "All other systems reviewed, negative."))]


def instruction_lines(sheet: FactSheet, rng: random.Random) -> list[str]:
    """What the patient is told at discharge (by scenario and medications; states no criterion)."""
    by_scenario = {
        "afib_rvr": "Call for a racing heartbeat with dizziness or fainting.",
        "chf": "Keep to 2 g sodium and 1.5-2 L of fluid a day.",
        "nstemi": "Cardiac rehab referral placed; no heavy lifting for 2 weeks.",
        "stroke": "No driving until cleared by neurology; keep up the home exercise program from PT/OT.",
        "gi_bleed": "Avoid NSAIDs (ibuprofen, naproxen); call for black stools or vomiting blood.",
        "dka": "Sick-day rules reviewed with the diabetes educator; do not skip diabetes medicines.",
        "sbo": "Advance diet slowly; call for vomiting, bloating or no gas for a day.",
        "pneumonia": "Finish the antibiotic course; incentive spirometer 10 times an hour while awake.",
    }
    lines = [rng.choice(("Take medicines exactly as listed; bring this list to every visit.",
                         "Use the medication list above; it replaces any older list at home.")),
             by_scenario[sheet.scenario]]
    if sheet.conditions["heart_failure"]:
        lines.append("Weigh every morning; call for a gain of 3 lb in a day or 5 lb in a week.")
    if sheet.conditions["t2d"]:
        lines.append("Check fingerstick sugars before meals and at bedtime and keep a log.")
    if any(name.startswith("warfarin") for name in sheet.medications):
        lines.append("INR check in 3-5 days at the anticoagulation clinic.")
    lines.append(rng.choice(("Activity as tolerated.", "Walk daily, increase slowly.")))
    return [f"{index}. {line}" for index, line in enumerate(lines, 1)]


def discharge_exam(sheet: FactSheet, rng: random.Random) -> str:
    """Condition on the day of discharge (filler)."""
    mobility = rng.choice(("ambulating independently", "walking with a cane", "up with PT"))
    return (f"Day of discharge: afebrile, HR {rng.randint(62, 88)}, BP {rng.randint(108, 134)}/{rng.randint(62, 82)}, "
            f"SpO2 {rng.randint(94, 99)}% RA; {mobility}, "
            f"tolerating {rng.choice(('a regular diet', 'a cardiac diet', 'a soft diet'))}.")
