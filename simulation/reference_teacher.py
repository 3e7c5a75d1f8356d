"""The reference teacher: stage A's replies written from the simulated patients' fact sheets.

Not a language model. For a note of the known-answer corpus and a question type it writes the reply
a careful teacher would: questions about facts the note states (with the answer, the note's own
words as the quote, the section, a difficulty and an explanation), yes/no questions about
conditions, events and drugs that the note's complete lists leave out (No, quoting the list), and,
for the "not in the note" types, questions about facts the note lacks. The items are in the JSON the
teacher prompts ask for, in the same chunk files and manifest as a language model's, so the rest of
the pipeline cannot tell them apart; the manifest and the report say that the teacher was the
reference.

Every question it writes is one the truth checker (simulation/truth.py) reads, and its answer is
the checker's: the reference teacher's precision is 1 by construction, which is what makes it the
upper reference for a language model teacher on the same notes.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd

from clinical_distil import layout
from clinical_distil.engines import Generation, Sampling, written_reply
from clinical_distil.files import InputError
from clinical_distil.prompts import max_questions
from simulation.samples import FactSheet
from simulation.truth import expected_answer, vitals_of
from simulation.varied import Mention

REFERENCE = "reference"  # its name under clinical_distil.engines: the --model_id (the driver's `teacher`) that selects it
TEACHER_KIND = "reference: replies written from the simulated patients' fact sheets, not by a language model"

CONDITION_NAMES = {
    "afib": ["atrial fibrillation", "AF"], "t2d": ["type 2 diabetes", "diabetes mellitus"],
    "hypertension": ["hypertension", "high blood pressure"], "heart_failure": ["heart failure", "CHF"],
    "cad": ["coronary artery disease", "CAD"], "mdd": ["major depressive disorder", "depression"],
    "schizophrenia": ["schizophrenia"], "bipolar": ["bipolar disorder"],
    "hemorrhagic": ["a bleeding disorder such as von Willebrand disease", "a bleeding disorder"],
    "peptic_ulcer_disease": ["peptic ulcer disease", "a peptic or duodenal ulcer"],
    "surgical_valvular_disease": ["aortic stenosis", "a valve lesion needing surgical valve replacement"],
    "dementia": ["dementia", "Alzheimer dementia"], "abdominal_surgery": ["abdominal surgery",
                                                                         "intra-abdominal surgery"],
}
EVENT_NAMES = {"mi": ["a myocardial infarction", "an MI"], "stroke": ["a stroke", "an ischemic stroke"],
               "bleed": ["a GI bleed", "a gastrointestinal bleeding episode"],
               "keto": ["diabetic ketoacidosis", "an episode of DKA"]}
WINDOWS = [(30, "in the past 30 days"), (90, "in the past 3 months"), (180, "in the past 6 months"),
           (365, "in the past year"), (730, "in the past 2 years")]
LAB_NAMES = {"creatinine": "creatinine", "hba1c": "hemoglobin A1c", "platelets": "platelet count",
             "hemoglobin": "hemoglobin", "wbc": "white blood cell count", "glucose": "glucose", "ast": "AST",
             "alt": "ALT", "bilirubin": "total bilirubin"}
AGGREGATES = [("highest", "highest"), ("lowest", "lowest"), ("first", "first recorded"),
              ("last", "most recent")]
# one set of wordings for a lab question whether or not the note holds the lab: were "the patient's
# highest X" kept for absent labs, a student would learn NA from the wording instead of the note
LAB_TEMPLATES = ["What was the {which} {name} value?", "What was the patient's {which} {name}?",
                 "What is the patient's {which} {name}?", "What was the {which} {name} recorded in this note?"]
ABSENT_NUMERIC = ["What was the patient's highest troponin T value?", "What was the most recent LDL cholesterol?",
                  "What was the patient's INR on admission?", "What was the TSH level?",
                  "What was the BNP on admission?", "What was the serum lactate?", "What was the admission potassium?",
                  "What was the serum albumin?", "What was the patient's weight in kilograms?",
                  "What was the serum sodium on admission?", "What was the patient's BMI?",
                  "What was the ferritin level?"]
UNKNOWABLE_BOOLEAN = ["Did the patient receive an influenza vaccine this season?",
                      "Has the patient ever been tested for hepatitis C?",
                      "Has the patient had a screening colonoscopy?",
                      "Has the patient received a pneumococcal vaccine?", "Does the patient own a firearm?",
                      "Has the patient ever had a DEXA scan?", "Has the patient had a sleep apnea study?",
                      "Has the patient had a tetanus booster in the last 10 years?",
                      "Does the patient have an advance directive on file?",
                      "Has the patient ever had an HIV test?", "Is the patient a veteran?",
                      "Has the patient traveled abroad in the past month?"]


@dataclass
class Item:
    question: str
    type: str
    answer: Any
    section: str
    source: str
    difficulty: int
    explanation: str

    def as_json(self) -> dict[str, Any]:
        return dict(self.__dict__)


def _number_text(value: float | int) -> str:
    return f"{value:g}"


def _quote(mentions: list[Mention], key: str, value: float | None = None) -> Mention | None:
    for mention in mentions:
        if mention.key == key and (value is None or mention.value == value):
            return mention
    return None


# adds a yes/no item when the truth checker answers the question Yes or No: (question, quote, difficulty, why)
AddItem = Callable[[str, "Mention | None", int, str], None]


def yes_no_items(sheet: FactSheet, mentions: list[Mention], rng: random.Random) -> list[Item]:
    """Every yes/no question this note answers, with its quote (the caller picks among them)."""
    items: list[Item] = []
    vitals = vitals_of(mentions)

    def add(question: str, mention: Mention | None, difficulty: int, why: str) -> None:
        expected = expected_answer(question, sheet, vitals)
        if mention is None or expected is None or expected.answer not in ("Yes", "No"):
            return
        items.append(Item(question, "boolean", expected.answer, mention.section, mention.text, difficulty,
                          why.format(answer=expected.answer.lower())))

    # A condition, event or drug the note does not name is a "No": the past medical history and the discharge
    # medications are complete lists. The quote is a line of that list; without these items a student learns
    # to answer Yes to any diagnosis it is asked about unless the note denies it.
    history = next((mention for mention in mentions if mention.section == "Past Medical History"
                    and mention.key.startswith(("cond:", "neg:"))), None)
    medications = next((mention for mention in mentions if mention.key.startswith("med:")), None)
    _condition_questions(add, mentions, history, rng)
    _event_questions(add, sheet, mentions, history, rng)
    _drug_questions(add, mentions, medications, rng)
    _social_questions(add, mentions, rng)
    _lab_threshold_questions(add, mentions)
    return items


UNLISTED = "The past medical history lists the patient's conditions, and not this one."


def _condition_questions(add: AddItem, mentions: list[Mention], history: Mention | None,
                         rng: random.Random) -> None:
    for name, words in CONDITION_NAMES.items():
        word = rng.choice(words)
        mention = _quote(mentions, f"cond:{name}") or _quote(mentions, f"neg:{name}")
        phrasing = rng.choice(["Does the patient have {}?", "Is there a history of {}?",
                               "Has the patient been diagnosed with {}?"])
        if mention is None:
            add(phrasing.format(word), history, 5, UNLISTED)
            continue
        add(phrasing.format(word), mention, 3 if mention.key.startswith("cond") else 4,
            "The note " + ("lists" if mention.key.startswith("cond") else "explicitly denies") + " it.")


def _event_questions(add: AddItem, sheet: FactSheet, mentions: list[Mention], history: Mention | None,
                     rng: random.Random) -> None:
    for name, words in EVENT_NAMES.items():
        mention = _quote(mentions, f"event:{name}")
        word = rng.choice(words)
        if mention is None:
            add(f"Has the patient ever had {word}?", history, 5, UNLISTED)
            add(f"Has the patient had {word} {rng.choice(WINDOWS)[1]}?", history, 6, UNLISTED)
            continue
        add(f"Has the patient ever had {word}?", mention, 3, "The note describes the event.")
        days = {"mi": sheet.mi_days_ago, "stroke": sheet.stroke_days_ago, "bleed": sheet.bleed_days_ago,
                "keto": sheet.keto_days_ago}[name]
        windows = [(limit, text) for limit, text in WINDOWS if days is None or abs(days - limit) > 15]
        # a window that holds the event and one that does not, equally often where both exist: most events a
        # note dates are recent, and a random window would nearly always hold them
        inside = [window for window in windows if days is not None and days <= window[0]]
        outside = [window for window in windows if window not in inside]
        choices = rng.choice([side for side in (inside, outside) if side] or [[]])
        if choices:
            limit, text = rng.choice(choices)
            add(f"Has the patient had {word} {text}?", mention, 6,
                "The note dates the event, so the answer is {answer} for this time window.")


def _drug_questions(add: AddItem, mentions: list[Mention], medications: Mention | None, rng: random.Random) -> None:
    for drug in ("aspirin", "apixaban", "warfarin", "metformin", "furosemide", "metoprolol", "atorvastatin"):
        mention = _quote(mentions, f"med:{drug}")
        question = rng.choice([f"Is the patient taking {drug} at discharge?", f"Is {drug} among the discharge "
                               "medications?", f"Was the patient discharged on {drug}?"])
        if mention is not None:
            add(question, mention, 2, "The discharge medications list it.")
        else:
            add(question, medications, 4, "The discharge medications do not list it.")
    supplement = next((mention for mention in mentions if mention.key.startswith("supp:")), None)
    if supplement is not None:
        add(rng.choice(["Is the patient taking a dietary supplement?", "Does the patient take any vitamins or "
                        "supplements?"]), supplement, 4, "A supplement is among the discharge medications.")


SOCIAL_QUESTIONS = (
    ("social:alcohol", ["Does the patient drink alcohol?", "Does the patient drink more than 14 alcoholic "
                        "drinks per week?", "Does the patient report heavy alcohol use?"],
     "The social history states the patient's drinking."),
    ("social:drugs", ["Does the patient use illicit drugs?", "Is there a history of recreational drug use?"],
     "The social history addresses drug use."),
    ("social:smoking", ["Is the patient a current smoker?", "Has the patient ever smoked tobacco?"],
     "The social history states the smoking status."),
    ("social:language", ["Does the patient speak English?", "Does the patient need an interpreter?"],
     "The social history states the language."),
    ("cond:cannot_decide", ["Is the patient able to make their own medical decisions?"],
     "The exam documents the patient's mental status."),
    ("cond:oriented", ["Is the patient able to make their own medical decisions?"],
     "The exam documents the patient's mental status."))


def _social_questions(add: AddItem, mentions: list[Mention], rng: random.Random) -> None:
    for key, questions, why in SOCIAL_QUESTIONS:
        mention = _quote(mentions, key)
        if mention is not None:
            add(rng.choice(questions), mention, 4 if key.startswith("social") else 6, why)


def _lab_threshold_questions(add: AddItem, mentions: list[Mention]) -> None:
    for lab, threshold in (("creatinine", 1.5), ("hemoglobin", 10.0), ("platelets", 150.0), ("glucose", 200.0)):
        values = [mention for mention in mentions if mention.key == f"lab:{lab}"]
        if not values:
            continue
        above = lab in ("creatinine", "glucose")
        extreme = max(values, key=lambda m: m.value) if above else min(values, key=lambda m: m.value)
        word = "above" if above else "below"
        add(f"Was any {LAB_NAMES[lab]} value {word} {threshold:g}?", extreme, 6,
            f"The {'highest' if above else 'lowest'} recorded value decides: the answer is {{answer}}.")


def lab_question(name: str, rng: random.Random, several_values: bool = False) -> tuple[str, str]:
    """A question about a lab in one of LAB_TEMPLATES, and the words in it that say which value is meant (said
    when the note has several values; else "" at times)."""
    which = rng.choice([words for _, words in AGGREGATES] + ([] if several_values else ["", ""]))
    return " ".join(rng.choice(LAB_TEMPLATES).format(which=which, name=name).split()), which


def numeric_items(sheet: FactSheet, mentions: list[Mention], rng: random.Random) -> list[Item]:
    items: list[Item] = []
    vitals = vitals_of(mentions)
    for lab, name in LAB_NAMES.items():
        draws = [mention for mention in mentions if mention.key == f"lab:{lab}"]
        if not draws:
            continue
        if len({mention.value for mention in draws}) == 1:
            question, _ = lab_question(name, rng)
            mention = draws[0]
            difficulty, why = 3, "It is the only value of this lab in the note."
        else:
            question, words = lab_question(name, rng, several_values=True)
            expected = expected_answer(question, sheet, vitals)
            mention = next((m for m in draws if m.value == expected.answer), None) if expected else None
            if mention is None:
                continue
            difficulty, why = 6, f"Of the {len(draws)} values in the note, this is the {words} one."
        add_numeric(items, question, mention, difficulty, why, sheet, vitals)
    for key, question, difficulty, why in SINGLE_NUMBERS:
        mention = _quote(mentions, key)
        if mention is not None:
            add_numeric(items, question, mention, difficulty, why, sheet, vitals)
    return items


# numbers a note states once: (mention key, question, difficulty, explanation)
SINGLE_NUMBERS = (
    ("vital:heart_rate", "What was the heart rate on admission?", 2, "The vital signs."),
    ("vital:temperature", "What was the temperature on admission?", 2, "The vital signs."),
    ("vital:systolic", "What was the systolic blood pressure on admission?", 2, "The vital signs."),
    ("vital:oxygen_saturation", "What was the oxygen saturation on admission?", 2, "The vital signs."),
    ("lvef", "What was the left ventricular ejection fraction?", 4, "The echo result."),
    ("chads2", "What was the documented CHADS2 score?", 4, "The hospital course states it."),
    ("social:alcohol", "How many alcoholic drinks does the patient have per week?", 4,
     "The social history states it."),
)


def add_numeric(items: list[Item], question: str, mention: Mention, difficulty: int, why: str, sheet: FactSheet,
                vitals: dict[str, float]) -> None:
    """A numeric item whose answer is the truth checker's, so the teacher and the check cannot disagree."""
    expected = expected_answer(question, sheet, vitals)
    # labs drawn as whole numbers (platelets, glucose, heart rate) are ints: a number either way, never a bool
    if expected is not None and isinstance(expected.answer, (int, float)) and not isinstance(expected.answer, bool):
        items.append(Item(question, "numeric", _number_text(expected.answer), mention.section, mention.text,
                          difficulty, why))


def not_found_numeric_items(sheet: FactSheet, mentions: list[Mention], rng: random.Random) -> list[Item]:
    candidates = list(ABSENT_NUMERIC)
    for lab, name in LAB_NAMES.items():
        if not any(mention.key == f"lab:{lab}" for mention in mentions):
            candidates.append(lab_question(name, rng)[0])
    if sheet.lvef is None:
        candidates.append("What was the left ventricular ejection fraction?")
    items = []
    for question in candidates:
        expected = expected_answer(question, sheet, vitals_of(mentions))
        if expected is not None and expected.answer == "NA":
            items.append(Item(question, "numeric", "N/A", "not found", "not found", rng.randint(4, 7),
                              "The note does not report this value."))
    return items


def not_found_boolean_items(rng: random.Random) -> list[Item]:
    return [Item(question, "boolean", "N/A", "not found", "not found", rng.randint(4, 7),
                 "The note does not say.") for question in UNKNOWABLE_BOOLEAN]


def wrong_answer(item: Item, rng: random.Random) -> Item:
    """The item with an answer the truth check finds wrong, of a kind a teacher gets wrong: the negation flipped
    (yes/no, which for a dated question is the wrong time window), another value or a false "not in the note"
    (numeric), a value or a yes/no for what the note does not say (not-in-the-note types)."""
    if item.type == "boolean" and item.answer in ("Yes", "No"):
        answer = "No" if item.answer == "Yes" else "Yes"
    elif item.type == "boolean":
        answer = rng.choice(["Yes", "No"])
    elif item.answer == "N/A":
        answer = _number_text(round(rng.uniform(1, 200), rng.choice([0, 1])))
    elif rng.random() < 1 / 3:
        answer = "N/A"
    else:
        value = float(item.answer)
        answer = _number_text(round(value * rng.choice([0.5, 0.7, 1.3, 1.6]) + rng.choice([-1, 1]), 1))
    return Item(item.question, item.type, answer, item.section, item.source, item.difficulty, item.explanation)


def reference_reply(record: dict, question_type: str, count: int, max_numeric: int, seed: int,
                    precision: float = 1.0) -> list[dict]:
    """The reference teacher's items for one note and question type (deterministic for the seed); below precision 1
    each item's answer is made wrong with chance 1 - precision (wrong_answer), drawn apart from the items."""
    sheet, mentions = record["sheet"], record["mentions"]
    rng = random.Random(f"{seed}:{record['hadm_id']}:{question_type}")
    if question_type == "yes_no":
        pool = yes_no_items(sheet, mentions, rng)
        rng.shuffle(pool)
        chosen = [item for item in pool if item.answer == "Yes"][:count] + \
                 [item for item in pool if item.answer == "No"][:count]
        rng.shuffle(chosen)
    elif question_type == "numeric":
        pool = numeric_items(sheet, mentions, rng)
        rng.shuffle(pool)
        chosen = pool[:max_numeric]
    elif question_type == "na-numeric":
        chosen = rng.sample(pool := not_found_numeric_items(sheet, mentions, rng), min(count, len(pool)))
    elif question_type == "na-bool":
        chosen = rng.sample(pool := not_found_boolean_items(rng), min(count, len(pool)))
    else:
        raise ValueError(f"unknown question type {question_type!r}")
    if precision < 1:
        errors = random.Random(f"{seed}:{record['hadm_id']}:{question_type}:errors")
        chosen = [wrong_answer(item, errors) if errors.random() >= precision else item for item in chosen]
    return [item.as_json() for item in chosen]


class ReferenceTeacher:
    """Stage A's teacher interface (`generate`, `tokenizer`, `max_model_len`) over a corpus's facts file.

    Stage A passes each request's note ids and question type (`needs_requests`); the tokenizer only
    counts prompt and reply tokens for the manifest, as a language model's would.
    """

    name = REFERENCE
    needs_requests = True
    max_model_len = 1_000_000  # no note is shortened: the reference reads the whole note

    def __init__(self, facts_path: str | Path, tokenizer_dir: str | Path, seed: int = 0, precision: float = 1.0):
        from transformers import AutoTokenizer

        from simulation.corpus import read_facts

        facts_path = Path(facts_path)
        if not facts_path.exists():
            raise InputError(f"facts file not found: {facts_path}; the reference teacher writes about the notes of a "
                             "corpus written by python -m simulation.corpus, whose facts lie beside its notes file")
        self.facts = read_facts(facts_path)
        self.facts_path = facts_path
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.seed = seed
        self.precision = precision

    @property
    def manifest(self) -> dict[str, str]:
        """What stage A's manifest says of its teacher."""
        kind = TEACHER_KIND if self.precision == 1 else \
            f"{TEACHER_KIND}, each answer made wrong with chance {1 - self.precision:g} (reference@{self.precision:g})"
        return {"teacher": kind, "reference_facts": str(self.facts_path)}

    def check_notes(self, hadm_ids: Sequence) -> None:
        """Refuse, before any work, notes whose admissions the facts do not hold."""
        missing = sorted({int(hadm_id) for hadm_id in hadm_ids} - set(self.facts))
        if missing:
            raise InputError(f"{len(missing)} note(s) are not in {self.facts_path} (admission {missing[0]} first): the "
                             "reference teacher writes only about the notes of its own corpus")

    def generate(self, conversations: Sequence[list[dict]], sampling: Sampling,
                 progress: Callable[[int, int], None] | None = None,
                 prompt_ids: Sequence[list[int] | None] | None = None,
                 requests: Sequence[dict] | None = None) -> list[Generation]:
        if requests is None or len(requests) != len(conversations):
            raise ValueError("the reference teacher answers stage A's requests only (their note ids and types)")
        results = []
        for position, request in enumerate(requests):
            record = self.facts.get(int(request["hadm_id"]))
            if record is None:
                raise InputError(f"note of admission {request['hadm_id']} is not in {self.facts_path}: the reference "
                                 "teacher writes only about the corpus's own notes")
            count = int(request["questions_per_type"])
            items = reference_reply(record, request["question_type"], count, max_questions("numeric", count),
                                    self.seed + sampling.seed, self.precision)
            text = json.dumps(items, indent=2)
            results.append(written_reply(text, self.tokenizer, prompt_ids[position] if prompt_ids else None))
            if progress is not None:
                progress(1, results[-1].output_tokens)
        return results


def load_teacher(notes_file: Path, notes: pd.DataFrame, seed: int, option: str | None = None) -> ReferenceTeacher:
    """Stage A's engine for --model_id reference, or reference@P for a teacher whose answers are right with chance
    P (pyproject.toml's entry point group clinical_distil.engines): the facts beside the notes file, checked to
    hold every note it is to write about."""
    from clinical_distil.default_model import DEFAULT_MODEL_DIR

    try:
        precision = 1.0 if option is None else float(option)
    except ValueError:
        precision = -1.0
    if not 0 < precision <= 1:
        raise InputError(f"--model_id {REFERENCE}@{option}: give the precision of its answers, a number in (0, 1], "
                         f"e.g. {REFERENCE}@0.8")
    teacher = ReferenceTeacher(layout.facts_file(notes_file), tokenizer_dir=DEFAULT_MODEL_DIR, seed=seed,
                               precision=precision)
    teacher.check_notes(notes["hadm_id"])
    return teacher


def behaviour_digest(seed: int = 0, questions_per_type: int = 5) -> str:
    """A digest of what the reference teacher writes: its replies, of every question type, about the notes of a
    small corpus of fixed seed. Results measured with one teacher are comparable with another's only when their
    digests agree; moving or rewording code that writes the same replies keeps the digest."""
    import hashlib
    import tempfile

    from clinical_distil.prompts import QUESTION_TYPES
    from simulation.corpus import read_facts, write_corpus

    with tempfile.TemporaryDirectory() as folder:
        write_corpus(folder, patients=12, seed=seed, annotated_notes=1, n2c2_train=1, n2c2_test=1, apixaban_notes=1)
        facts = read_facts(layout.facts_file(layout.corpus_notes(Path(folder))))
    replies = [reference_reply(facts[hadm_id], question_type, questions_per_type,
                               max_questions("numeric", questions_per_type), seed)
               for hadm_id in sorted(facts) for question_type in QUESTION_TYPES]
    return hashlib.sha256(json.dumps(replies, sort_keys=True).encode()).hexdigest()[:12]
