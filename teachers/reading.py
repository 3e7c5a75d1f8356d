"""A note read by rules: its sections and sentences, the concepts it mentions with their context, and its values.

    reading = read_note(text)
    reading.sections          # Section(name, start, end), in order
    reading.mentions          # Mention(concept, start, end, section, sentence, context)
    reading.values            # Value(attribute, name, value, start, end, section, source, kind, unit)

Everything keeps character offsets into the note, so that a quote is always an exact substring of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from clinical_distil.prompts import SECTIONS
from teachers import lexicon
from teachers.context import FAMILY, HISTORICAL, Context, assess

# headings that may carry text on their own line ("Allergies: NKDA", "Service: MEDICINE"): the shipped sections,
# the other headings of MIMIC discharge summaries and their header fields; any other "Word Word:" line that
# holds nothing after its colon is a heading too
KNOWN_HEADINGS = {name.lower() for name in SECTIONS} | {
    "chief complaint", "allergies", "service", "attending", "admission date", "discharge date", "date of birth",
    "sex", "major surgical or invasive procedure", "hospital course", "medications on admission",
    "admission medications", "home medications", "discharge diagnosis", "discharge diagnoses",
    "followup instructions", "follow-up instructions", "impression", "assessment and plan", "assessment", "plan",
    "labs", "laboratory data", "review of systems", "discharge labs", "admission labs", "imaging", "studies",
    "past surgical history", "pmh", "psh", "hpi", "ros", "social hx", "family hx", "physical examination",
    "discharge exam", "admission exam", "discharge physical exam", "admission physical exam", "history",
}
HEADING = re.compile(r"^[ \t]*(?P<name>[A-Za-z][A-Za-z0-9 /&(),'-]{0,60}?)[ \t]*:(?P<rest>[^\n]*)$", re.M)
CAPS_HEADING = re.compile(r"^[ \t]*(?P<name>[A-Z][A-Z /&-]{2,60}[A-Z])[ \t]*:?[ \t]*$", re.M)
PAST_HISTORY = ("past medical history", "past surgical history", "pmh", "psh", "past history")
FAMILY_HISTORY = ("family history", "family hx")
BULLET = re.compile(r"^(?:[-*\u2022]|\d{1,2}[.)])\s+")
NUMBER = r"\d+(?:\.\d+)?"


@dataclass(frozen=True)
class Section:
    name: str  # the heading as the note writes it (the shipped section name where it is one)
    heading_start: int
    start: int  # the body, after the heading's colon
    end: int

    @property
    def kind(self) -> str:
        """What the section holds, for context and wording: past, family, social, medications, discharge_medications,
        allergies, exam, presenting, results, instructions or other."""
        return section_kind(self.name)


def section_kind(name: str) -> str:
    lowered = name.lower()
    checks = (
        (PAST_HISTORY + ("problem",), "past"), (FAMILY_HISTORY, "family"), (("social",), "social"),
        (("allerg",), "allergies"),
        (("discharge medication", "discharge meds"), "discharge_medications"),
        (("medication", "meds"), "medications"), (("exam",), "exam"),
        (("chief complaint", "present illness", "hpi"), "presenting"),
        (("result", "labs", "laboratory"), "results"), (("instruction",), "instructions"),
        (("discharge diagnos",), "diagnosis"), (("discharge condition",), "condition"),
    )
    return next((kind for words, kind in checks if any(word in lowered for word in words)), "other")


def _heading_name(raw: str) -> str:
    name = " ".join(raw.split())
    canonical = {section.lower(): section for section in SECTIONS}
    if name.lower() in canonical:
        return canonical[name.lower()]
    return name.title() if name.isupper() and len(name.split()) > 1 else name  # "HOSPITAL COURSE", but "PMH"


def sections_of(text: str) -> list[Section]:
    """The note's sections in order; text before the first heading is the section "" (the note's header)."""
    starts: list[tuple[int, int, str]] = []  # (heading start, body start, name)
    for match in HEADING.finditer(text):
        name, rest = match.group("name").strip(), match.group("rest")
        words = name.split()
        if name[0].isupper() and len(words) <= 6 and (not rest.strip() or name.lower() in KNOWN_HEADINGS):
            starts.append((match.start("name"), match.start("rest"), _heading_name(name)))
    for match in CAPS_HEADING.finditer(text):
        name = match.group("name")
        if (len(name.split()) >= 2 or name.lower() in KNOWN_HEADINGS) and \
                not any(start <= match.start("name") < body for start, body, _ in starts):
            starts.append((match.start("name"), match.end(), _heading_name(name)))
    starts.sort()
    sections, previous = [], (0, 0, "")
    for current in starts + [(len(text), len(text), None)]:
        if current[0] > previous[1] or previous[2]:
            sections.append(Section(previous[2], previous[0], previous[1], current[0]))
        previous = current
    return sections


BOUNDARY = re.compile(r"\n|[.!?](?=\s)|;")
WRAPPED_LINE = 50  # a line at least this long that goes on in lower case on the next is one wrapped sentence


def _boundaries(text: str, start: int, end: int) -> list[int]:
    """Where sentences end: full stops, semicolons, and line ends but those of a wrapped line."""
    stops = []
    for match in BOUNDARY.finditer(text, start, end):
        line_start = max(text.rfind("\n", start, match.start()) + 1, start)
        if match.group() == "\n":
            following = text[match.end():end].lstrip(" \t")
            if match.start() - line_start >= WRAPPED_LINE and following[:1].islower():
                continue
        elif match.group() == "." and text[line_start:match.start()].strip().isdigit():
            continue  # the number of a list item ("2. aspirin")
        stops.append(match.end())
    return stops


def sentences_of(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """Sentence spans of text[start:end]: split at full stops, semicolons and line ends (a long line that goes on
    in lower case is wrapped prose and goes on), without their whitespace and list marks."""
    spans, position = [], start
    for stop in _boundaries(text, start, end) + [end]:
        piece = text[position:stop]
        stripped = piece.strip()
        if stripped:
            offset = position + piece.index(stripped)
            marker = BULLET.match(stripped)
            if marker and marker.end() < len(stripped):
                offset, stripped = offset + marker.end(), stripped[marker.end():]
            spans.append((offset, offset + len(stripped.rstrip(";"))))
        position = stop
    return spans


def alias_pattern(alias: str) -> str:
    return r"(?<![\w])" + re.escape(alias).replace(r"\ ", r"\s+") + r"(?![\w])"


def exact_case(alias: str) -> bool:
    """Short names with capitals are read as written ("AF", "MI", "Cr"); others in any case."""
    return len(alias) <= 5 and alias != alias.lower()


@lru_cache(maxsize=None)
def alias_matcher(names: tuple[tuple[str, str], ...]) -> tuple[re.Pattern, re.Pattern, dict[str, str]]:
    """For (alias, key) pairs: an alternation of the aliases read in any case, one of those read as written (each
    longest first), and the key of each alias (lower case for the first)."""
    folded = sorted({alias for alias, _ in names if not exact_case(alias)}, key=lambda alias: (-len(alias), alias))
    exact = sorted({alias for alias, _ in names if exact_case(alias)}, key=lambda alias: (-len(alias), alias))
    keys = {(alias if exact_case(alias) else " ".join(alias.lower().split())): key for alias, key in names}
    never = "(?!x)x"
    return (re.compile("|".join(map(alias_pattern, folded)) or never, re.I),
            re.compile("|".join(map(alias_pattern, exact)) or never), keys)


def find_names(text: str, names: tuple[tuple[str, str], ...], start: int = 0,
               end: int | None = None) -> list[tuple[int, int, str]]:
    """(start, end, key) of every alias in text[start:end], the longer kept where two overlap."""
    folded, exact, keys = alias_matcher(names)
    end = len(text) if end is None else end
    found = [(match.start(), match.end(), keys[" ".join(match.group().lower().split())])
             for match in folded.finditer(text, start, end)]
    found += [(match.start(), match.end(), keys[match.group()]) for match in exact.finditer(text, start, end)]
    kept: list[tuple[int, int, str]] = []
    for item in sorted(found, key=lambda item: (-(item[1] - item[0]), item[0])):
        if all(item[1] <= other[0] or item[0] >= other[1] for other in kept):
            kept.append(item)
    return sorted(kept)


CONCEPT_NAMES = tuple((alias, concept.key) for concept in lexicon.ALL_CONCEPTS for alias in concept.aliases)


@dataclass(frozen=True)
class Mention:
    concept: lexicon.Concept
    start: int
    end: int
    section: Section
    sentence: tuple[int, int]
    context: Context


@dataclass(frozen=True)
class Value:
    attribute: str  # what is measured: a MEASURES key, "dose:<drug>", "drinks_per_week", ...
    name: str  # as a question names it
    value: str  # the number as the note writes it
    start: int
    end: int
    section: Section
    source: tuple[int, int]  # the line around it
    kind: str  # lab, vital, score, dose, social, transfusion
    unit: str = ""


@dataclass(frozen=True)
class NoteReading:
    text: str
    sections: tuple[Section, ...]
    mentions: tuple[Mention, ...]
    values: tuple[Value, ...]
    smoking: tuple[str, int, int] | None  # (never | former | current, start, end of its phrase)

    @property
    def inpatient(self) -> bool:
        """A hospital stay's note (a discharge summary): questions may say "during this admission"."""
        return any(word in section.name.lower() for section in self.sections
                   for word in ("discharge", "hospital course", "admission"))

    def section_at(self, position: int) -> Section:
        return next(section for section in reversed(self.sections) if section.heading_start <= position)

    def of(self, key: str) -> list[Mention]:
        return [mention for mention in self.mentions if mention.concept.key == key]

    def sections_of_kind(self, *kinds: str) -> list[Section]:
        return [section for section in self.sections if section.kind in kinds]


def _mentions(text: str, sections: list[Section]) -> list[Mention]:
    mentions = []
    for section in sections:
        if section.kind == "allergies":
            allowed = {lexicon.ALLERGY}
        else:
            allowed = {lexicon.CONDITION, lexicon.EVENT, lexicon.FINDING, lexicon.PROCEDURE, lexicon.DRUG,
                       lexicon.SOCIAL}
        feature = {"past": HISTORICAL, "family": FAMILY}.get(section.kind)
        spans = sentences_of(text, section.start, section.end)
        for start, end, key in find_names(text, CONCEPT_NAMES, section.start, section.end):
            concept = lexicon.BY_KEY[key]
            sentence = next((span for span in spans if span[0] <= start and end <= span[1]), None)
            if concept.kind not in allowed or sentence is None:
                continue
            context = assess(text[sentence[0]:sentence[1]], start - sentence[0], end - sentence[0], feature)
            mentions.append(Mention(concept, start, end, section, sentence, context))
    return mentions


SMOKING = (  # CDC NHIS smoking-status categories, in the order they are tested
    ("never", re.compile(r"\b(?:never\s+(?:a\s+)?smoke[rd]|non-?smoker|never\s+used\s+tobacco|denies\s+(?:any\s+)?"
                         r"(?:tobacco|smoking|cigarettes)|no\s+(?:history\s+of\s+)?(?:tobacco|smoking)(?:\s+use|"
                         r"\s+history)?)\b", re.I)),
    ("former", re.compile(r"\b(?:former\s+(?:smoker|tobacco)|ex-?smoker|quit\s+(?:smoking|tobacco)|past\s+smoker|"
                          r"remote\s+(?:smoking|tobacco)|quit\s+\d+\s+years?\s+ago)\b", re.I)),
    ("current", re.compile(r"\b(?:current(?:ly)?\s+(?:smoker|smokes|tobacco)|active\s+smoker|smokes\s+\d+|"
                           r"\d+(?:\.\d+)?\s*(?:ppd|packs?\s+per\s+day))\b", re.I)),
)


def smoking_status(text: str) -> tuple[str, int, int] | None:
    for status, pattern in SMOKING:
        if (match := pattern.search(text)) is not None:
            return status, match.start(), match.end()
    return None


@lru_cache(maxsize=256)
def read_note(text: str) -> NoteReading:
    """The note's sections, concept mentions (with their ConText status) and values."""
    from teachers.values import values_of

    sections = sections_of(text)
    reading = NoteReading(text, tuple(sections), tuple(_mentions(text, sections)), (), smoking_status(text))
    return NoteReading(text, reading.sections, reading.mentions, tuple(values_of(reading)), reading.smoking)


def line_span(text: str, start: int, end: int, limit: int = 200) -> tuple[int, int]:
    """The line around [start, end) without its whitespace, cut to about `limit` characters around it."""
    low = text.rfind("\n", 0, start) + 1
    high = text.find("\n", end)
    high = len(text) if high < 0 else high
    if high - low > limit:
        low, high = max(low, start - limit // 2), min(high, end + limit // 2)
    piece = text[low:high]
    stripped = piece.strip()
    offset = low + piece.index(stripped) if stripped else start
    return offset, offset + len(stripped) if stripped else end


def quote_span(reading: NoteReading, mention: Mention, limit: int = 200) -> tuple[int, int]:
    """The sentence of a mention, cut to about `limit` characters around it."""
    low, high = mention.sentence
    if high - low > limit:
        low, high = max(low, mention.start - limit // 2), min(high, mention.end + limit // 2)
        piece = reading.text[low:high]
        stripped = piece.strip()
        low = low + piece.index(stripped)
        high = low + len(stripped)
    return low, high
