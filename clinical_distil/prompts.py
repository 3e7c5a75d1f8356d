"""The teacher's generation prompts and the answer prompt, as chat messages.

Every generation request is [system message][note][request for one question type], so the
system message and the note form a prefix shared by a note's four requests: an engine with
prefix caching computes that prefix once per note.
"""

from __future__ import annotations

import json
from typing import Any

QUESTION_TYPES = ("yes_no", "numeric", "na-numeric", "na-bool")
# k in the design: yes_no asks for 2k (k Yes + k No), na-numeric and na-bool for k each
DEFAULT_QUESTIONS_PER_TYPE = 5
MAX_NUMERIC_QUESTIONS = 10

SECTIONS = (
    "History of Present Illness", "Past Medical History", "Social History", "Family History", "Physical Exam",
    "Pertinent Results", "Brief Hospital Course", "Discharge Medications", "Discharge Disposition",
    "Discharge Condition", "Discharge Instructions",
)
ITEM_KEYS = ("question", "type", "answer", "section", "source", "difficulty", "explanation")
NOT_FOUND = "not found"

SYSTEM_MESSAGE = (
    "You are a clinical research assistant. You are helping to train a language model that extracts "
    "structured facts from clinical notes. Reply with valid JSON only, with no text before or after it. "
    "Dates in these notes were shifted to protect patient identity, so they can lie in the future; treat them "
    "as ordinary dates. When a question asks for the highest (or lowest) value of a lab, it means the highest "
    "(or lowest) value recorded in this note. Write questions that are specific to this patient and that read "
    "like eligibility criteria of a clinical trial. Do not ask about demographics or about the clinicians and "
    "providers. Do not ask about the same attribute twice. Prefer facts that are less common but clinically "
    "relevant over the obvious ones."
)

_KEY_MEANINGS = {
    "question": "the question, answerable from this note alone",
    "type": "{type_hint}",
    "answer": "{answer_hint}",
    "section": "the note section that holds the answer, one of: " + ", ".join(SECTIONS) + "{section_extra}",
    "source": "the exact text copied from the note that supports the answer{source_extra}",
    "difficulty": "how hard the question is to answer from the note, an integer from 1 (trivial) to 10 (very hard)",
    "explanation": "a short explanation of how the source supports the answer",
}

_EXAMPLES = {
    "yes_no": {"question": "Has the patient had a prior ischemic stroke?", "type": "boolean", "answer": "Yes",
               "section": "Past Medical History", "source": "Ischemic stroke 2 years ago with residual dysarthria",
               "difficulty": 3, "explanation": "The past medical history lists a previous ischemic stroke."},
    "numeric": {"question": "What was the highest creatinine value recorded during the admission?",
                "type": "numeric", "answer": "2.1", "section": "Pertinent Results",
                "source": "06:40AM BLOOD Glucose-131 Creat-2.1", "difficulty": 5,
                "explanation": "Of the creatinine values listed in the results, 2.1 is the highest."},
    "na-numeric": {"question": "What was the patient's most recent hemoglobin A1c?", "type": "numeric",
                   "answer": "N/A", "section": NOT_FOUND, "source": NOT_FOUND, "difficulty": 6,
                   "explanation": "The patient has diabetes, but no hemoglobin A1c is reported in the note."},
    "na-bool": {"question": "Did the patient receive a pneumococcal vaccine in the past five years?",
                "type": "boolean", "answer": "N/A", "section": NOT_FOUND, "source": NOT_FOUND, "difficulty": 6,
                "explanation": "The note does not record the patient's vaccination history."},
}


def _request(question_type: str, count: int) -> tuple[str, dict[str, str]]:
    """What to ask for, and the per-type wording of the key meanings."""
    if question_type == "yes_no":
        half = count
        return (
            f"Write {2 * half} yes/no questions about this patient that the note answers: {half} whose answer "
            f"is Yes and {half} whose answer is No.",
            dict(type_hint='"boolean"', answer_hint='"Yes" or "No"', section_extra="", source_extra=""),
        )
    if question_type == "numeric":
        return (
            f"Write up to {max_questions('numeric', count)} questions about this patient whose answer is a "
            "single number found in the note (a lab value, a vital sign, a score, a dose, a measurement). Say "
            "exactly which value is meant: the first, last, highest or lowest, on admission or at discharge, in "
            "the emergency department or the ICU. If the note has fewer such values, write fewer questions; if "
            "it has none, return an empty list.",
            dict(type_hint='"numeric"', answer_hint="the number alone, without units", section_extra="",
                 source_extra=""),
        )
    if question_type == "na-numeric":
        return (
            f"Write {count} questions that ask for a single number that this note does not contain, but that "
            "would plausibly be measured or recorded for a patient like this one. Their answer is N/A.",
            dict(type_hint='"numeric"', answer_hint='"N/A"', section_extra=f', or "{NOT_FOUND}"',
                 source_extra=f', or "{NOT_FOUND}"'),
        )
    if question_type == "na-bool":
        return (
            f"Write {count} yes/no questions about this patient that the note cannot answer. Their answer is "
            "N/A. Leave out questions about a serious or chronic diagnosis that a discharge summary would "
            "mention if the patient had it: for those, silence in the note means No, not N/A.",
            dict(type_hint='"boolean"', answer_hint='"N/A"', section_extra=f', or "{NOT_FOUND}"',
                 source_extra=f', or "{NOT_FOUND}"'),
        )
    raise ValueError(f"unknown question type {question_type!r}; choose from {', '.join(QUESTION_TYPES)}")


def generation_messages(note_text: str, question_type: str,
                        questions_per_type: int = DEFAULT_QUESTIONS_PER_TYPE) -> list[dict[str, str]]:
    """The chat sent to the teacher for one note and one question type."""
    request, hints = _request(question_type, questions_per_type)
    keys = "\n".join(f'- "{key}": {_KEY_MEANINGS[key].format(**hints)}' for key in ITEM_KEYS)
    example = json.dumps([_EXAMPLES[question_type]], indent=2)
    user = (
        f"Clinical note:\n<note>\n{note_text}\n</note>\n\n"
        f"{request}\n\n"
        f"Return a JSON list with one object per question. Each object has these keys:\n{keys}\n\n"
        f"Example of the format (about a different patient):\n{example}\n\n"
        "Your whole reply must parse with a JSON parser."
    )
    return [{"role": "system", "content": SYSTEM_MESSAGE}, {"role": "user", "content": user}]


def note_slot(messages: list[dict[str, str]], note_text: str) -> tuple[int, int, int]:
    """(message index, start, end) of the note inside `messages`, for shortening it in place."""
    for index, message in enumerate(messages):
        start = message["content"].find(note_text)
        if start >= 0:
            return index, start, start + len(note_text)
    raise ValueError("the note text is not part of the messages")


def note_of(prompt: str) -> str | None:
    """The note inside an answer prompt's <note> block (see answer_messages), or None if it has none."""
    head, opening, rest = prompt.partition("<note>\n")
    note, closing, _ = rest.partition("\n</note>")
    return note if opening and closing else None


def max_questions(question_type: str, questions_per_type: int = DEFAULT_QUESTIONS_PER_TYPE) -> int:
    if question_type == "yes_no":
        return 2 * questions_per_type
    if question_type == "numeric":
        return min(2 * questions_per_type, MAX_NUMERIC_QUESTIONS)
    return questions_per_type


def item_schema(question_type: str | None = None,
                questions_per_type: int = DEFAULT_QUESTIONS_PER_TYPE) -> dict[str, Any]:
    """JSON schema of the teacher's reply: a list of question objects with every key required."""
    answer: dict[str, Any] = {"type": "string"}
    if question_type == "yes_no":
        answer = {"enum": ["Yes", "No"]}
    elif question_type in ("na-numeric", "na-bool"):
        answer = {"enum": ["N/A"]}
    # strings stay unbounded: maxLength on them halved vLLM's structured stage A throughput on an H100
    # (8B shape) and still let SmolLM2 loop to the token limit (bench/RESULTS.md)
    item = {
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "type": {"enum": ["boolean", "numeric"]},
            "answer": answer,
            "section": {"type": "string"},
            "source": {"type": "string"},
            "difficulty": {"type": "integer", "minimum": 1, "maximum": 10},
            "explanation": {"type": "string"},
        },
        "required": list(ITEM_KEYS),
        "additionalProperties": False,
    }
    schema: dict[str, Any] = {"type": "array", "items": item}
    if question_type is not None:
        # bounding the list keeps a constrained small model from looping until the token limit
        schema["maxItems"] = max_questions(question_type, questions_per_type)
    return schema


ANSWER_SYSTEM_MESSAGE = (
    "You are a clinical research assistant who extracts structured facts from clinical notes. Reply with valid "
    "JSON only, with no text before or after it. Dates in these notes were shifted to protect patient identity, "
    "so they can lie in the future. When a question asks for the highest (or lowest) value of a lab, it means "
    "the highest (or lowest) value recorded in this note."
)
ANSWER_KEYS = ("question", "type", "answer", "section", "source", "explanation")
ANSWER_TYPES = {"yes_no": "boolean", "numeric": "numeric", "na-numeric": "numeric", "na-bool": "boolean"}
_ANSWER_EXAMPLE = {"question": "What was the lowest platelet count recorded?", "type": "numeric", "answer": "98",
                   "section": "Pertinent Results", "source": "06:40AM BLOOD WBC-7.2 Hgb-10.1 Plt Ct-98",
                   "explanation": "Of the platelet counts listed, 98 is the lowest."}


def answer_messages(note_text: str, question: str) -> list[dict[str, str]]:
    """The prompt a student answers (training inputs and every evaluation)."""
    keys = "\n".join(f'- "{key}": {meaning}' for key, meaning in (
        ("question", "the question, repeated"),
        ("type", '"boolean" for a yes/no question, "numeric" for a question whose answer is a number'),
        ("answer", '"Yes" or "No" for a boolean question, a single number without units for a numeric one, '
                   'or "NA" when the note does not answer the question'),
        ("section", "the note section that holds the answer, one of: " + ", ".join(SECTIONS) + ', or "NA"'),
        ("source", 'the exact text copied from the note that supports the answer, or "NA"'),
        ("explanation", "a short explanation of the answer"),
    ))
    user = (
        f"Clinical note:\n<note>\n{note_text}\n</note>\n\n"
        f"Question: {question}\n\n"
        f"Answer the question from this note alone. Reply with one JSON object with these keys:\n{keys}\n\n"
        f"Example of the format (about a different patient):\n{json.dumps(_ANSWER_EXAMPLE, indent=2)}\n\n"
        "Your whole reply must parse with a JSON parser."
    )
    return [{"role": "system", "content": ANSWER_SYSTEM_MESSAGE}, {"role": "user", "content": user}]


def _json_value(value: Any) -> Any:
    """A table cell as JSON: missing (None, NaN, pandas' NA) becomes null, never the invalid token NaN."""
    if value is None or (isinstance(value, float) and value != value) or type(value).__name__ == "NAType":
        return None
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def answer_target(item: dict[str, Any], keys: tuple[str, ...] = ANSWER_KEYS) -> str:
    """The training target: the gold item as strict JSON (serialized by the json library) in a json fence."""
    target = {key: _json_value(item.get(key)) for key in keys}
    return "```json\n" + json.dumps(target, ensure_ascii=False, allow_nan=False) + "\n```"
