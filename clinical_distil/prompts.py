"""The teacher's generation prompts and the answer prompt, as chat messages.

Every generation request is [system message][note][request for one question type], so the
system message and the note form a prefix shared by a note's four requests: an engine with
prefix caching computes that prefix once per note.
"""

from __future__ import annotations

import functools
import json
import string
from dataclasses import dataclass
from typing import Any

from clinical_distil.files import InputError

QUESTION_TYPES = ("yes_no", "numeric", "na-numeric", "na-bool")
# the question types one trains on together (stage C's and finetune.py's --input_file)
COMBOS = {"all": QUESTION_TYPES, "bool": ("yes_no",), "bool_num": ("yes_no", "numeric")}
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

TEMPLATE_FILES = {
    "teacher_system": "teacher_system.txt", **{f"teacher_{kind}": f"teacher_{kind}.txt" for kind in QUESTION_TYPES},
    "answer_system": "answer_system.txt", "answer": "answer.txt",
}
# the placeholders each template must hold ($note, $question; the request counts may be left out)
REQUIRED_FIELDS = {**{f"teacher_{kind}": ("note",) for kind in QUESTION_TYPES}, "answer": ("note", "question")}


@dataclass(frozen=True)
class PromptTemplates:
    """The wording of every prompt, read from template files ($note, $question, $count, $total, $max_numeric).

    The shipped files live in clinical_distil/prompt_templates/; a `prompt_dir` of one's own (the
    published wording, say) replaces any of them by file name.
    """

    texts: dict[str, str]
    source: str = "shipped"

    def fill(self, name: str, **fields: Any) -> str:
        try:
            return string.Template(self.texts[name]).substitute(**fields)
        except (KeyError, ValueError) as error:
            raise InputError(f"prompt template {TEMPLATE_FILES[name]} ({self.source}) has a $-placeholder it "
                             f"cannot fill ({error}); use $note, $question, $count, $total, $max_numeric, and $$ "
                             "for a dollar sign") from None

    @property
    def system(self) -> str:
        return self.texts["teacher_system"]

    @property
    def answer_system(self) -> str:
        return self.texts["answer_system"]


@functools.lru_cache(maxsize=16)
def load_templates(prompt_dir: str | None = None) -> PromptTemplates:
    """The shipped templates, each replaced by the file of the same name in `prompt_dir` when it has one."""
    from clinical_distil.layout import PROMPT_TEMPLATES, resolve

    folder = resolve(prompt_dir) if prompt_dir else None
    if folder is not None and not folder.is_dir():
        raise InputError(f"--prompt_dir {folder} is not a folder; it should hold template files named as in "
                         f"{PROMPT_TEMPLATES} ({', '.join(TEMPLATE_FILES.values())})")
    texts = {}
    for name, file_name in TEMPLATE_FILES.items():
        own = folder / file_name if folder is not None else None
        path = own if own is not None and own.exists() else PROMPT_TEMPLATES / file_name
        try:
            texts[name] = path.read_text(encoding="utf-8")
        except UnicodeDecodeError:
            texts[name] = "\0"
        except OSError as error:
            raise InputError(f"cannot read prompt template {path}: {error.strerror or error}") from error
        if "\0" in texts[name]:
            raise InputError(f"prompt template {path} is not UTF-8 text; write it as a text file")
        for placeholder in REQUIRED_FIELDS.get(name, ()):
            if f"${placeholder}" not in texts[name] and "${" + placeholder + "}" not in texts[name]:
                raise InputError(f"prompt template {path} lacks ${placeholder}: it must say where the {placeholder} "
                                 "goes")
    return PromptTemplates(texts, source=str(folder) if folder else "shipped")


def generation_messages(note_text: str, question_type: str, questions_per_type: int = DEFAULT_QUESTIONS_PER_TYPE,
                        templates: PromptTemplates | None = None) -> list[dict[str, str]]:
    """The chat sent to the teacher for one note and one question type."""
    if question_type not in QUESTION_TYPES:
        raise ValueError(f"unknown question type {question_type!r}; choose from {', '.join(QUESTION_TYPES)}")
    templates = templates or load_templates()
    user = templates.fill(f"teacher_{question_type}", note=note_text, count=questions_per_type,
                          total=2 * questions_per_type, max_numeric=max_questions("numeric", questions_per_type))
    return [{"role": "system", "content": templates.system}, {"role": "user", "content": user}]


def note_slot(messages: list[dict[str, str]], note_text: str) -> tuple[int, int, int]:
    """(message index, start, end) of the note inside `messages`, for shortening it in place: the last message
    that holds it (worked examples before the question carry notes of their own)."""
    for index, message in reversed(list(enumerate(messages))):
        start = message["content"].find(note_text)
        if start >= 0:
            return index, start, start + len(note_text)
    raise ValueError("the note text is not part of the messages")


def note_of(prompt: str, templates: PromptTemplates | None = None) -> str | None:
    """The note inside an answer prompt (what the answer template puts where $note is), or None if it has none."""
    template = (templates or load_templates()).texts["answer"]
    position = template.find("$note")
    if position < 0:
        return None
    before = template[:position]
    after = template[position + len("$note"):].split("$", 1)[0]
    head, opening, rest = prompt.partition(before) if before else ("", "", prompt)
    if before and not opening:
        return None
    note, closing, _ = rest.partition(after) if after else (rest, "x", "")
    return note if closing else None


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
    # strings stay unbounded: bounding them (maxLength) slowed vLLM's structured stage A throughput and still
    # let SmolLM2 loop to the token limit (bench/RESULTS.md)
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


ANSWER_KEYS = ("question", "type", "answer", "section", "source", "explanation")
ANSWER_TYPES = {"yes_no": "boolean", "numeric": "numeric", "na-numeric": "numeric", "na-bool": "boolean"}


def answer_messages(note_text: str, question: str, templates: PromptTemplates | None = None) -> list[dict[str, str]]:
    """The prompt a student answers (training inputs and every evaluation)."""
    templates = templates or load_templates()
    return [{"role": "system", "content": templates.answer_system},
            {"role": "user", "content": templates.fill("answer", note=note_text, question=question)}]


def _json_value(value: Any) -> Any:
    """A table cell as JSON: missing (None, NaN, pandas' NA) becomes null, never the invalid token NaN."""
    if value is None or (isinstance(value, float) and value != value) or type(value).__name__ == "NAType":
        return None
    return value.item() if hasattr(value, "item") and not isinstance(value, (str, bytes)) else value


def answer_target(item: dict[str, Any], keys: tuple[str, ...] = ANSWER_KEYS) -> str:
    """The training target: the gold item as strict JSON (serialized by the json library) in a json fence."""
    target = {key: _json_value(item.get(key)) for key in keys}
    return "```json\n" + json.dumps(target, ensure_ascii=False, allow_nan=False) + "\n```"
