"""Answers as the project compares them: Yes / No / NA, one plain number, or the text as written.

Teachers, students and annotators write the same answer many ways ("yes", "True", "1.40 mg/dL",
"210,000/uL", "not in the note"); stage B, the scorers, the criteria rules and the simulated truth
all read them through this one normalization, so they agree on what an answer says.
"""

from __future__ import annotations

import math
import re
from typing import Any

NA_ANSWERS = {"na", "n/a", "n.a.", "n/a.", "nan", "not available", "not applicable", "not in note", "not in the note",
              "not found", "not mentioned", "not documented", "not stated", "not reported", "unknown", "none", "null",
              ""}
# a number as written in notes and replies: "-2.5", "1.40", "210,000" (thousands grouped by commas), ".5"
NUMBER = r"[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|[-+]?\.\d+"
# a unit after it: "mg/dL", "%", "x10^9/L", "mL/min/1.73m2", "K/uL", "°F", "/uL" (never "/80" of a blood pressure)
UNIT = r"(?:%|°\s?[CFcf]?|(?:[^\W\d_]|/[^\W\d_])[\w/^.·*]*)"
NUMBER_WITH_UNIT = re.compile(rf"^\s*({NUMBER})\s*(?:{UNIT}(?:\s+{UNIT})?)?\s*[.,;:!)]*\s*$")


def parse_number(text: Any) -> float | None:
    """The one number an answer states ("1.40 mg/dL" -> 1.4, "210,000/uL" -> 210000, "7.5%." -> 7.5), else None.

    Ranges ("1.2-1.4"), ratios ("120/80"), comparisons ("<0.01") and prose are not one number.
    """
    if isinstance(text, bool) or text is None:
        return None
    if isinstance(text, (int, float)):
        return float(text) if math.isfinite(text) else None
    try:  # a plain number, scientific notation too ("1.2e3"), before "e3" could pass for a unit
        value = float(str(text).strip())
        return value if math.isfinite(value) else None
    except ValueError:
        pass
    match = NUMBER_WITH_UNIT.match(str(text))
    return float(match.group(1).replace(",", "")) if match else None


def format_number(value: float) -> str:
    """A number as an answer: "1.4", "210000", "-2.5" (the shortest form that reads back the same)."""
    if value.is_integer() and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def normalize_answer(answer: Any) -> str:
    """Yes / No / NA, a plain number ("1.40 mg/dL" -> "1.4", "210,000" -> "210000"), or the text as written."""
    if answer is None or (isinstance(answer, float) and math.isnan(answer)):
        return "NA"
    if isinstance(answer, bool):
        return "Yes" if answer else "No"
    number = parse_number(answer)
    if number is not None:
        return format_number(number)
    text = str(answer).strip().strip(".").strip()
    lowered = text.lower()
    if lowered in NA_ANSWERS:
        return "NA"
    if lowered in ("yes", "true", "y"):
        return "Yes"
    if lowered in ("no", "false", "n"):
        return "No"
    return text


def is_number(answer: str) -> bool:
    return parse_number(answer) is not None


def answer_agrees_with_type(question_type: str, answer: str) -> bool:
    if question_type == "yes_no":
        return answer in ("Yes", "No")
    if question_type == "numeric":
        return is_number(answer)
    return answer == "NA"  # na-numeric, na-bool
