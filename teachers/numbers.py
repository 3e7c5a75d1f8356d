"""Numeric items (a value read with its name) and the N/A items (what the note does not mention at all)."""

from __future__ import annotations

import random

from clinical_distil.prompts import NOT_FOUND
from teachers import facts, lexicon
from teachers.questions import Candidate, take
from teachers.reading import NoteReading, Value, find_names

FIRST, LAST, HIGHEST, LOWEST, ONLY = "first", "last", "highest", "lowest", "only"
SOCIAL_QUESTIONS = {
    "drinks_per_week": "How many alcoholic drinks per week does the patient report?",
    "packs_per_day": "How many packs of cigarettes per day does the patient smoke?",
    "pack_years": "How many pack-years of smoking does the patient have?",
    "years_since_quitting": "How many years ago did the patient quit smoking?",
    "prbc_units": "How many units of packed red blood cells did the patient receive?",
}
NA_QUALIFIERS = ("on admission", "at discharge", "most recent")


def pick(values: list[Value], qualifier: str) -> Value:
    """The value a qualifier names: the first or last in the note's order, or the highest or lowest (the first
    of equal ones)."""
    if qualifier == LAST:
        return values[-1]
    if qualifier == HIGHEST:
        return max(values, key=lambda value: float(value.value))
    if qualifier == LOWEST:
        return min(values, key=lambda value: float(value.value))
    return values[0]


def grouped(reading: NoteReading) -> dict[str, list[Value]]:
    """The note's values by what they measure (doses by drug and section), in the note's order."""
    groups: dict[str, list[Value]] = {}
    for value in reading.values:
        key = f"{value.attribute}:{value.section.kind}" if value.kind == "dose" else value.attribute
        groups.setdefault(key, []).append(value)
    return groups


def _measure_question(value: Value, qualifier: str) -> str:
    name = value.name
    if qualifier == ONLY:
        if value.kind == "vital":
            return f"What was the patient's {name} recorded in the {value.section.name} section?"
        if value.attribute == "lvef":
            return "What left ventricular ejection fraction, in percent, is reported for the patient?"
        return f"What was the patient's {name}?"
    if qualifier in (FIRST, LAST):
        return f"What was the {qualifier} {name} value recorded in the note?"
    return f"What was the {qualifier} {name} recorded in the note?"


def _numeric_candidate(topic: str, values: list[Value], rng: random.Random) -> Candidate | None:
    first = values[0]
    if first.kind == "dose":
        if len({value.value for value in values}) > 1:
            return None  # two doses of one drug in one list: which one is meant is not clear
        unit = first.unit if first.unit not in ("unit", "units") else "units"
        return Candidate(topic, "dose", f"What dose of {first.name}, in {unit}, is listed in the {first.section.name} "
                                        "section?", first.value, first.section.name, first.source, 3,
                         f"The {first.section.name} list gives {first.name} {first.value} {first.unit}.", "numeric")
    if first.kind in ("social", "transfusion"):
        if len({value.value for value in values}) > 1:
            return None
        return Candidate(topic, first.kind, SOCIAL_QUESTIONS[first.attribute], first.value, first.section.name,
                         first.source, 3, f"The {first.section.name} section gives {first.value} {first.name}.",
                         "numeric")
    distinct = [float(value.value) for value in values]
    if len(set(distinct)) == 1:
        qualifier = ONLY
    else:
        qualifier = rng.choice((FIRST, LAST, HIGHEST, LOWEST))
    chosen = pick(values, qualifier)
    listed = ", ".join(value.value for value in values)
    why = (f"The {chosen.section.name} section gives the patient's {chosen.name} as {chosen.value}."
           if qualifier == ONLY else
           f"Of the {chosen.name} values in the note ({listed}), {chosen.value} is the {qualifier}.")
    difficulty = {ONLY: 2, FIRST: 4, LAST: 4, HIGHEST: 6, LOWEST: 6}[qualifier] + (first.kind == "lab")
    return Candidate(topic, first.kind, _measure_question(chosen, qualifier), chosen.value, chosen.section.name,
                     chosen.source, difficulty, why, "numeric")


def numeric_candidates(reading: NoteReading, limit: int, rng: random.Random) -> list[Candidate]:
    candidates = []
    for topic, values in sorted(grouped(reading).items()):
        values = [value for value in values if value.section.name]  # a quote needs its section
        candidate = _numeric_candidate(topic, values, rng) if values else None
        if candidate is not None:
            candidates.append(candidate)
    return take(candidates, limit, rng)


def measure_names(measure: lexicon.Measure) -> tuple[str, ...]:
    return (measure.name, *measure.aliases, *measure.labels)


def measure_absent(reading: NoteReading, measure: lexicon.Measure) -> bool:
    """Neither the measure's names nor its results-line labels occur anywhere in the note."""
    return not find_names(reading.text, tuple((name, name) for name in measure_names(measure)))


def na_numeric_candidates(reading: NoteReading, count: int, rng: random.Random) -> list[Candidate]:
    """Labs and body measurements the note never mentions; those its conditions make plausible first."""
    affirmed = {mention.concept.key for mention in reading.mentions if mention.context.affirmed}
    plausible, generic = [], []
    measures = lexicon.LABS + [lexicon.MEASURES[key] for key in ("weight", "height", "bmi")]
    for measure in measures:
        if not measure_absent(reading, measure):
            continue
        related = set(measure.plausible_for) & affirmed
        if measure.plausible_for and not related:
            continue
        qualifier = rng.choice(NA_QUALIFIERS) if measure.key not in ("height", "bmi") else ""
        if measure.key == "weight":
            question = f"What was the patient's weight in kilograms {qualifier}?".replace("  ", " ")
        elif qualifier == "most recent":
            question = f"What was the patient's most recent {measure.name}?"
        else:
            question = f"What was the patient's {measure.name}{' ' + qualifier if qualifier else ''}?"
        why = f"The note reports no {measure.name} value" + (
            f", although the patient's {', '.join(sorted(lexicon.BY_KEY[key].name for key in related))} would make "
            "one plausible." if related else ".")
        candidate = Candidate(f"na:{measure.key}", "plausible" if related else "generic", question, "N/A",
                              NOT_FOUND, None, 6 if related else 5, why, "numeric")
        (plausible if related else generic).append(candidate)
    chosen = take(plausible, count, rng)
    return chosen + take(generic, count - len(chosen), rng)


def na_bool_candidates(reading: NoteReading, count: int, rng: random.Random) -> list[Candidate]:
    """Routine items a discharge summary seldom records, asked only where the note has none of their words."""
    candidates = [Candidate(f"na:{topic}", "unrecorded", question, "N/A", NOT_FOUND, None,
                            5 + rng.randrange(3), f"The note does not record the patient's {topic}.")
                  for question, topic, words in lexicon.UNRECORDED_ITEMS if not facts.first_words(reading.text, words)]
    return take(candidates, count, rng)
