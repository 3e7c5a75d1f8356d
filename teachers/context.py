"""Negation, uncertainty, temporality and experiencer of a concept mention, by the ConText algorithm.

Sources of the trigger terms:
- Negation (pre- and post-concept), pseudo-negation, termination and the "possible" (rule-out) terms: NegEx,
  Chapman WW, Bridewell W, Hanbury P, Cooper GF, Buchanan BG. A simple algorithm for identifying negated
  findings and diseases in discharge summaries. J Biomed Inform. 2001;34(5):301-310, in the term list its
  authors published with it (NegEx terms, Chapman lab).
- Historical, hypothetical and experiencer terms, their pseudo-triggers and termination terms, the
  sentence-long scope, one-word scopes ("prior", "s/p"), section headings as triggers and the 14-day rule for
  "N days ago": ConText, Harkema H, Dowling JN, Thornblade T, Chapman WW. ConText: an algorithm for
  determining negation, experiencer, and temporal status from clinical reports. J Biomed Inform.
  2009;42(5):839-851 (and Chapman WW, Chu D, Dowling JN. ConText: an algorithm for identifying contextual
  features from clinical text. BioNLP 2007:81-88).
- Uncertainty terms ("possible", "likely", "concern for", "cannot exclude", "suspicious for"): the
  probable-existence terms of pyConText (Chapman BE, Lee S, Kang HP, Chapman WW. Document-level
  classification of CT pulmonary angiography reports based on an extension of the ConText algorithm. J Biomed
  Inform. 2011;44(5):728-737) as medspaCy's default ConText rules carry them (POSSIBLE_EXISTENCE; Eyre H et
  al. Launching into clinical space with medspaCy: a new clinical text processing toolkit in Python. AMIA Annu
  Symp Proc. 2021:438-447).

Where this module departs from those lists, the terms are kept apart in ADDED_*, each for a reason of
discharge summaries: NegEx's "evaluate for", "test for", "checked for" mark a mention uncertain (the test's
result is not stated); NegEx's "resolved" (medspaCy's "now resolved") marks it historical and resolved, in
either direction (a resolved condition happened); "risk of", "risk for", "at risk for", "referred to",
"referred for", "scheduled for", "plan for", "planned", and after the concept "risk" and "prophylaxis", mark
it hypothetical (a risk, a plan or a prevention is no occurrence), the last two reaching back one word only
("stroke risk", "DVT prophylaxis"). ConText's hypothetical termination terms "his", "her", "patient" are
left out: discharge instructions put them inside the conditional ("call if her chest pain returns").
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

NEGATED, POSSIBLE, HYPOTHETICAL, HISTORICAL, FAMILY, RESOLVED, PSEUDO = (
    "negated", "possible", "hypothetical", "historical", "family", "resolved", "pseudo")
FORWARD, BACKWARD, ONE_WORD, ONE_WORD_BACK = "forward", "backward", "one_word", "one_word_back"

# --- NegEx (Chapman et al. 2001; the published term list) ---
NEGEX_PSEUDO = (
    "no increase", "no suspicious change", "no significant change", "no change", "no interval change",
    "no definite change", "no significant interval change", "not extend", "not cause", "not drain",
    "not certain if", "not certain whether", "gram negative", "without difficulty", "not necessarily", "not only",
)
_RULE_OUT_OBJECTS = ("", " him", " her", " the patient")
NEGEX_PRE_NEGATION = (
    "absence of", "cannot", "cannot see", "declined", "declines", "denied", "denies", "denying",
    "fails to reveal", "free of", "negative for", "never developed", "never had", "no", "no abnormal",
    "no cause of", "no complaints of", "no evidence", "no new evidence", "no other evidence", "no evidence to suggest",
    "no findings of", "no findings to indicate", "no mammographic evidence of", "no new", "no radiographic evidence of",
    "no sign of", "no significant", "no signs of", "no suggestion of", "no suspicious", "not", "not appear",
    "not appreciate", "not associated with", "not complain of", "not demonstrate", "not exhibit", "not feel",
    "not had", "not have", "not know of", "not known to have", "not reveal", "not see", "not to be",
    "patient was not", "rather than", "to exclude", "unremarkable for", "with no", "without",
    "without any evidence of", "without evidence", "without indication of", "without sign of",
    *(f"{verb}{who} out{tail}" for verb in ("rules", "ruled") for who in _RULE_OUT_OBJECTS
      for tail in ("", " for", " against")),
    *(f"{lead} rule{who} out{tail}" for lead in ("did", "can", "adequate to", "sufficient to")
      for who in _RULE_OUT_OBJECTS for tail in ("", " for", " against")),
)
NEGEX_POST_NEGATION = ("unlikely", "free", "was ruled out", "is ruled out", "are ruled out", "have been ruled out",
                       "has been ruled out")
_MODALS = ("should", "ought to", "may", "might", "could", "will", "can", "must", "is to")
NEGEX_PRE_POSSIBLE = (
    "rule out", "r/o", "ro", "rule him out", "rule her out", "rule the patient out", "rule out for",
    "rule him out for", "rule her out for", "rule the patient out for", "be ruled out for",
    *(f"{modal} be ruled out for" for modal in _MODALS), "what must be ruled out is",
)
NEGEX_POST_POSSIBLE = (
    "did not rule out", "not ruled out", "not been ruled out", "being ruled out", "be ruled out",
    *(f"{modal} be ruled out" for modal in _MODALS),
)
_CAUSES = ("cause", "source", "reason", "etiology", "origin")
NEGEX_TERMINATION = (
    "but", "however", "nevertheless", "yet", "though", "although", "still", "aside from", "except", "apart from",
    "secondary to", "trigger event for", "other possibilities of",
    *(f"as {article}{second} {cause} {preposition}" for article in ("the", "a", "an") for second in ("", " secondary")
      for cause in _CAUSES for preposition in ("of", "for")),
    *(f"{cause}{plural} {preposition}" for cause in _CAUSES for plural in ("", "s") for preposition in ("of", "for")),
)

# --- ConText (Harkema et al. 2009) ---
CONTEXT_HISTORICAL_PRE = ("history", "history of", "known to have", "in the past for", "h/o", "hx", "past history",
                          "past medical history")
CONTEXT_HISTORICAL_ONE_WORD = ("pre-existing", "status post", "s/p", "prior", "previous", "previously")
CONTEXT_HISTORICAL_PSEUDO = (
    "history and physical", "history, physical", "history taking", "poor history", "history and examination",
    "history of chief complaint", "history of present illness", "social history", "clinical history",
    "patient history", "day history of", "by his wife", "by her husband", "if negative", "history from",
    "history, and", "history and", "know if", "detailed history",
)
CONTEXT_HISTORICAL_TERMINATION = (
    "sudden onset of", "presented", "presents", "presenting", "complains", "complaining", "coming in with",
    "comes in with", "was found", "states", "reports", "reported", "currently", "today", "noted", "consistent with",
    "ED", "emergency department", "recent",
)
CONTEXT_HYPOTHETICAL_PRE = ("if", "return", "returning", "should he", "should she", "should there", "should the",
                            "call", "as needed", "come back for", "come back to", "look out for")
CONTEXT_HYPOTHETICAL_PSEUDO = ("by his wife", "by her husband", "if negative", "know if")
CONTEXT_HYPOTHETICAL_TERMINATION = ("diagnosis", "who", "since", "because")
_RELATIVES = ("mother", "father", "brother", "sister", "sibling", "aunt", "uncle", "grandmother", "grandfather",
              "cousin", "son", "daughter", "parent", "mom", "dad", "child", "niece", "nephew", "grandparent")
CONTEXT_FAMILY_PRE = ("family history", "family hx", "FH", "children",
                      *(f"{relative}{tail}" for relative in _RELATIVES for tail in ("", "s", "'s")))
CONTEXT_FAMILY_PSEUDO = ("by his wife", "by her husband", "by his daughter", "by her daughter", "by his son",
                         "by her son")
CONTEXT_FAMILY_TERMINATION = ("patient", "pt", "reports", "states", "but", "however")
# ConText's rule for "N days ago": historical only when more than 14 days before the visit
HISTORICAL_DAYS = 14

# --- uncertainty: pyConText's probable-existence terms (Chapman BE et al. 2011), as medspaCy's rules carry them ---
MEDSPACY_POSSIBLE_PRE = (
    "possible", "poss", "probably", "probable", "likely", "questionable", "suspected", "suspicious for",
    "concern for", "concerning for", "concerned for", "concerned about", "worrisome for", "worried about",
    "suggestive of", "may be", "might be", "doubt", "cannot exclude", "cannot be excluded", "can not be excluded",
    "cannot rule out", "cannot be ruled out", "could not rule out", "differential diagnosis",
)

# --- where this module departs from the published lists (the module docstring gives each reason) ---
ADDED_POSSIBLE_PRE = ("evaluate for", "test for", "checked for")
ADDED_RESOLVED_BOTH = ("resolved", "now resolved")
ADDED_HYPOTHETICAL_PRE = ("risk of", "risk for", "at risk for", "referred to", "referred for", "scheduled for",
                          "plan for", "planned")
ADDED_HYPOTHETICAL_POST = ("risk", "prophylaxis")

# (feature, direction) of each list; a pseudo-trigger only takes its words away from shorter triggers
TRIGGER_LISTS = (
    (PSEUDO, FORWARD, NEGEX_PSEUDO + CONTEXT_HISTORICAL_PSEUDO + CONTEXT_HYPOTHETICAL_PSEUDO + CONTEXT_FAMILY_PSEUDO),
    (NEGATED, FORWARD, NEGEX_PRE_NEGATION), (NEGATED, BACKWARD, NEGEX_POST_NEGATION),
    (POSSIBLE, FORWARD, NEGEX_PRE_POSSIBLE + MEDSPACY_POSSIBLE_PRE + ADDED_POSSIBLE_PRE),
    (POSSIBLE, BACKWARD, NEGEX_POST_POSSIBLE),
    (HISTORICAL, FORWARD, CONTEXT_HISTORICAL_PRE), (HISTORICAL, ONE_WORD, CONTEXT_HISTORICAL_ONE_WORD),
    (RESOLVED, FORWARD, ADDED_RESOLVED_BOTH), (RESOLVED, BACKWARD, ADDED_RESOLVED_BOTH),
    (HYPOTHETICAL, FORWARD, CONTEXT_HYPOTHETICAL_PRE + ADDED_HYPOTHETICAL_PRE),
    (HYPOTHETICAL, ONE_WORD_BACK, ADDED_HYPOTHETICAL_POST),
    (FAMILY, FORWARD, CONTEXT_FAMILY_PRE),
)
TERMINATION = {
    NEGATED: NEGEX_TERMINATION, POSSIBLE: NEGEX_TERMINATION, RESOLVED: NEGEX_TERMINATION,
    HISTORICAL: NEGEX_TERMINATION + CONTEXT_HISTORICAL_TERMINATION,
    HYPOTHETICAL: NEGEX_TERMINATION + CONTEXT_HYPOTHETICAL_TERMINATION,
    FAMILY: CONTEXT_FAMILY_TERMINATION,
}
AGO = re.compile(r"\b(\d+|an?|one|two|three|four|five|six|several|few)\s+(day|week|month|year)s?\s+ago\b", re.I)
NUMBER_WORDS = {"a": 1, "an": 1, "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "few": 3,
                "several": 3}
DAYS = {"day": 1, "week": 7, "month": 30, "year": 365}


@dataclass(frozen=True)
class Context:
    """What the sentence (and its section) says of one mention."""

    negated: bool = False
    possible: bool = False  # uncertain: "possible", "r/o", "cannot exclude"
    hypothetical: bool = False  # "if", "return if", a risk or a plan
    historical: bool = False  # "history of", "prior", "s/p", more than 14 days ago, a past-history section
    resolved: bool = False  # "resolved": happened, no longer present
    family: bool = False  # "mother had", a family-history section
    triggers: tuple[str, ...] = ()  # the trigger terms that applied, as written

    @property
    def affirmed(self) -> bool:
        """The patient has, or had, it: not negated, not uncertain, not hypothetical, not a relative's."""
        return not (self.negated or self.possible or self.hypothetical or self.family)


def _pattern(phrase: str) -> str:
    body = re.escape(phrase).replace(r"\ ", r"\s+")
    return rf"(?<![\w/]){body}(?![\w/])"


@lru_cache(maxsize=1)
def _compiled() -> tuple[re.Pattern, re.Pattern, list[tuple[str, str, str]]]:
    """One alternation of every trigger (longest first) for lower-case ones, one for those written in capitals
    (matched as written: "ED", "FH"), and the (feature, direction, phrase) each group stands for."""
    entries = sorted({(feature, direction, phrase) for feature, direction, phrases in TRIGGER_LISTS
                      for phrase in phrases}, key=lambda entry: (-len(entry[2]), entry))
    groups = [f"(?P<t{index}>{_pattern(phrase)})" for index, (_, _, phrase) in enumerate(entries)]
    folded = [group if phrase == phrase.lower() else "(?!x)x" for group, (_, _, phrase) in zip(groups, entries)]
    exact = [group if phrase != phrase.lower() else "(?!x)x" for group, (_, _, phrase) in zip(groups, entries)]
    return re.compile("|".join(folded), re.I), re.compile("|".join(exact)), entries


@dataclass(frozen=True)
class Found:
    feature: str
    direction: str
    start: int
    end: int
    text: str


@lru_cache(maxsize=4096)
def triggers_in(sentence: str) -> tuple[Found, ...]:
    """Every trigger of a sentence, longest first where they overlap (a pseudo-trigger takes its words too)."""
    folded, exact, entries = _compiled()
    candidates = []
    for pattern in (folded, exact):
        position = 0
        while (match := pattern.search(sentence, position)) is not None:
            # overlapping triggers of different lengths: every start is tried, the longest kept below
            feature, direction, _ = entries[int(match.lastgroup[1:])]
            candidates.append(Found(feature, direction, match.start(), match.end(), match.group()))
            position = match.start() + 1
    kept: list[Found] = []
    # longest first; of two as long, a pre-concept trigger ("ruled out for" over "was ruled out")
    for found in sorted(candidates, key=lambda found: (-(found.end - found.start), found.direction != FORWARD,
                                                       found.start)):
        if all(found.end <= other.start or found.start >= other.end for other in kept
               if (other.start, other.end) != (found.start, found.end)):
            kept.append(found)
    return tuple(sorted(kept, key=lambda found: (found.start, found.feature)))


@lru_cache(maxsize=4096)
def _terminations(sentence: str, feature: str) -> tuple[int, ...]:
    """Where termination terms of a feature begin in the sentence."""
    return tuple(match.start() for term in TERMINATION[feature] for match in
                 re.finditer(_pattern(term), sentence, 0 if term != term.lower() else re.I))


def _applies(trigger: Found, start: int, end: int, sentence: str, stops: tuple[int, ...]) -> bool:
    """Whether the mention [start, end) lies in the trigger's scope: up to a termination term or the sentence's
    end (start) in its direction; a one-word trigger reaches the next word only (the word before it, for "risk")."""
    if trigger.direction in (FORWARD, ONE_WORD):
        if trigger.end > start:
            return False
        if trigger.direction == ONE_WORD:
            return len(re.findall(r"[\w'-]+", sentence[trigger.end:start])) <= 1
        return not any(trigger.end <= stop < start for stop in stops)
    if trigger.start < end:
        return False
    if trigger.direction == ONE_WORD_BACK:
        return len(re.findall(r"[\w'-]+", sentence[end:trigger.start])) <= 1
    return not any(end <= stop < trigger.start for stop in stops)


def long_ago(sentence: str) -> str | None:
    """A time expression of the sentence more than 14 days back ("4 years ago"), as written."""
    for match in AGO.finditer(sentence):
        count = match.group(1).lower()
        number = int(count) if count.isdigit() else NUMBER_WORDS[count]
        if number * DAYS[match.group(2).lower()] > HISTORICAL_DAYS:
            return match.group()
    return None


def assess(sentence: str, start: int, end: int, section_feature: str | None = None) -> Context:
    """The context of the mention at [start, end) of `sentence`; `section_feature` is HISTORICAL or FAMILY
    where the section heading is itself a trigger (ConText: a past-history or family-history section)."""
    applied: dict[str, list[str]] = {}
    found = [trigger for trigger in triggers_in(sentence) if trigger.feature != PSEUDO
             and not (trigger.start < end and trigger.end > start)]
    stops = {feature: _terminations(sentence, feature) for feature in TERMINATION}
    for trigger in found:
        if _applies(trigger, start, end, sentence, stops[trigger.feature]):
            applied.setdefault(trigger.feature, []).append(trigger.text)
    if (expression := long_ago(sentence)) is not None:
        applied.setdefault(HISTORICAL, []).append(expression)
    if section_feature is not None:
        applied.setdefault(section_feature, []).append("(section)")
    resolved = RESOLVED in applied
    return Context(negated=NEGATED in applied, possible=POSSIBLE in applied, hypothetical=HYPOTHETICAL in applied,
                   historical=HISTORICAL in applied or resolved, resolved=resolved, family=FAMILY in applied,
                   triggers=tuple(text for texts in applied.values() for text in texts))
