"""A rule-based answerer for baselines: a free-text question about a note -> "Yes", "No", a number, or "N/A".

    answer_question("Does the patient have atrial fibrillation?", note_text)      # "Yes"
    answer_question("What is the patient's most recent creatinine?", note_text)  # "0.8"

It finds the concepts the question names with the teacher's vocabularies and answers from the note with the
teacher's rules (teachers/facts.py): an affirmed mention is a Yes, a negated one a No, silence a No only where
silence is a fair No (a complete discharge medication list, a past medical history without a serious chronic
diagnosis), otherwise N/A. Numbers: the value the question's qualifier names (first or on admission, last or at
discharge or most recent, highest, lowest); without one, the most recent.
"""

from __future__ import annotations

import re

from teachers import facts, lexicon
from teachers.numbers import FIRST, HIGHEST, LAST, LOWEST, grouped, pick
from teachers.reading import CONCEPT_NAMES, NoteReading, Value, find_names, read_note

YES, NO, NOT_ANSWERED = "Yes", "No", "N/A"
NUMERIC_START = re.compile(r"^\s*(?:what|how\s+many|how\s+much|which\s+value|give|report)\b", re.I)
QUALIFIERS = (  # tested in order: "highest ... on admission" is the highest
    (HIGHEST, r"highest|peak|maximum|max|greatest"), (LOWEST, r"lowest|nadir|minimum|min|smallest"),
    (FIRST, r"first|initial|earliest|baseline|on\s+admission|at\s+admission|admission"),
    (LAST, r"last|latest|most\s+recent|final|at\s+discharge|discharge|current|currently"),
)
COMPARISON = re.compile(r"(above|greater\s+than|more\s+than|over|exceed(?:s|ed|ing)?|higher\s+than|at\s+least|"
                        r"below|less\s+than|under|lower\s+than|at\s+most|>=|<=|>|<)\s*(\d+(?:\.\d+)?)", re.I)
ADMISSION = re.compile(r"during\s+(?:this|the|her|his)\s+(?:admission|hospitali[sz]ation|hospital\s+(?:stay|course))|"
                       r"this\s+(?:admission|hospitali[sz]ation|hospital\s+stay)|while\s+hospitali[sz]ed", re.I)
PRIOR = re.compile(r"\b(?:prior|previous(?:ly)?|before\s+(?:this|the)\s+admission|before\s+admission|"
                   r"prior\s+to\s+admission)\b", re.I)
HISTORY = re.compile(r"\b(?:history\s+of|ever|in\s+the\s+past)\b", re.I)
DISCHARGE = re.compile(r"\bdischarg", re.I)
HOME = re.compile(r"\b(?:before\s+(?:this\s+)?admission|prior\s+to\s+admission|at\s+home|home\s+medication)", re.I)
FAMILY_WORDS = re.compile(r"\b(?:family|mother|father|brother|sister|sibling|parent|aunt|uncle|grand\w+)\b", re.I)
# a question about a test's result ("tested positive for hepatitis C antibody") is no question about a diagnosis:
# a past medical history's silence does not answer it
TEST_WORDS = re.compile(r"\btest(?:s|ed|ing)?\b|antibod|serolog|screen", re.I)
SMOKING_WORDS = re.compile(r"\b(?:smok\w*|tobacco|cigarettes?)\b", re.I)
SOCIAL_KEYS = (
    ("drinks_per_week", re.compile(r"drinks?\b.*\bweek", re.I)),
    ("packs_per_day", re.compile(r"packs?\b.*\bday|\bppd\b", re.I)),
    ("pack_years", re.compile(r"pack[\s-]*years?", re.I)),
    ("years_since_quitting", re.compile(r"\bquit\b", re.I)),
    ("prbc_units", re.compile(r"units?\b.*(?:red\s+(?:blood\s+)?cells|prbc|transfus)", re.I)),
)


def _measure_names() -> tuple[tuple[str, str], ...]:
    """Names a question may give a lab, vital sign or score ("blood pressure" alone names no single number)."""
    names = []
    for measure in list(lexicon.MEASURES.values()):
        for name in (measure.name, *measure.aliases, *measure.labels):
            if name not in ("blood pressure", "BP", "T", "P", "R", "sat", "Ht", "Wt", "Tc"):
                names.append((name, measure.key))
    return (*names, ("systolic", "systolic_bp"), ("diastolic", "diastolic_bp"))


MEASURE_NAMES = _measure_names()


def _qualifier(question: str) -> str | None:
    return next((name for name, words in QUALIFIERS if re.search(rf"\b(?:{words})\b", question, re.I)), None)


def _number(values: list[Value], question: str) -> str:
    if not values:
        return NOT_ANSWERED
    return pick(values, _qualifier(question) or LAST).value


def _dose(reading: NoteReading, question: str, drug: lexicon.Concept) -> str:
    kinds = ("discharge_medications",) if DISCHARGE.search(question) else \
        ("medications",) if re.search(r"admission|home", question, re.I) else ("medications", "discharge_medications")
    values = [value for value in reading.values if value.attribute == f"dose:{drug.key}" and
              value.section.kind in kinds]
    named = [value for value in values if value.name.lower() in question.lower()]
    distinct = {value.value for value in (named or values)}
    return distinct.pop() if len(distinct) == 1 else NOT_ANSWERED


def _numeric(reading: NoteReading, question: str) -> str:
    for key, pattern in SOCIAL_KEYS:
        if pattern.search(question):
            return _number(grouped(reading).get(key, []), question)
    concepts = [lexicon.BY_KEY[key] for _, _, key in find_names(question, CONCEPT_NAMES)]
    drugs = [concept for concept in concepts if concept.kind == lexicon.DRUG and not concept.members]
    if re.search(r"\bdose|\bdosage|\bhow\s+much\b", question, re.I) and drugs:
        return _dose(reading, question, drugs[0])
    measures = find_names(question, MEASURE_NAMES)
    if not measures:
        return NOT_ANSWERED
    return _number(grouped(reading).get(measures[0][2], []), question)


def _threshold(reading: NoteReading, question: str) -> str | None:
    """Yes or No for "Is the creatinine above 1.5?"; None where the question compares no measure with a number."""
    comparison = COMPARISON.search(question)
    measures = find_names(question, MEASURE_NAMES)
    if comparison is None or not measures:
        return None
    values = grouped(reading).get(measures[0][2], [])
    if not values:
        return NOT_ANSWERED
    word, limit = comparison.group(1).lower(), float(comparison.group(2))
    above = word.startswith(("above", "greater", "more", "over", "exceed", "higher", ">"))
    inclusive = word.startswith(("at least", "at most", ">=", "<="))

    def holds(number: float) -> bool:
        if above:
            return number >= limit if inclusive else number > limit
        return number <= limit if inclusive else number < limit

    qualifier = _qualifier(question)
    chosen = [pick(values, qualifier)] if qualifier else values
    return YES if any(holds(float(value.value)) for value in chosen) else NO


def _smoking(reading: NoteReading, question: str) -> str:
    if reading.smoking is None:
        return NOT_ANSWERED
    status = reading.smoking[0]
    if re.search(r"\b(?:ever|history|former|previous(?:ly)?|prior)\b", question, re.I):
        return NO if status == "never" else YES
    return YES if status == "current" else NO


def _allergy(reading: NoteReading, question: str) -> str:
    listed = facts.allergens(reading)
    named = [allergen for allergen, aliases in lexicon.ALLERGENS.items()
             if find_names(question, tuple((alias, alias) for alias in aliases))]
    has_section = bool(reading.sections_of_kind("allergies"))
    if named:
        if any(allergen in named for allergen, _, _ in listed):
            return YES
        return NO if facts.allergy_statement(reading) is not None or (listed and has_section) else NOT_ANSWERED
    if listed:
        return YES
    return NO if facts.allergy_statement(reading) is not None else NOT_ANSWERED


def _concept(reading: NoteReading, concept: lexicon.Concept, question: str) -> str:
    """One concept's answer, with the question's time (this admission, before it, at discharge) applied."""
    status = facts.status_of(reading, concept)
    affirmed = status.affirmed
    if concept.kind == lexicon.DRUG:
        if DISCHARGE.search(question):
            on_list = [mention for mention in affirmed if mention.section.kind == "discharge_medications"]
            listed = facts.medication_list(reading) is not None
            return YES if on_list else NO if listed or status.negated else NOT_ANSWERED
        if HOME.search(question):
            affirmed = tuple(mention for mention in affirmed if mention.section.kind == "medications")
            if not affirmed:
                return NO if status.negated else NOT_ANSWERED
    elif concept.kind in (lexicon.EVENT, lexicon.PROCEDURE):
        recent = [mention for mention in affirmed if not mention.context.historical and mention.section.kind != "past"]
        if ADMISSION.search(question):
            return YES if recent else NO if affirmed or status.negated else NOT_ANSWERED
        if PRIOR.search(question) and affirmed and len(recent) == len(affirmed):
            return NO
    elif concept.kind == lexicon.CONDITION and affirmed and not HISTORY.search(question):
        if all(mention.context.resolved for mention in affirmed):
            return NO
    if affirmed:
        return YES
    if status.possible:
        return NOT_ANSWERED
    if status.negated or (not TEST_WORDS.search(question) and facts.absence_says_no(reading, concept) is not None):
        return NO
    return NOT_ANSWERED


def _family(reading: NoteReading, concepts: list[lexicon.Concept]) -> str:
    for concept in concepts:
        if any(not mention.context.negated for mention in facts.status_of(reading, concept).family):
            return YES
    return NOT_ANSWERED


def _boolean(reading: NoteReading, question: str) -> str:
    threshold = _threshold(reading, question)
    if threshold is not None:
        return threshold
    found = find_names(question, CONCEPT_NAMES)
    concepts = list(dict.fromkeys(lexicon.BY_KEY[key] for _, _, key in found))
    if any(concept.kind == lexicon.ALLERGY for concept in concepts) or re.search(r"\ballerg", question, re.I):
        return _allergy(reading, question)
    if SMOKING_WORDS.search(question) and not concepts:
        return _smoking(reading, question)
    if not concepts:
        return NOT_ANSWERED
    if FAMILY_WORDS.search(question):
        return _family(reading, concepts)
    answers = [_concept(reading, concept, question) for concept in concepts]
    if re.search(r"\bor\b", question, re.I):
        return YES if YES in answers else NO if all(answer == NO for answer in answers) else NOT_ANSWERED
    return NO if NO in answers else YES if all(answer == YES for answer in answers) else NOT_ANSWERED


def answer_question(question: str, note_text: str) -> str:
    """ "Yes", "No", a number as the note writes it, or "N/A" for a free-text question about the note."""
    reading = read_note(note_text)
    if NUMERIC_START.search(question) and not re.match(r"^\s*what\s+(?:is|was)\s+(?:the\s+)?(?:answer|status)\b",
                                                         question, re.I):
        return _numeric(reading, question)
    return _boolean(reading, question)
