"""The numbers of a note, each with what it measures: labs, vital signs, scores, doses, substance use, transfusions.

Labs are read in MIMIC's results lines ("[**2144-3-2**] 06:40AM BLOOD Glucose-195 Creat-1.1") and in prose
("creatinine of 2.1"); vital signs in a vital-signs line ("VS: T 98.4 BP 132/78 HR 84") or in prose ("heart
rate of 110"); a dose in a medication list's line; a value only where it is a single number (no "<0.01", no
">55%", no "35-40%").
"""

from __future__ import annotations

import re

from teachers import lexicon
from teachers.reading import NUMBER, NoteReading, Section, Value, exact_case, line_span

NOT_A_LAB_AFTER = r"(?!\d|\.\d|\s*-\s*\d|/\d|\s*(?:mg|mcg|g|units?|mEq|mL)\b(?!/)|" \
                  r"\s*(?:years?|yrs?|days?|hours?|hrs?|" \
                  r"weeks?|months?|min(?:utes)?)\b)"
CONNECTOR = r"(?:\s*(?:level|value|count|was|is|of|at|to|peaked|peak|rose|fell|increased|decreased|:|=|,))*\s*"


def _first(patterns: list[str]) -> str:
    return "|".join(sorted(patterns, key=lambda pattern: -len(pattern))) or "(?!x)x"


def _labels() -> tuple[re.Pattern, dict[str, lexicon.Measure]]:
    by_label = {label: lab for lab in lexicon.LABS for label in lab.labels}
    labels = sorted(by_label, key=lambda label: -len(label))
    body = "|".join(re.escape(label) for label in labels)
    return re.compile(rf"(?<![\w%])(?P<label>{body})-(?P<value>{NUMBER})(?!\d|\.\d)\*?"), by_label


def _prose(measures: list[lexicon.Measure], skip: set[str]) -> tuple[re.Pattern, re.Pattern, dict[str, str]]:
    """Free-text names of `measures` followed by a number, in any case and as written (short capitals)."""
    names = {alias: measure.key for measure in measures for alias in measure.aliases if alias not in skip}
    folded = _first([re.escape(alias).replace(r"\ ", r"\s+") for alias in names if not exact_case(alias)])
    exact = _first([re.escape(alias).replace(r"\ ", r"\s+") for alias in names if exact_case(alias)])
    tail = rf"){CONNECTOR}(?P<value>{NUMBER}){NOT_A_LAB_AFTER}"
    keys = {(alias if exact_case(alias) else " ".join(alias.lower().split())): key for alias, key in names.items()}
    return (re.compile(rf"(?<![\w%])(?P<name>{folded}{tail}", re.I), re.compile(rf"(?<![\w%])(?P<name>{exact}{tail}"),
            keys)


LABEL_PATTERN, BY_LABEL = _labels()
# one- and two-letter names that mean other things in prose ("K", "Na", "PT") are read in results lines only
PROSE_LABS = _prose(lexicon.LABS, skip={"K", "Na", "Cl", "Mg", "PT", "Hb", "Plt"})
SCORE_NAMES = _first([re.escape(alias) for score in lexicon.SCORES if score.key != "lvef" for alias in score.aliases])
SCORE_PATTERN = re.compile(rf"(?<![\w])(?P<name>{SCORE_NAMES})(?:\s+score)?(?:\s*(?:of|was|is|:|=))?\s*"
                           rf"(?P<value>\d+)(?!\d|\.\d|\s*-\s*\d|\s*/)")
LVEF_PATTERN = re.compile(r"(?<![\w])(?P<name>LVEF|EF|[Ee]jection\s+[Ff]raction)(?:\s*(?:of|was|is|:|=))?\s*"
                          r"(?P<value>\d{1,2})\s*%")
VITAL_LINE = re.compile(r"(?:^|\n)[ \t]*(?:VS|Vitals|Vital\s+signs|VITALS)\b|\bBP\s*:?\s*\d{2,3}/\d{2,3}", re.I)
VITAL_SHORT = {
    "temperature": r"(?:T|Temp|Tmax|Tc)\s*:?\s*(?P<value>\d{2,3}(?:\.\d)?)(?!\d|/)",
    "systolic_bp": r"BP\s*:?\s*(?P<value>\d{2,3})/\d{2,3}",
    "diastolic_bp": r"BP\s*:?\s*\d{2,3}/(?P<value>\d{2,3})",
    "heart_rate": r"(?:HR|P|Pulse)\s*:?\s*(?P<value>\d{2,3})(?!\d|/|\.\d)",
    "respiratory_rate": r"(?:RR|R|Resp)\s*:?\s*(?P<value>\d{1,2})(?!\d|/|\.\d)",
    "oxygen_saturation": r"(?:O2\s*[Ss]at(?:uration)?|O2[Ss]at|SpO2|SaO2|[Ss]at)\s*:?\s*(?P<value>\d{2,3})\s*%",
    "weight": r"(?:Wt|Weight)\s*:?\s*(?P<value>\d{2,3}(?:\.\d)?)\s*(?P<unit>kg|lbs?)\b",
}
VITAL_PROSE = {
    "temperature": r"temperature\s+(?:of\s+|was\s+)?(?P<value>\d{2,3}(?:\.\d)?)(?!\d|/)",
    "systolic_bp": r"blood\s+pressure\s+(?:of\s+|was\s+)?(?P<value>\d{2,3})/\d{2,3}",
    "diastolic_bp": r"blood\s+pressure\s+(?:of\s+|was\s+)?\d{2,3}/(?P<value>\d{2,3})",
    "heart_rate": r"heart\s+rate\s+(?:of\s+|was\s+)?(?P<value>\d{2,3})(?!\d|/|\.\d)",
    "respiratory_rate": r"respiratory\s+rate\s+(?:of\s+|was\s+)?(?P<value>\d{1,2})(?!\d|/|\.\d)",
    "oxygen_saturation": r"(?:oxygen|O2)\s+saturation\s+(?:of\s+|was\s+)?(?P<value>\d{2,3})\s*%",
    "weight": r"weight\s+(?:of\s+|was\s+)?(?P<value>\d{2,3}(?:\.\d)?)\s*(?P<unit>kg|lbs?)\b",
}
DOSE = re.compile(rf"^[^\n\d]{{0,30}}?(?P<value>{NUMBER})\s*(?P<unit>mg|mcg|g|units?|mEq)\b")
SOCIAL_NUMBERS = (
    ("drinks_per_week", "alcoholic drinks per week",
     re.compile(r"(?P<value>\d+)\s+(?:alcoholic\s+)?(?:drinks|beverages)\s+(?:per|a|/)\s*week", re.I)),
    ("packs_per_day", "packs of cigarettes per day",
     re.compile(rf"(?P<value>{NUMBER})\s*(?:ppd|packs?\s+per\s+day)\b", re.I)),
    ("pack_years", "pack-years of smoking", re.compile(rf"(?P<value>{NUMBER})[\s-]*pack[\s-]*years?\b", re.I)),
    ("years_since_quitting", "years since the patient quit smoking",
     re.compile(r"quit\s+(?:smoking\s+)?(?P<value>\d+)\s+years?\s+ago", re.I)),
    ("prbc_units", "units of packed red blood cells transfused",
     re.compile(r"(?P<value>\d+)\s+units?\s+(?:of\s+)?(?:packed\s+red\s+(?:blood\s+)?cells|pRBCs?|PRBCs?|red\s+cells)",
                re.I)),
)


def _value(reading: NoteReading, attribute: str, name: str, start: int, end: int, kind: str, unit: str = "") -> Value:
    return Value(attribute, name, reading.text[start:end], start, end, reading.section_at(start),
                 line_span(reading.text, start, end), kind, unit)


def _labs(reading: NoteReading, medication_spans: list[Section]) -> list[Value]:
    text, found = reading.text, []
    for match in LABEL_PATTERN.finditer(text):
        lab = BY_LABEL[match.group("label")]
        found.append(_value(reading, lab.key, lab.name, match.start("value"), match.end("value"), "lab"))
    folded, exact, keys = PROSE_LABS
    for pattern, case in ((folded, False), (exact, True)):
        for match in pattern.finditer(text):
            if any(section.start <= match.start() < section.end for section in medication_spans):
                continue
            written = match.group("name")
            lab = lexicon.MEASURES[keys[written if case else " ".join(written.lower().split())]]
            found.append(_value(reading, lab.key, lab.name, match.start("value"), match.end("value"), "lab"))
    return found


def _vitals(reading: NoteReading) -> list[Value]:
    text, found = reading.text, []
    lines = []
    for match in VITAL_LINE.finditer(text):
        low = text.rfind("\n", 0, match.end() - 1) + 1
        high = text.find("\n", match.end())
        lines.append((low, len(text) if high < 0 else high))
    for low, high in sorted(set(lines)):
        for key, pattern in VITAL_SHORT.items():
            for match in re.finditer(rf"(?<![\w/]){pattern}", text[low:high]):
                unit = match.groupdict().get("unit") or ""
                found.append(_value(reading, key, lexicon.MEASURES[key].name, low + match.start("value"),
                                    low + match.end("value"), "vital", unit))
    for key, pattern in VITAL_PROSE.items():
        for match in re.finditer(rf"(?<![\w]){pattern}", text, re.I):
            unit = match.groupdict().get("unit") or ""
            found.append(_value(reading, key, lexicon.MEASURES[key].name, match.start("value"), match.end("value"),
                                "vital", unit))
    return found


def _scores(reading: NoteReading) -> list[Value]:
    found = []
    by_alias = {alias: score for score in lexicon.SCORES for alias in score.aliases}
    for match in SCORE_PATTERN.finditer(reading.text):
        score = by_alias[match.group("name")]
        found.append(_value(reading, score.key, score.name, match.start("value"), match.end("value"), "score"))
    for match in LVEF_PATTERN.finditer(reading.text):
        found.append(_value(reading, "lvef", "left ventricular ejection fraction", match.start("value"),
                            match.end("value"), "score", "%"))
    return found


def _doses(reading: NoteReading) -> list[Value]:
    found = []
    for mention in reading.mentions:
        if mention.concept.kind != lexicon.DRUG or mention.concept.members or \
                mention.section.kind not in ("medications", "discharge_medications"):
            continue
        line_end = reading.text.find("\n", mention.end)
        rest = reading.text[mention.end:len(reading.text) if line_end < 0 else line_end]
        if (match := DOSE.match(rest)) is not None:
            written = reading.text[mention.start:mention.end]
            found.append(_value(reading, f"dose:{mention.concept.key}", written, mention.end + match.start("value"),
                                mention.end + match.end("value"), "dose", match.group("unit")))
    return found


def _social(reading: NoteReading) -> list[Value]:
    return [_value(reading, key, name, match.start("value"), match.end("value"),
                   "transfusion" if key == "prbc_units" else "social")
            for key, name, pattern in SOCIAL_NUMBERS for match in pattern.finditer(reading.text)]


def values_of(reading: NoteReading) -> list[Value]:
    """Every value of the note in the note's order, one per position."""
    medication_spans = reading.sections_of_kind("medications", "discharge_medications")
    found = _labs(reading, medication_spans) + _vitals(reading) + _scores(reading) + _doses(reading) + \
        _social(reading)
    unique: dict[int, Value] = {}
    for value in found:
        unique.setdefault(value.start, value)
    return sorted(unique.values(), key=lambda value: value.start)
