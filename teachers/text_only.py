"""The text-only teacher: stage A's items written by rules from the note text alone, no language model.

    python a-generate-synthetic-training-data/synthetic-a-create.py --model_id text-only --notes_file notes.csv

An engine of the `clinical_distil.engines` entry-point group (pyproject.toml): stage A tells it each request's
note and question type (`needs_requests`), and it replies with the JSON list a language model teacher writes,
built from the note's sections, its concept mentions read with NegEx/ConText rules (teachers/context.py) and its
values (teachers/values.py). It never sees a fact sheet. The tokenizer of the default model only counts prompt
and reply tokens for the manifest, as a language model's own would.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Callable, Sequence

import pandas as pd

from clinical_distil.engines import Generation, Sampling, written_reply
from clinical_distil.files import InputError
from clinical_distil.prompts import note_of
from teachers.answer import answer_question
from teachers.questions import items_for

log = logging.getLogger(__name__)

ENGINE_NAME = "text-only"
TEACHER_KIND = "text-only: replies written by rules from the note text alone, not by a language model"


class TextOnlyTeacher:
    """Stage A's teacher interface (`generate`, `tokenizer`, `max_model_len`) over the note text of each request."""

    name = ENGINE_NAME
    needs_requests = True
    max_model_len = 1_000_000  # no note is shortened: the rules read the whole note

    def __init__(self, tokenizer_dir: str | Path, seed: int = 0):
        from transformers import AutoTokenizer

        tokenizer_dir = Path(tokenizer_dir)
        if not tokenizer_dir.is_dir():
            raise InputError(f"tokenizer folder not found: {tokenizer_dir}; the text-only teacher counts tokens with "
                             "the default model's tokenizer: python -m clinical_distil.default_model")
        self.tokenizer = AutoTokenizer.from_pretrained(str(tokenizer_dir))
        self.seed = seed

    @property
    def manifest(self) -> dict[str, str]:
        """What stage A's manifest says of its teacher."""
        return {"teacher": TEACHER_KIND}

    def reply(self, note_text: str, question_type: str, questions_per_type: int) -> list[dict]:
        """The items for one note and question type (the same for the same seed, note and type)."""
        return items_for(note_text, question_type, questions_per_type, self.seed)

    def answer(self, prompt: str, question: str | None) -> dict[str, str]:
        """The answer object of an answer prompt (the students' format), by answer_question over its note."""
        note = note_of(prompt) or prompt
        if not question:  # a prompt table without a question column: the prompt less its note
            question = prompt.replace(note, " ")
        answer = answer_question(str(question), note)
        kind = "boolean" if answer in ("Yes", "No") or answer == "N/A" else "numeric"
        return {"question": str(question), "type": kind, "answer": answer, "section": "", "source": "",
                "explanation": "Read by the text-only rules (teachers/)."}

    def generate(self, conversations: Sequence[list[dict]], sampling: Sampling,
                 progress: Callable[[int, int], None] | None = None,
                 prompt_ids: Sequence[list[int] | None] | None = None,
                 requests: Sequence[dict] | None = None) -> list[Generation]:
        """One reply per request, "stop" finished; `sampling` changes nothing: the items depend on the teacher's
        seed, the note and the question type only, so a retry gets the same reply."""
        if requests is None or len(requests) != len(conversations):
            raise ValueError("the text-only teacher answers requests only (stage A's: a note and a question type; "
                             "an answering run's: a prompt and its question), passed as requests=")
        results = []
        for position, request in enumerate(requests):
            if "question_type" in request:
                items = self.reply(str(request["text"]), request["question_type"], int(request["questions_per_type"]))
                text = json.dumps(items, indent=2, ensure_ascii=False)
            else:  # the rules as a classifier: eval-inference's answer object, the question read from its prompt
                text = json.dumps(self.answer(str(request["prompt"]), request.get("question")), ensure_ascii=False)
            results.append(written_reply(text, self.tokenizer, prompt_ids[position] if prompt_ids else None))
            if progress is not None:
                progress(1, results[-1].output_tokens)
        return results


def load_teacher(notes_file: Path, notes: pd.DataFrame, seed: int) -> TextOnlyTeacher:
    """Stage A's engine for --model_id text-only (pyproject.toml's entry point group clinical_distil.engines)."""
    from clinical_distil.default_model import DEFAULT_MODEL_DIR

    log.info("text-only teacher for %d notes of %s", len(notes), notes_file)
    return TextOnlyTeacher(DEFAULT_MODEL_DIR, seed=seed)


__all__ = ["ENGINE_NAME", "TEACHER_KIND", "TextOnlyTeacher", "answer_question", "load_teacher"]
