"""Discharge summaries rendered with the variety of real notes, each fact's wording recorded.

The bundled samples use one fixed wording (simulation/notes.py). The known-answer corpus needs
notes a model cannot read by position alone, so this renderer varies what real notes vary:
section names and order, phrasings and abbreviations of each diagnosis and drug, explicit
negations ("denies tobacco", "no history of stroke"), historical mentions with their timing,
lab formats (MIMIC's `Creat-1.4`, `Creatinine 1.4 mg/dL`, `Cr 1.4`), vital signs, typos in the
narrative, and longer notes (review of systems, problem-based course, procedures).

Every fact the note states is recorded as a *mention*: the exact text of the note that states it
(and, for a number, its value). The reference teacher quotes mentions; the truth checker uses them
to tell "in the note" from "not in the note". Typos never touch a mention, so a fact stays findable.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date

from simulation.fact_sheets import SCENARIOS, FactSheet, Lab
from simulation.notes import DateStyle, _ago
from simulation.varied_wording import (
    ALLERGIES,
    CONDITION_WORDS,
    DRUG_WORDS,
    LAB_FORMATS,
    NEGATION_WORDS,
    PRESENTING_EVENTS,
    ROS_LINES,
    SECTION_NAMES,
    SECTION_TITLES,
    TYPO_WORDS,
)


@dataclass
class Mention:
    key: str  # what the text states: cond:afib, neg:afib, med:aspirin, lab:creatinine, vital:heart_rate ...
    text: str  # exactly as it stands in the note
    section: str  # the canonical section title it stands in
    value: float | None = None  # for a number


@dataclass
class RenderedNote:
    text: str
    mentions: list[Mention] = field(default_factory=list)

    def find(self, prefix: str) -> list[Mention]:
        return [mention for mention in self.mentions if mention.key == prefix or mention.key.startswith(prefix + ":")]


class _Writer:
    """Builds a note section by section, recording every fact's exact text."""

    def __init__(self, rng: random.Random, typo_rate: float):
        self.rng, self.typo_rate = rng, typo_rate
        self.sections: list[tuple[str, list[str]]] = []
        self.mentions: list[Mention] = []
        self.section_key = ""

    def start(self, key: str, header: str | None = None) -> None:
        """A new section; header "" for the untitled block at the top of a note."""
        self.section_key = key
        title = self.rng.choice(SECTION_NAMES[key]) if header is None else header
        self.sections.append((title, []))

    def line(self, text: str) -> None:
        self.sections[-1][1].append(text)

    def fact(self, key: str, text: str, value: float | None = None) -> str:
        self.mentions.append(Mention(key, text, SECTION_TITLES[self.section_key], value))
        return text

    def narrative(self, text: str) -> str:
        """Free text that states no fact of the sheet: the only place typos go."""
        words = text.split(" ")
        for position, word in enumerate(words):
            bare = word.strip(".,;:").lower()
            if bare in TYPO_WORDS and self.rng.random() < self.typo_rate:
                words[position] = word.replace(bare, TYPO_WORDS[bare]) if word.islower() else word
        return " ".join(words)

    def render(self, colon_style: str) -> str:
        blocks = []
        for title, lines in self.sections:
            if not title:
                blocks.append("\n".join(lines))
            elif colon_style == "inline" and len(lines) == 1:
                blocks.append(f"{title}: {lines[0]}")
            else:
                blocks.append(f"{title}:\n" + "\n".join(lines))
        return "\n\n".join(blocks) + "\n"


def _condition_lines(sheet: FactSheet, writer: _Writer, rng: random.Random) -> None:
    c = sheet.conditions
    bullet = rng.choice(["- ", "* ", "", "# "])
    items: list[tuple[str, str]] = []  # (key, text)
    for name in ("hypertension", "t2d", "afib", "heart_failure", "cad", "mdd", "schizophrenia", "bipolar",
                 "hemorrhagic", "surgical_valvular_disease", "dementia"):
        if c.get(name):
            text = rng.choice(CONDITION_WORDS[name])
            if name == "t2d" and sheet.diabetes_complications:
                joined = " and ".join(sheet.diabetes_complications)
                text += rng.choice([", complicated by ", " c/b ", " with "]) + joined
            if name == "afib" and c["afib_ablation"]:
                text += rng.choice([", s/p pulmonary vein isolation ablation", " s/p PVI ablation",
                                    ", status post catheter ablation (PVI)"])
            if name == "cad" and sheet.angina:
                text += rng.choice([", stable angina on exertion", " with exertional angina"])
            items.append((f"cond:{name}", text))
    if c["afib_reversible"]:
        items.append(("cond:afib_reversible", rng.choice([
            "Transient atrial fibrillation in the setting of sepsis, resolved; not anticoagulated",
            "AF during sepsis, resolved with treatment of the infection, no anticoagulation"])))
    if c["peptic_ulcer_disease"] and sheet.scenario != "gi_bleed":
        items.append(("cond:peptic_ulcer_disease", rng.choice(CONDITION_WORDS["peptic_ulcer_disease"])))
    if sheet.mi_days_ago is not None and sheet.mi_days_ago > 10:
        items.append(("event:mi", f"{rng.choice(['NSTEMI', 'Non-ST elevation MI', 'Myocardial infarction (NSTEMI)'])}"
                                  f" {_ago(sheet.mi_days_ago)}, medically managed"))
    if sheet.ischemia:
        items.append(("cond:ischemia", rng.choice(["Positive nuclear stress test with reversible inferior ischemia",
                                                   "Reversible ischemia on stress MIBI"])))
    if c["prior_stroke"] and sheet.stroke_days_ago and sheet.stroke_days_ago > 10:
        items.append(("event:stroke", f"{rng.choice(['Ischemic stroke', 'CVA (ischemic)', 'Left MCA stroke'])} "
                                      f"{_ago(sheet.stroke_days_ago)} with residual mild dysarthria"))
    if sheet.bleed_days_ago is not None and sheet.bleed_days_ago > 10:
        items.append(("event:bleed", f"{rng.choice(['Upper GI bleed', 'UGIB', 'GI hemorrhage'])} "
                                     f"{_ago(sheet.bleed_days_ago)} requiring transfusion"))
    if sheet.keto_days_ago is not None and sheet.keto_days_ago > 10:
        items.append(("event:keto", f"{rng.choice(['Diabetic ketoacidosis', 'DKA'])} {_ago(sheet.keto_days_ago)}"))
    rng.shuffle(items)
    if not items:
        writer.line(rng.choice(["None significant", "No significant past medical history", "Unremarkable"]))
    for key, text in items:
        writer.line(bullet + writer.fact(key, text))


def _negations(sheet: FactSheet, rng: random.Random) -> list[str]:
    c = dict(sheet.conditions)
    absent = [name for name in NEGATION_WORDS if not c.get(name) and not (name == "afib" and c["afib_reversible"])]
    return sorted(rng.sample(absent, min(len(absent), rng.randint(1, 3)))) if absent else []


def _lab_mentions(sheet: FactSheet, style: DateStyle, writer: _Writer, rng: random.Random) -> None:
    fmt = rng.choice(["mimic", "long", "short"])
    by_day: dict[str, list[Lab]] = {}
    for lab in sheet.labs:
        by_day.setdefault(lab.day, []).append(lab)
    for number, day in enumerate(sorted(by_day)):
        labs = by_day[day]
        when = style(day) if fmt == "mimic" else rng.choice([style(day), "On admission" if number == 0 else
                                                            f"Hospital day {number + 1}"])
        if fmt == "mimic":
            pieces = []
            for lab in labs:
                piece = f"{LAB_FORMATS[lab.name][0]}-{lab.value}"
                writer.fact(f"lab:{lab.name}", piece, lab.value)
                pieces.append(piece)
            writer.line(f"{when} 06:40AM BLOOD " + " ".join(pieces))
        else:
            pieces = []
            for lab in labs:
                piece = LAB_FORMATS[lab.name][1 if fmt == "long" else 2].format(v=lab.value)
                writer.fact(f"lab:{lab.name}", piece, lab.value)
                pieces.append(piece)
            writer.line(f"{when}: " + ", ".join(pieces))


def _opening(sheet: FactSheet, style: DateStyle, writer: _Writer, rng: random.Random, complaint: str) -> None:
    """The untitled block at the top (dates, service, allergies), the chief complaint and, in some notes, the
    procedures."""
    writer.start("header", header="")
    writer.line((f"Admission Date:  {style(sheet.admit)}              Discharge Date:   "
                                f"{style(sheet.discharge)}\n\nDate of Birth:  "
                                f"{style(date(date.fromisoformat(sheet.admit).year - sheet.age, 1, 1))}"
                                f"             Sex:   {sheet.sex}\n\nService: "
                                f"{rng.choice(['MEDICINE', 'CARDIOLOGY', 'MEDICINE', 'NEUROLOGY', 'SURGERY'])}\n\n"
                                f"Allergies:\n{rng.choice(ALLERGIES)}"))
    writer.start("complaint")
    writer.line(complaint.capitalize() if rng.random() < 0.7 else complaint)
    if rng.random() < 0.6:
        writer.start("procedures")
        writer.line({"nstemi": "Cardiac catheterization with drug-eluting stent to the LAD",
                     "gi_bleed": "EGD with clipping of a duodenal ulcer", "stroke": "MRI brain",
                     "chf": "Transthoracic echocardiogram"}.get(sheet.scenario, "None"))


def _present_illness(sheet: FactSheet, writer: _Writer, rng: random.Random, complaint: str) -> None:
    c = sheet.conditions
    man = "man" if sheet.sex == "M" else "woman"
    pronoun = "He" if sheet.sex == "M" else "She"
    writer.start("hpi")
    age_text = writer.fact("demo:age", f"{sheet.age} year old" if rng.random() < 0.5 else f"{sheet.age}yo", sheet.age)
    history_words = [rng.choice(CONDITION_WORDS[name]).split(",")[0] for name in
                     ("hypertension", "t2d", "afib", "heart_failure", "cad") if c.get(name)][:3]
    background = ("h/o " + ", ".join(history_words)) if history_words else "no significant past history"
    hpi = (f"{age_text} {man} with {background} who presents with {complaint}. "
           + writer.narrative(rng.choice([
               f"{pronoun} was seen at an outside hospital and transferred for further management.",
               f"{pronoun} was admitted because symptoms worsened over two days despite treatment at home.",
               f"{pronoun} reports that the symptoms began suddenly the morning of admission.",
               f"{pronoun} was brought in by family who noted the patient was more tired than usual."])))
    writer.line(hpi)
    for event, phrasings in PRESENTING_EVENTS.items():  # an event of the last ten days is why they came
        days = getattr(sheet, f"{event}_days_ago")
        if days is not None and days <= 10:
            writer.line(writer.fact(f"event:{event}", rng.choice(phrasings)))


def _past_history(sheet: FactSheet, writer: _Writer, rng: random.Random) -> None:
    """Past medical history with its pertinent negatives, then the surgical history when there is one."""
    writer.start("pmh")
    _condition_lines(sheet, writer, rng)
    negated = _negations(sheet, rng)
    if negated:
        words = [NEGATION_WORDS[name] for name in negated]
        sentence = rng.choice(["No history of {}.", "Denies history of {}.", "No prior {}.",
                               "Negative for {}."]).format(" or ".join(words) if len(words) < 3
                                                           else ", ".join(words[:-1]) + " or " + words[-1])
        writer.line(sentence)
        for name in negated:
            writer.fact(f"neg:{name}", sentence)
    if sheet.abdominal_surgery:
        writer.start("psh")
        writer.line(writer.fact("cond:abdominal_surgery", sheet.abdominal_surgery.capitalize()))


def _exam(sheet: FactSheet, writer: _Writer, rng: random.Random) -> None:
    c = sheet.conditions
    writer.start("exam")
    _vitals(sheet, writer, rng)
    mental = (writer.fact("cond:cannot_decide", rng.choice(["Confused, oriented to self only.",
                                                            "Disoriented; not able to make decisions."]))
              if sheet.cannot_decide else writer.fact("cond:oriented", rng.choice(
                  ["Alert and oriented x3.", "AOx3, appropriate."])))
    writer.line(f"General: {rng.choice(['NAD', 'comfortable', 'mildly uncomfortable'])}, {mental}")
    writer.line(rng.choice(["Lungs: CTAB", "Lungs: bibasilar crackles", "Lungs: clear"]))
    writer.line("CV: irregularly irregular" if c["afib"] and sheet.scenario == "afib_rvr"
                else rng.choice(["CV: RRR, no murmurs", "CV: RRR, 2/6 SEM", "CV: regular rate"]))
    writer.line("Abd: soft, non-tender" + rng.choice(["", ", well-healed midline scar"]
                                                     if sheet.abdominal_surgery else [""]))


def _middle_sections(sheet: FactSheet, writer: _Writer, rng: random.Random) -> None:
    """Past history, social and family history, review of systems (in some notes) and exam, in the usual order or
    shuffled."""
    middle = ["pmh", "social", "family", "ros", "exam"]
    rng.shuffle(middle)
    if rng.random() < 0.5:  # the usual order in most notes
        middle = ["pmh", "social", "family", "ros", "exam"]
    for key in middle:
        if key == "pmh":
            _past_history(sheet, writer, rng)
        elif key == "social":
            writer.start("social")
            _social(sheet, writer, rng)
        elif key == "family":
            writer.start("family")
            writer.line(writer.narrative(rng.choice([
                "Mother with hypertension. Father died of colon cancer at 70.",
                "Non-contributory.", "Father with MI in his 60s; mother with diabetes.",
                "No family history of early cardiac death.", "Sister with breast cancer."])))
        elif key == "ros" and rng.random() < 0.6:
            writer.start("ros")
            writer.line(" ".join(rng.sample(ROS_LINES, 3)))
        elif key == "exam":
            _exam(sheet, writer, rng)


def _results(sheet: FactSheet, style: DateStyle, writer: _Writer, rng: random.Random) -> None:
    writer.start("results")
    _lab_mentions(sheet, style, writer, rng)
    if sheet.lvef is not None:
        value = ">55" if sheet.lvef >= 55 else str(sheet.lvef)
        writer.line(writer.fact("lvef", rng.choice([f"TTE: LVEF {value}%.", f"Echo with EF {value}%",
                                                    f"Ejection fraction {value}% on echocardiogram"]),
                                None if sheet.lvef >= 55 else sheet.lvef))


def _course(sheet: FactSheet, writer: _Writer, rng: random.Random) -> None:
    """The hospital course, the CHADS2 score where documented and, in some notes, a line per chronic problem."""
    c = sheet.conditions
    writer.start("course")
    writer.line(writer.narrative(_course_text(sheet, rng)))
    if sheet.chads2_documented:
        writer.line(writer.fact("chads2", rng.choice([f"CHADS2 score of {sheet.chads2}.",
                                                      f"CHADS2 = {sheet.chads2}", f"CHADS2 score {sheet.chads2}."]),
                                sheet.chads2))
    if rng.random() < 0.5:
        for name in ("hypertension", "t2d", "afib", "heart_failure"):
            if c.get(name):
                writer.line(writer.narrative(f"# {rng.choice(CONDITION_WORDS[name]).split(',')[0]}: "
                                             + rng.choice(["continued home regimen.", "stable during the admission.",
                                                           "no changes made."])))


def _discharge_sections(sheet: FactSheet, style: DateStyle, writer: _Writer, rng: random.Random, complaint: str,
                        diagnosis: str) -> None:
    """Medications, disposition, diagnosis, condition and instructions at discharge."""
    writer.start("meds")
    _medications(sheet, writer, rng)
    writer.start("disposition")
    writer.line(rng.choice(["Extended Care", "Skilled nursing facility"]) if sheet.cannot_decide
                else rng.choice(["Home", "Home With Service", "Home with VNA"]))
    writer.start("diagnosis")
    diagnosis = diagnosis if rng.random() < 0.6 else diagnosis.lower()
    if sheet.scenario == "gi_bleed":  # the ulcer is this admission's diagnosis, not a past history line
        diagnosis = writer.fact("cond:peptic_ulcer_disease", diagnosis)
    writer.line(diagnosis)
    writer.start("condition")
    writer.line(rng.choice(["Mental Status: Clear and coherent.", "Stable.", "Good; ambulating independently."])
                if not sheet.cannot_decide else "Mental Status: Confused - always.")
    writer.start("instructions")
    writer.line(writer.narrative(
        f"You were admitted for {complaint}. Please take your medications as prescribed and follow up with "
        f"your primary care physician, Dr. {style.placeholder('Last Name (STitle)', 4)}, within "
        f"{rng.choice(['one week', 'two weeks', '7-10 days'])}."))


def render_varied_discharge_summary(sheet: FactSheet, style: DateStyle, rng: random.Random,
                                    typo_rate: float = 0.15) -> RenderedNote:
    """A discharge summary of `sheet` with varied wording; the same rng state gives the same note."""
    writer = _Writer(rng, typo_rate)
    complaint, diagnosis = SCENARIOS[sheet.scenario]
    _opening(sheet, style, writer, rng, complaint)
    _present_illness(sheet, writer, rng, complaint)
    _middle_sections(sheet, writer, rng)
    _results(sheet, style, writer, rng)
    _course(sheet, writer, rng)
    _discharge_sections(sheet, style, writer, rng, complaint, diagnosis)
    text = writer.render(rng.choice(["block", "block", "inline"]))
    for mention in writer.mentions:
        assert mention.text in text, mention  # a fact's text stands in the note as recorded
    return RenderedNote(text, writer.mentions)


def _social(sheet: FactSheet, writer: _Writer, rng: random.Random) -> None:
    parts = [writer.narrative(rng.choice(["Lives with family.", "Lives alone in an apartment.",
                                          "Lives with spouse.", "Retired teacher, lives with daughter."]))]
    if sheet.alcohol_drinks_per_week == 0:
        parts.append(writer.fact("social:alcohol", rng.choice(["Denies alcohol use.", "No EtOH.",
                                                               "Does not drink alcohol."]), 0))
    else:
        drinks = sheet.alcohol_drinks_per_week
        parts.append(writer.fact("social:alcohol", rng.choice([
            f"Drinks about {drinks} alcoholic beverages per week.", f"EtOH: {drinks} drinks/week.",
            f"Reports {drinks} drinks of alcohol weekly."]), drinks))
    parts.append(writer.fact("social:drugs", rng.choice(["Denies illicit drug use.", "No IVDU or other drugs.",
                                                         "Denies recreational drugs."]) if sheet.drug_use is None
                             else rng.choice([f"Uses {sheet.drug_use}.", f"Active {sheet.drug_use} use.",
                                              f"Reports {sheet.drug_use} use."])))
    smoking = {"never smoker": ["Never smoker.", "Denies tobacco.", "No tobacco use."],
               "former smoker, quit 10 years ago": ["Former smoker, quit 10 years ago.",
                                                    "Ex-smoker (quit ~10 yrs ago)."],
               "current smoker, 1 ppd": ["Current smoker, 1 ppd.", "Smokes 1 pack per day.",
                                         "Active tobacco use, 1 ppd."]}[sheet.smoking]
    parts.append(writer.fact("social:smoking", rng.choice(smoking)))
    language = (rng.choice(["English speaking.", "Primary language English."]) if sheet.language == "English" else
                rng.choice([f"{sheet.language} speaking; interpreter used.",
                            f"Primary language {sheet.language}, requires interpreter."]))
    parts.append(writer.fact("social:language", language))
    rng.shuffle(parts)
    writer.line(" ".join(parts))


def _vitals(sheet: FactSheet, writer: _Writer, rng: random.Random) -> None:
    temperature = round(rng.uniform(97.0, 101.5 if sheet.scenario == "pneumonia" else 99.5), 1)
    systolic, diastolic = rng.randint(98, 172), rng.randint(52, 96)
    heart_rate = rng.randint(112, 150) if sheet.scenario == "afib_rvr" else rng.randint(58, 104)
    saturation = rng.randint(88, 100)
    pieces = [writer.fact("vital:temperature", f"T {temperature}", temperature),
              writer.fact("vital:systolic", f"BP {systolic}/{diastolic}", systolic),
              writer.fact("vital:heart_rate", f"HR {heart_rate}", heart_rate),
              f"RR {rng.randint(12, 24)}",
              writer.fact("vital:oxygen_saturation", f"O2 sat {saturation}%", saturation)]
    writer.line(rng.choice(["VS: ", "Vitals: ", "VS on admission: "]) + " ".join(pieces) + " "
                + rng.choice(["RA", "on 2L NC", "RA"]))


def _medications(sheet: FactSheet, writer: _Writer, rng: random.Random) -> None:
    medications = list(sheet.medications) + list(sheet.supplements)
    rng.shuffle(medications)
    numbered = rng.random() < 0.7
    for number, medication in enumerate(medications, 1):
        name = medication.split()[0].lower()
        shown = medication
        if name in DRUG_WORDS and rng.random() < 0.3:
            shown = medication.replace(medication.split()[0], rng.choice(DRUG_WORDS[name]), 1)
        if rng.random() < 0.3:
            shown = shown.replace(" PO ", " by mouth ").replace(" daily", " once a day")
        key = "supp:" + name if medication in sheet.supplements else "med:" + name
        stated = writer.fact(key, shown)
        writer.line(f"{number}. {stated}" if numbered else f"- {stated}")
    if not medications:
        writer.line("None")


def _course_text(sheet: FactSheet, rng: random.Random) -> str:
    options = {
        "afib_rvr": ["Presented in atrial fibrillation with rates to 150s. Rate controlled with IV then PO metoprolol.",
                     "Admitted with AF with RVR, rate controlled with diltiazem drip then transitioned to oral "
                     "agents."],
        "chf": ["Diuresed with IV furosemide with net negative 4 L. Transitioned to PO diuretic on day 3.",
                "Admitted with volume overload; diuresed with IV Lasix to euvolemia."],
        "nstemi": ["Troponin elevation with ST depressions laterally. Started on heparin drip and taken for cardiac "
                   "catheterization with drug-eluting stent to the LAD.",
                   "Underwent catheterization with a stent to the LAD; troponins peaked on day 2."],
        "stroke": ["MRI showed acute left MCA territory infarct. Not a candidate for thrombolysis given time from "
                   "onset.",
                   "Left MCA infarct on MRI; neurology followed and speech therapy was consulted."],
        "gi_bleed": ["EGD showed a bleeding duodenal ulcer, treated with clips and epinephrine. Received 2 units of "
                     "packed red cells.", "Transfused 2 units; EGD with clipping of a duodenal ulcer."],
        "dka": ["Admitted to the ICU with anion gap acidosis and ketonuria. Treated with insulin drip and fluids; "
                "gap closed within 24 hours.", "Treated with an insulin drip and IV fluids with closure of the gap."],
        "sbo": ["CT showed small bowel obstruction with transition point in the mid ileum. Managed with NG tube "
                "decompression and bowel rest.", "Managed conservatively with bowel rest and an NG tube; resolved."],
        "pneumonia": ["Chest x-ray with right lower lobe consolidation. Treated with ceftriaxone and azithromycin.",
                      "Treated for community-acquired pneumonia with ceftriaxone and azithromycin, improved."],
    }
    return rng.choice(options[sheet.scenario]) + " " + rng.choice([
        "The patient tolerated a regular diet prior to discharge.", "Physical therapy recommended discharge home.",
        "Ambulating independently on the day of discharge.", "Improved and was discharged in stable condition."])
