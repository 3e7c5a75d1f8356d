"""What a question about a simulated patient should be answered: the truth checker.

Any teacher's item (the reference teacher's or a language model's) is a question in free text with
an answer. `expected_answer` reads the question for the one fact it asks about (a diagnosis, a drug,
an event and its time window, a habit, a lab and which of its values, a vital sign, a score) and
computes that fact's answer from the patient's fact sheet: "Yes"/"No", a number, or "NA" when the
note does not hold it. A question it cannot read, or one that asks about two facts at once, is
*unverifiable* (None), never guessed: teacher precision counts only what can be checked, and the
share that could be checked is reported beside it.

The rules follow the teacher prompts: a serious or chronic diagnosis not in the note is answered
No (silence in a discharge summary means absence), a number not in the note NA.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from clinical_distil.answers import normalize_answer, parse_number
from simulation.fact_sheets import FactSheet

Answer = str | float  # "Yes", "No", "NA" or a number


def _any(*words: str) -> re.Pattern:
    return re.compile(r"(?<![a-z])(" + "|".join(words) + r")(?![a-z])", re.IGNORECASE)


CONDITIONS: dict[str, re.Pattern] = {
    "afib": _any("atrial fibrillation", "afib", "a-fib", "af", "paf"),
    "t2d": _any("diabetes", "diabetes mellitus", "diabetic", "dm2", "t2dm", "niddm", "type 2 dm"),
    "hypertension": _any("hypertension", "htn", "high blood pressure", "hypertensive"),
    "heart_failure": _any("heart failure", "chf", "hfref", "congestive heart failure", "systolic dysfunction"),
    "cad": _any("coronary artery disease", "cad", "coronary disease", "coronary atherosclerosis"),
    "mdd": _any("depression", "depressive disorder", "mdd", "major depression"),
    "schizophrenia": _any("schizophrenia", "schizoaffective"),
    "bipolar": _any("bipolar", "bpad", "manic depressive"),
    "hemorrhagic": _any("von willebrand", "vwd", "bleeding disorder", "bleeding tendency", "coagulopathy",
                        "blood dyscrasia"),
    "peptic_ulcer_disease": _any("peptic ulcer", "pud", "duodenal ulcer", "gastric ulcer", "ulcer disease"),
    "surgical_valvular_disease": _any("aortic stenosis", "valve replacement", "valvular", "avr", "savr"),
    "dementia": _any("dementia", "alzheimer", "alzheimer's"),
    "abdominal_surgery": _any("abdominal surgery", "intra-abdominal surgery", "colectomy", "cholecystectomy",
                              "laparotomy", "bowel resection", "small bowel resection"),
    "diabetes_complications": _any("diabetic neuropathy", "diabetic retinopathy", "diabetic nephropathy",
                                   "complications? of (his|her|their)? ?diabetes", "diabetes-related complication",
                                   "transmetatarsal amputation", "amputation"),
    "afib_ablation": _any("ablation", "pulmonary vein isolation", "pvi"),
}

EVENTS: dict[str, re.Pattern] = {
    "mi": _any("myocardial infarction", "heart attack", "nstemi", "stemi", "mi"),
    "stroke": _any("stroke", "strokes", "cva", "cerebrovascular accident", "ischemic stroke"),
    "bleed": _any("gi bleed", "gastrointestinal bleed", "gastrointestinal bleeding", "gi bleeding", "ugib",
                  "bleeding episode", "serious bleeding", "hemorrhage", "bleed"),
    "keto": _any("ketoacidosis", "dka"),
}

DRUGS: dict[str, re.Pattern] = {
    "aspirin": _any("aspirin", "asa", "acetylsalicylic acid"),
    "apixaban": _any("apixaban", "eliquis"),
    "warfarin": _any("warfarin", "coumadin"),
    "anticoagulant": _any("anticoagulant", "anticoagulation", "anticoagulated", "blood thinner"),
    "metformin": _any("metformin"),
    "insulin": _any("insulin", "insulin glargine", "lantus"),
    "furosemide": _any("furosemide", "lasix", "loop diuretic"),
    "metoprolol": _any("metoprolol", "beta blocker", "beta-blocker"),
    "lisinopril": _any("lisinopril", "ace inhibitor"),
    "atorvastatin": _any("atorvastatin", "statin", "lipitor"),
    "sertraline": _any("sertraline", "ssri", "antidepressant"),
    "antipsychotic": _any("quetiapine", "olanzapine", "antipsychotic"),
    "supplement": _any("supplement", "supplements", "fish oil", "vitamin", "vitamins", "vitamin d", "multivitamin",
                       "calcium", "magnesium"),
}

LABS: dict[str, re.Pattern] = {
    "creatinine": _any("creatinine", "creat", "cr"),
    "hba1c": _any("hba1c", "a1c", "hemoglobin a1c", "glycated hemoglobin", "glycosylated hemoglobin"),
    "platelets": _any("platelet", "platelets", "platelet count", "plt"),
    "hemoglobin": _any("hemoglobin", "hgb", "hb"),
    "wbc": _any("white blood cell", "white count", "wbc", "leukocyte", "white cell count"),
    "glucose": _any("glucose", "blood sugar"),
    "ast": _any("ast", "aspartate aminotransferase", "sgot"),
    "alt": _any("alt", "alanine aminotransferase", "sgpt"),
    "bilirubin": _any("bilirubin", "tbili", "total bilirubin"),
}
# numbers a simulated note never holds: a question about one is answered NA
ABSENT_NUMBERS = _any("troponin", "ldl", "hdl", "cholesterol", "triglyceride", "triglycerides", "inr", "tsh",
                      "bnp", "nt-probnp", "lactate", "potassium", "sodium", "albumin", "ferritin", "bun", "urea",
                      "magnesium level", "phosphate", "lipase", "d-dimer", "psa", "pt", "ptt", "bicarbonate",
                      "chloride", "crp", "esr", "procalcitonin", "weight", "height", "bmi", "respiratory rate",
                      "pain score")
# facts a simulated note never records: a yes/no question about one is answered NA
UNKNOWABLE = _any("vaccine", "vaccinated", "vaccination", "immunization", "immunized", "hepatitis c", "hiv",
                  "colonoscopy", "firearm", "gun", "advance directive", "veteran", "traveled", "travelled", "travel",
                  "dexa", "bone density", "tetanus", "mammogram", "pap smear", "allergy testing", "blood donor",
                  "organ donor", "sleep apnea study", "genetic testing")
FAMILY = _any("father", "mother", "family", "sibling", "sister", "brother", "parent", "parents", "son", "daughter's")
VITALS: dict[str, re.Pattern] = {
    "heart_rate": _any("heart rate", "pulse", "hr"),
    "temperature": _any("temperature", "temp"),
    "systolic": _any("systolic", "systolic blood pressure", "blood pressure"),
    "oxygen_saturation": _any("oxygen saturation", "o2 sat", "spo2", "saturation"),
}
HIGHEST = _any("highest", "maximum", "max", "peak", "greatest", "largest")
LOWEST = _any("lowest", "minimum", "min", "nadir", "smallest")
FIRST = _any("first", "initial", "on admission", "admission", "earliest")
LAST = _any("last", "latest", "most recent", "at discharge", "final", "discharge")
NEGATIVE = _any("not", "no longer", "unable", "cannot", "lack", "lacks", "without")
WINDOW = re.compile(r"(?:in|within|during|over) the (?:past|last|previous|prior) (\d+|one|two|three|six|twelve)? ?"
                    r"(day|days|week|weeks|month|months|year|years)", re.IGNORECASE)
THIS_ADMISSION = _any("this admission", "this hospitalization", "during admission", "current admission",
                      "this hospital stay")
COMPARISON = re.compile(r"(above|greater than|more than|over|exceed(?:ed|s)?|higher than|>|below|less than|under|"
                        r"lower than|<)\s*(\d+(?:\.\d+)?)", re.IGNORECASE)
WORD_NUMBERS = {"one": 1, "two": 2, "three": 3, "six": 6, "twelve": 12}
UNIT_DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


@dataclass
class Expected:
    answer: Answer
    concept: str  # what the question was read as asking about


def _window_days(question: str) -> float | None:
    """The look-back of a question in days (None: ever)."""
    if THIS_ADMISSION.search(question):
        return 10
    match = WINDOW.search(question)
    if not match:
        return None
    count = match.group(1)
    count = 1 if not count else WORD_NUMBERS.get(count.lower()) or int(count)
    return count * UNIT_DAYS[match.group(2).lower().rstrip("s")]


def _event_days(sheet: FactSheet, event: str) -> int | None:
    return {"mi": sheet.mi_days_ago, "stroke": sheet.stroke_days_ago, "bleed": sheet.bleed_days_ago,
            "keto": sheet.keto_days_ago}[event]


def _yes(flag: bool) -> str:
    return "Yes" if flag else "No"


def _drug_truth(sheet: FactSheet, drug: str) -> bool:
    meds = [med.lower() for med in sheet.medications]
    if drug == "supplement":
        return bool(sheet.supplements)
    if drug == "anticoagulant":
        return any(med.startswith(("apixaban", "warfarin")) for med in meds)
    if drug == "antipsychotic":
        return any(med.startswith(("quetiapine", "olanzapine")) for med in meds)
    return any(med.startswith(drug) for med in meds)


def _lab_value(sheet: FactSheet, lab: str, question: str) -> Answer | None:
    draws = sorted((item.day, item.value) for item in sheet.labs if item.name == lab)
    if not draws:
        return "NA"
    values = [value for _, value in draws]
    if HIGHEST.search(question):
        return max(values)
    if LOWEST.search(question):
        return min(values)
    if FIRST.search(question) and not LAST.search(question):
        return [value for day, value in draws if day == draws[0][0]][0]
    if LAST.search(question) and not FIRST.search(question):
        return [value for day, value in draws if day == draws[-1][0]][-1]
    return values[0] if len(set(values)) == 1 else None  # which of several values is meant is not said


def _single(matches: list[str]) -> str | None:
    return matches[0] if len(set(matches)) == 1 else None


class _OtherKind:
    """A reader's reply to a question about another kind of fact: the next reader tries it (None: unverifiable)."""


OTHER_KIND = _OtherKind()
Reading = Expected | None | _OtherKind


def _lab_answer(sheet: FactSheet, lab: str, text: str, comparison: re.Match | None) -> Expected | None:
    """A lab's value, or whether its values cross the question's threshold."""
    if comparison:
        draws = [item.value for item in sheet.labs if item.name == lab]
        if not draws:
            return Expected("NA", f"lab:{lab} comparison")
        threshold = float(comparison.group(2))
        above = comparison.group(1).lower() in ("above", "greater than", "more than", "over", "exceed", "exceeded",
                                                "exceeds", "higher than", ">")
        flag = max(draws) > threshold if above else min(draws) < threshold
        if min(abs(value - threshold) for value in draws) < 1e-9:
            return None  # on the threshold: wording decides
        return Expected(_yes(flag), f"lab:{lab} {'>' if above else '<'} {threshold:g}")
    value = _lab_value(sheet, lab, text)
    return None if value is None else Expected(value, f"lab:{lab}")


def _number_answer(text: str, lowered: str, comparison: re.Match | None, sheet: FactSheet,
                   vitals: dict[str, float] | None) -> Reading:
    """A question about a number: a lab, a number no note holds, the LVEF, the CHADS2 score, drinks per week, a
    vital sign."""
    labs = [name for name, pattern in LABS.items() if pattern.search(text)]
    if "hba1c" in labs and not re.search(r"hemoglobin(?! a1c)|\bhgb\b", lowered):
        labs = [name for name in labs if name != "hemoglobin"]  # "hemoglobin A1c" names one lab
    if ABSENT_NUMBERS.search(text) and not labs:
        return Expected("NA", "absent number")
    if labs:
        lab = _single(labs)
        return None if lab is None else _lab_answer(sheet, lab, text, comparison)
    if re.search(r"\b(lvef|ejection fraction|ef)\b", lowered):
        if sheet.lvef is None:
            return Expected("NA", "lvef")
        return Expected(float(sheet.lvef), "lvef") if sheet.lvef < 55 else None  # shown as ">55%"
    if re.search(r"chads", lowered):
        return Expected(float(sheet.chads2) if sheet.chads2_documented else "NA", "chads2")
    if re.search(r"how many .*(drinks?|alcohol)|(drinks?|alcohol).* per week", lowered) and \
            not re.search(r"\b(more than|over|exceed)", lowered):
        return Expected(float(sheet.alcohol_drinks_per_week), "alcohol per week")
    vital = _single([name for name, pattern in VITALS.items() if pattern.search(text)])
    if vital and re.search(r"\b(what|how)\b", lowered):
        if vitals is None or vital not in vitals:
            return None
        return Expected(vitals[vital], f"vital:{vital}")
    return OTHER_KIND


def _habit_answer(lowered: str, comparison: re.Match | None, negative: bool, sheet: FactSheet) -> Reading:
    """A yes/no question about decision-making, language, tobacco, alcohol or illicit drugs."""
    if re.search(r"(make|making) (his|her|their|own)? ?(medical )?decisions|decision-making capacity|"
                 r"capacity to make|decisional capacity|health care proxy makes", lowered):
        able = not sheet.cannot_decide
        return Expected(_yes(not able if negative else able), "makes decisions")
    if re.search(r"\b(english)\b", lowered) and not re.search(r"interpreter|translator", lowered):
        english = sheet.language == "English"
        return Expected(_yes(not english if negative else english), "english")
    if re.search(r"interpreter|translator", lowered):
        return Expected(_yes(sheet.language != "English"), "interpreter")
    if re.search(r"smok|tobacco|cigarette", lowered):
        if re.search(r"current|currently|active|still", lowered):
            return Expected(_yes(sheet.smoking.startswith("current")), "current smoker")
        if re.search(r"ever|history of|former|previously", lowered):
            return Expected(_yes(sheet.smoking != "never smoker"), "ever smoked")
        return None
    if re.search(r"alcohol|etoh|drink", lowered):
        drinks = sheet.alcohol_drinks_per_week
        if comparison:
            threshold = float(comparison.group(2))
            above = comparison.group(1).lower() not in ("below", "less than", "under", "lower than", "<")
            return Expected(_yes(drinks > threshold if above else drinks < threshold), "alcohol threshold")
        if re.search(r"abuse|heavy|excess|limit", lowered):
            limit = 14 if sheet.sex == "M" else 7
            return Expected(_yes(drinks > limit), "alcohol abuse")
        return Expected(_yes(drinks > 0), "drinks alcohol")
    if re.search(r"illicit|recreational|drug use|substance|cocaine|heroin|methamphetamine|marijuana|ivdu", lowered):
        return Expected(_yes(sheet.drug_use is not None), "illicit drugs")
    return OTHER_KIND


def _fact_answer(text: str, lowered: str, negative: bool, sheet: FactSheet) -> Expected | None:
    """A yes/no question about one drug taken, one event (ever or in a time window) or one condition."""
    c = sheet.conditions
    drugs = [name for name, pattern in DRUGS.items() if pattern.search(text)]
    events = [name for name, pattern in EVENTS.items() if pattern.search(text)]
    conditions = [name for name, pattern in CONDITIONS.items() if pattern.search(text)]
    if "hemorrhagic" in conditions and "bleed" in events:
        events.remove("bleed")  # "bleeding disorder" is the diathesis, not an episode
    if "diabetes_complications" in conditions and "t2d" in conditions:
        conditions.remove("t2d")
    if "afib_ablation" in conditions and "afib" in conditions:
        conditions.remove("afib")
    if drugs and (re.search(r"\b(tak|on|prescrib|receiv|discharg|medication)", lowered)):
        if len(set(drugs)) > 1 or events or conditions:
            return None
        flag = _drug_truth(sheet, drugs[0])
        return Expected(_yes(not flag if negative else flag), f"drug:{drugs[0]}")
    found = [("event", name) for name in events] + [("condition", name) for name in conditions]
    if len(found) != 1:
        return None
    kind, name = found[0]
    window = _window_days(text)
    if kind == "event":
        days = _event_days(sheet, name)
        if window is None:
            flag = days is not None
        else:
            if days is not None and abs(days - window) <= 15:
                return None  # at the edge of the window: the note's rounding decides
            flag = days is not None and days <= window
        if name == "mi" and re.search(r"coronary", lowered):
            return None
        return Expected(_yes(not flag if negative else flag), f"event:{name}" + (f" {window:g}d" if window else ""))
    if window is not None:
        return None  # a time-bound question about a chronic condition: not in the sheet
    if name == "afib" and c["afib_reversible"]:
        return None  # transient AF from a reversible cause: Yes or No depends on the reader's definition
    flag = {"abdominal_surgery": sheet.abdominal_surgery is not None,
            "diabetes_complications": bool(sheet.diabetes_complications)}.get(name, c.get(name, False))
    return Expected(_yes(not flag if negative else flag), f"condition:{name}")


def expected_answer(question: str, sheet: FactSheet, vitals: dict[str, float] | None = None) -> Expected | None:
    """The answer the fact sheet gives to `question`, or None when the question cannot be read for one fact.

    `vitals` are the note's vital signs (they are drawn when the note is rendered, not kept on the sheet).
    """
    text = " ".join(str(question).split())
    lowered = text.lower()
    comparison = COMPARISON.search(text)
    reading = _number_answer(text, lowered, comparison, sheet, vitals)
    if reading is not OTHER_KIND:
        return reading
    # yes/no questions
    if UNKNOWABLE.search(text):
        return Expected("NA", "not recorded")
    if FAMILY.search(text):
        return None  # about a relative: the family history is free text the sheet does not hold
    negative = bool(NEGATIVE.search(text))
    reading = _habit_answer(lowered, comparison, negative, sheet)
    if reading is not OTHER_KIND:
        return reading
    return _fact_answer(text, lowered, negative, sheet)


def answer_matches(answer, expected: Answer) -> bool:
    """Whether a teacher's answer, read as stage B reads it ("1.5 mg/dL", "yes", "N/A"), equals the expected
    one; numbers within rounding."""
    if isinstance(expected, (int, float)) and not isinstance(expected, bool):  # whole-number labs are ints
        number = parse_number(answer)
        return number is not None and abs(number - expected) < 1e-6 * max(1.0, abs(expected))
    return normalize_answer(answer) == expected


def vitals_of(mentions) -> dict[str, float]:
    return {mention.key.split(":", 1)[1]: float(mention.value) for mention in mentions
            if mention.key.startswith("vital:") and mention.value is not None}

