"""What a read note says of a concept: affirmed, negated, uncertain, a relative's, or silent, and when silence is a No.

The teacher (teachers/questions.py) and the classifier (teachers/answer.py) decide with these same rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from teachers import lexicon
from teachers.reading import BULLET, Mention, NoteReading, Section, find_names

MEDICATION_LIST_MIN = 3  # list items that make a medication list look complete
QUOTE_LIMIT = 300


@dataclass(frozen=True)
class Status:
    concept: lexicon.Concept
    affirmed: tuple[Mention, ...]  # the patient's, its members' included
    negated: tuple[Mention, ...]
    possible: tuple[Mention, ...]  # uncertain: "possible", "r/o" (no answer either way)
    hypothetical: tuple[Mention, ...]  # a risk, a plan, a conditional: no occurrence
    family: tuple[Mention, ...]


def status_of(reading: NoteReading, concept: lexicon.Concept) -> Status:
    affirmed, negated, possible, hypothetical, family = [], [], [], [], []
    for mention in reading.of(concept.key):
        context = mention.context
        if context.family:
            family.append(mention)
        elif context.possible:
            possible.append(mention)
        elif context.hypothetical:
            hypothetical.append(mention)
        elif context.negated:
            negated.append(mention)
        else:
            affirmed.append(mention)
    for member in concept.members:
        affirmed += [mention for mention in reading.of(member) if mention.context.affirmed]
    return Status(concept, tuple(affirmed), tuple(negated), tuple(possible), tuple(hypothetical), tuple(family))


def names_of(concept: lexicon.Concept) -> tuple[str, ...]:
    """Every word that would mention the concept: its names, related words, its members' names."""
    names = list(concept.aliases) + list(concept.related)
    for member in concept.members:
        names += list(lexicon.BY_KEY[member].aliases)
    return tuple(names)


def absent(reading: NoteReading, concept: lexicon.Concept) -> bool:
    """The note names neither the concept nor anything related to it anywhere (headings included), but as a
    hypothetical ("stroke risk", "return if chest pain"), which is no occurrence."""
    hypothetical = {(mention.start, mention.end) for mention in reading.mentions
                    if mention.context.hypothetical and not mention.context.possible}
    names = tuple((name, name) for name in names_of(concept))
    return all((start, end) in hypothetical for start, end, _ in find_names(reading.text, names))


def body_quote(reading: NoteReading, section: Section, limit: int = QUOTE_LIMIT) -> tuple[int, int]:
    """The section's body without surrounding whitespace, cut at a line end to about `limit` characters."""
    body = reading.text[section.start:section.end]
    stripped = body.strip()
    start = section.start + body.index(stripped) if stripped else section.start
    end = start + len(stripped)
    if end - start > limit:
        cut = reading.text.rfind("\n", start, start + limit)
        end = cut if cut > start else start + limit
        end = start + len(reading.text[start:end].rstrip())
    return start, end


def medication_list(reading: NoteReading) -> Section | None:
    """The discharge medication list where it looks complete: at least three listed drugs."""
    for section in reading.sections_of_kind("discharge_medications"):
        lines = [line.strip() for line in reading.text[section.start:section.end].splitlines() if line.strip()]
        listed = sum(bool(BULLET.match(line)) for line in lines)
        drugs = {mention.concept.key for mention in reading.mentions
                 if mention.section == section and mention.concept.kind == lexicon.DRUG}
        if max(listed, len(drugs)) >= MEDICATION_LIST_MIN and drugs:
            return section
    return None


def past_history(reading: NoteReading) -> Section | None:
    """The past medical history, where the note has one with something in it."""
    for section in reading.sections_of_kind("past"):
        if "surgical" not in section.name.lower() and reading.text[section.start:section.end].strip():
            return section
    return None


def absence_says_no(reading: NoteReading, concept: lexicon.Concept) -> tuple[Section, tuple[int, int]] | None:
    """Where the note's silence about a concept is a fair No: a drug (or every drug of a class) missing from a
    complete-looking discharge medication list, a serious chronic diagnosis missing from the past medical
    history; the section and quote that show it. None elsewhere."""
    if not absent(reading, concept):
        return None
    if concept.kind == lexicon.DRUG:
        section = medication_list(reading)
    elif concept.chronic:
        section = past_history(reading)
    else:
        section = None
    return None if section is None else (section, body_quote(reading, section))


def allergens(reading: NoteReading) -> list[tuple[str, int, int]]:
    """(allergen, start, end) listed in the Allergies section, unless it says the patient has none."""
    found = []
    names = tuple((alias, allergen) for allergen, aliases in lexicon.ALLERGENS.items() for alias in aliases)
    for section in reading.sections_of_kind("allergies"):
        if any(mention.context.negated for mention in reading.mentions if mention.section == section):
            continue
        found += [(key, start, end) for start, end, key in find_names(reading.text, names, section.start,
                                                                        section.end)]
    return found


def allergy_statement(reading: NoteReading) -> Mention | None:
    """The negated allergy mention ("No Known Allergies"), where the note has one."""
    return next((mention for mention in reading.mentions
                 if mention.concept.kind == lexicon.ALLERGY and mention.context.negated), None)


def first_words(text: str, words: tuple[str, ...]) -> bool:
    """Whether any of the words begins a word of the text (any case)."""
    return any(re.search(rf"(?<![\w]){re.escape(word)}", text, re.I) for word in words)
