"""The teacher's items: yes/no, numeric and not-answerable questions about one read note, in stage A's item format.

    items = items_for(note_text, "yes_no", questions_per_type=5, seed=0)   # list of dicts with ITEM_KEYS

Each question type writes at most as many items as the teacher prompt asks for, and fewer where the note does
not support more: a Yes needs an affirmed mention, a No a negated one (or silence where silence is a fair No),
a number a value read with its name, an N/A a concept the note does not mention at all.
"""

from __future__ import annotations

import hashlib
import random
import re
from dataclasses import dataclass

from clinical_distil.prompts import ITEM_KEYS, NOT_FOUND, QUESTION_TYPES, max_questions
from teachers import facts, lexicon
from teachers.reading import Mention, NoteReading, quote_span, read_note

PRESENT_KINDS = ("presenting", "diagnosis", "other", "condition", "instructions", "exam", "results")
HOME_LIST = re.compile(r"admission|home|prior|outpatient|pre-?admission", re.I)  # medications taken before the stay
VERBS = {"transfusion": "receive", "thrombolysis": "receive", "dialysis": "receive", "intubation": "require",
         "ng_tube": "have", "echo": "have", "ct": "have", "mri": "have", "chest_xray": "have", "central_line": "have",
         "pacemaker": "have"}


@dataclass(frozen=True)
class Candidate:
    topic: str  # the attribute asked about: one item per topic
    group: str  # kinds take turns, for variety
    question: str
    answer: str
    section: str
    source: tuple[int, int] | None  # None: "not found"
    difficulty: int
    explanation: str
    type: str = "boolean"

    def item(self, text: str) -> dict:
        source = NOT_FOUND if self.source is None else text[self.source[0]:self.source[1]]
        values = (self.question, self.type, self.answer, self.section, source, max(1, min(10, self.difficulty)),
                  self.explanation)
        return dict(zip(ITEM_KEYS, values))


def _recent(mention: Mention) -> bool:
    return not mention.context.historical and mention.section.kind in PRESENT_KINDS


def _difficulty(reading: NoteReading, mention: Mention, base: int) -> int:
    written = " ".join(reading.text[mention.start:mention.end].lower().split())
    listed = mention.section.kind in ("past", "medications", "discharge_medications", "diagnosis", "presenting")
    return base + (0 if listed else 1) + (written != lexicon.bare_name(mention.concept.name).lower())


def _preferred(mentions: tuple[Mention, ...], order: tuple[str, ...]) -> Mention:
    return min(mentions, key=lambda mention: (order.index(mention.section.kind) if mention.section.kind in order
                                              else len(order), mention.start))


def _procedure_question(concept: lexicon.Concept, recent: bool, inpatient: bool) -> str:
    if concept.key == "icu":
        return ("Was the patient admitted to the ICU during this admission?" if inpatient else
                "Was the patient recently in an ICU?") if recent else "Has the patient been in an ICU in the past?"
    verb = VERBS.get(concept.key, "undergo")
    if not recent:
        return f"Has the patient had {concept.name} in the past?"
    return f"Did the patient {verb} {concept.name} during this admission?" if inpatient else \
        f"Did the patient recently {verb} {concept.name}?"


def _social_question(concept: lexicon.Concept) -> str:
    return {"alcohol": "Does the patient drink alcohol?",
            "illicit_drugs": "Does the patient use illicit drugs?"}.get(
        concept.key, f"Does the patient have a history of {lexicon.bare_name(concept.name)}?")


def yes_wording(concept: lexicon.Concept, affirmed: tuple[Mention, ...], inpatient: bool) -> tuple[str, Mention]:
    """The Yes question about an affirmed concept and the mention it quotes; `inpatient`: the note is a hospital
    stay's, whose recent events happened "during this admission"."""
    stay = "during this admission" if inpatient else "recently"
    kind, name, bare = concept.kind, concept.name, lexicon.bare_name(concept.name)
    recent = tuple(mention for mention in affirmed if _recent(mention))
    if kind == lexicon.DRUG:
        mention = _preferred(affirmed, ("discharge_medications", "medications", "other", "presenting"))
        if mention.section.kind == "discharge_medications":
            return f"Is the patient discharged on {name}?", mention
        if mention.section.kind == "medications":
            if HOME_LIST.search(mention.section.name):
                return f"Was the patient taking {name} before admission?", mention
            return f"Is the patient taking {name}?", mention
        if _recent(mention):
            return (f"Did the patient receive {name} during this admission?" if inpatient else
                    f"Has the patient recently received {name}?"), mention
        return f"Has the patient taken {name} in the past?", mention
    if kind == lexicon.CONDITION:
        current = tuple(mention for mention in affirmed if not mention.context.resolved)
        if current:
            return f"Does the patient have {name}?", _preferred(current, ("past", "diagnosis", "presenting"))
        return f"Does the patient have a history of {bare}?", _preferred(affirmed, ("past",))
    if kind in (lexicon.EVENT, lexicon.PROCEDURE):
        mention = _preferred(recent, ("diagnosis", "other", "presenting")) if recent else \
            _preferred(affirmed, ("past",))
        if kind == lexicon.PROCEDURE:
            return _procedure_question(concept, bool(recent), inpatient), mention
        return (f"Did the patient have {name} {stay}?" if recent else
                f"Does the patient have a history of {bare}?"), mention
    if kind == lexicon.FINDING:
        mention = _preferred(affirmed, ("presenting", "exam", "other"))
        if mention.context.historical:
            return f"Does the patient have a history of {bare}?", mention
        if mention.section.kind == "presenting":
            return f"Did the patient present with {name}?", mention
        if mention.section.kind == "exam":
            return f"Was {name} noted on physical examination?", mention
        return f"Did the patient have {name}?", mention
    return _social_question(concept), _preferred(affirmed, ("social",))


def no_wording(concept: lexicon.Concept, negated: tuple[Mention, ...], inpatient: bool) -> tuple[str, Mention]:
    """The No question about a negated concept and the negating mention it quotes."""
    mention = _preferred(negated, ("exam", "presenting", "past", "social", "allergies"))
    kind, name, bare = concept.kind, concept.name, lexicon.bare_name(concept.name)
    if kind == lexicon.CONDITION:
        return f"Does the patient have {name}?", mention
    if kind == lexicon.EVENT:
        if mention.section.kind == "past" or mention.context.historical:
            return f"Does the patient have a history of {bare}?", mention
        return f"Did the patient have {name} {'during this admission' if inpatient else 'recently'}?", mention
    if kind == lexicon.FINDING:
        if mention.section.kind == "exam":
            return f"Was {name} noted on physical examination?", mention
        if mention.section.kind == "presenting":
            return f"Did the patient present with {name}?", mention
        return f"Did the patient have {name}?", mention
    if kind == lexicon.PROCEDURE:
        return _procedure_question(concept, True, inpatient), mention
    if kind == lexicon.DRUG:
        return f"Is the patient on {name}?", mention
    if kind == lexicon.ALLERGY:
        return "Does the patient have any known drug allergies?", mention
    return _social_question(concept), mention


def _concept_candidates(reading: NoteReading) -> tuple[list[Candidate], list[Candidate]]:
    yes, no = [], []
    for concept in lexicon.ALL_CONCEPTS:
        bare = lexicon.bare_name(concept.name)
        status = facts.status_of(reading, concept)
        direct = tuple(mention for mention in status.affirmed if mention.concept.key == concept.key)
        if direct and not status.negated and concept.kind != lexicon.ALLERGY:
            question, mention = yes_wording(concept, direct, reading.inpatient)
            how = "as part of the patient's history" if mention.context.historical else "for the patient"
            yes.append(Candidate(concept.key, concept.kind, question, "Yes", mention.section.name,
                                 quote_span(reading, mention), _difficulty(reading, mention, 2),
                                 f"The {mention.section.name} section mentions {bare} {how}."))
        elif status.negated and not status.affirmed and not status.possible:
            question, mention = no_wording(concept, status.negated, reading.inpatient)
            trigger = next((text for text in mention.context.triggers if text != "(section)"), "a negation")
            no.append(Candidate(concept.key, concept.kind, question, "No", mention.section.name,
                                quote_span(reading, mention), _difficulty(reading, mention, 2),
                                f"The {mention.section.name} section negates {bare} (\"{trigger}\")."))
    return yes, no


def _smoking(reading: NoteReading) -> list[Candidate]:
    if reading.smoking is None:
        return []
    status, start, end = reading.smoking
    section = reading.section_at(start).name
    if not section:
        return []
    says = {"never": "never smoked", "former": "is a former smoker", "current": "currently smokes"}[status]
    question, answer = {"never": ("Has the patient ever smoked?", "No"),
                        "former": ("Does the patient currently smoke?", "No"),
                        "current": ("Does the patient currently smoke?", "Yes")}[status]
    return [Candidate("smoking", lexicon.SOCIAL, question, answer, section, (start, end), 2,
                      f"The {section} section says the patient {says}.")]


def _allergen_candidates(reading: NoteReading) -> list[Candidate]:
    found = []
    for allergen, start, end in facts.allergens(reading):
        section = reading.section_at(start).name
        found.append(Candidate(f"allergy:{allergen}", lexicon.ALLERGY, f"Is the patient allergic to {allergen}?",
                               "Yes", section, (start, end), 2, f"The {section} section lists {allergen}."))
    return found


def _absent_candidates(reading: NoteReading) -> list[Candidate]:
    """No questions where silence is a fair No: drugs a complete medication list lacks (those of the patient's
    conditions first), serious chronic diagnoses a past medical history lacks."""
    affirmed = {mention.concept.key for mention in reading.mentions if mention.context.affirmed}
    related = [drug for condition, drugs in lexicon.RELATED_DRUGS.items() if condition in affirmed for drug in drugs]
    found = []
    for key in dict.fromkeys(related + list(lexicon.COMMON_DRUGS)):
        concept = lexicon.BY_KEY[key]
        if (where := facts.absence_says_no(reading, concept)) is not None:
            section, span = where
            found.append(Candidate(key, "absent_drug", f"Is {key} among the patient's discharge medications?", "No",
                                   section.name, span, 5 if key in related else 4,
                                   f"The {section.name} list does not include {key} or a brand of it, and the note "
                                   "names it nowhere else."))
    for concept in lexicon.CONDITIONS + lexicon.EVENTS:
        if concept.chronic and (where := facts.absence_says_no(reading, concept)) is not None:
            section, span = where
            bare = lexicon.bare_name(concept.name)
            question = f"Does the patient have {concept.name}?" if concept.kind == lexicon.CONDITION else \
                f"Does the patient have a history of {bare}?"
            found.append(Candidate(concept.key, "absent_condition", question, "No", section.name, span, 6,
                                   f"The {section.name} does not list {bare}, a serious diagnosis a discharge summary "
                                   "would record, and the note names it nowhere else."))
    return found


def _take(candidates: list[Candidate], count: int, rng: random.Random, taken: set[str]) -> list[Candidate]:
    """Up to `count` candidates of distinct topics, the groups taking turns in an order the seed shuffles."""
    groups: dict[str, list[Candidate]] = {}
    for candidate in candidates:
        groups.setdefault(candidate.group, []).append(candidate)
    order = sorted(groups)
    rng.shuffle(order)
    for group in order:
        rng.shuffle(groups[group])
    chosen = []
    while len(chosen) < count and any(groups.values()):
        for group in order:
            while groups[group] and len(chosen) < count:
                candidate = groups[group].pop(0)
                if candidate.topic not in taken:
                    taken.add(candidate.topic)
                    chosen.append(candidate)
                    break
    return chosen


def yes_no_candidates(reading: NoteReading, count: int, rng: random.Random) -> list[Candidate]:
    yes, no = _concept_candidates(reading)
    for candidate in _smoking(reading):
        (yes if candidate.answer == "Yes" else no).append(candidate)
    yes += _allergen_candidates(reading)
    yes = [candidate for candidate in yes if candidate.section]
    no = [candidate for candidate in no if candidate.section]
    taken: set[str] = set()
    chosen_yes = _take(yes, count, rng, taken)
    chosen_no = _take(no, count, rng, taken)
    if len(chosen_no) < count:  # silence only where the negations run out
        chosen_no += _take(_absent_candidates(reading), count - len(chosen_no), rng, taken)
    chosen = chosen_yes + chosen_no
    rng.shuffle(chosen)
    return chosen


def note_rng(seed: int, note_text: str, question_type: str) -> random.Random:
    """The generator of one (seed, note, question type): the same items every run, on every machine."""
    digest = hashlib.sha256(f"{seed}\0{question_type}\0{note_text}".encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def items_for(note_text: str, question_type: str, questions_per_type: int, seed: int = 0) -> list[dict]:
    """The items the text-only teacher writes for one note and question type."""
    from teachers.numbers import na_bool_candidates, na_numeric_candidates, numeric_candidates

    if question_type not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {question_type!r}; choose from {', '.join(QUESTION_TYPES)}")
    reading = read_note(note_text)
    rng = note_rng(seed, note_text, question_type)
    if question_type == "yes_no":
        chosen = yes_no_candidates(reading, questions_per_type, rng)
    elif question_type == "numeric":
        chosen = numeric_candidates(reading, max_questions("numeric", questions_per_type), rng)
    elif question_type == "na-numeric":
        chosen = na_numeric_candidates(reading, questions_per_type, rng)
    else:
        chosen = na_bool_candidates(reading, questions_per_type, rng)
    return [candidate.item(note_text) for candidate in chosen]


def take(candidates: list[Candidate], count: int, rng: random.Random) -> list[Candidate]:
    return _take(candidates, count, rng, set())

