"""Parsing what a teacher (or a student) model wrote into question items.

Real replies wrap their JSON in code fences or prose, split it over several blocks, leave
trailing commas and smart quotes, or stop mid-list at the token limit. Standard JSON is
tried first; `json-repair` mends broken JSON and `partial-json-parser` keeps the complete
items of a list cut off by the token limit. A reply that yields no item gets a reason:
empty, no_json, invalid_json, truncated or wrong_shape.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import json_repair
from partial_json_parser import Allow
from partial_json_parser import loads as partial_loads

FAILURE_REASONS = ("empty", "no_json", "invalid_json", "truncated", "wrong_shape")
FENCE = re.compile(r"```(?:json|JSON)?\s*\n?(.*?)(?:```|$)", re.DOTALL)
_DECODER = json.JSONDecoder(strict=False)  # strict=False: raw newlines inside strings are common


@dataclass
class ParsedReply:
    items: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None  # one of FAILURE_REASONS when no item was recovered
    repaired: bool = False  # json-repair or the partial parser was needed


def _scan(text: str, cut_off: bool) -> tuple[list[Any], bool]:
    """JSON values in `text`, left to right (several blocks allowed), and whether any needed mending.

    A block that does not decode as written is handed whole to the partial parser (reply cut
    off by the token limit) or to json-repair; only if that recovers no question does the
    scan move on past its opening bracket.
    """
    values: list[Any] = []
    position = 0
    while True:
        starts = [index for index in (text.find("[", position), text.find("{", position)) if index >= 0]
        if not starts:
            return values, False
        start = min(starts)
        try:
            value, end = _DECODER.raw_decode(text, start)
        except json.JSONDecodeError:
            mended = _mend(text[start:], cut_off)
            if _items([mended]):
                return values + [mended], True
            position = start + 1
            continue
        values.append(value)
        position = end


def _mend(block: str, cut_off: bool) -> Any:
    if cut_off:
        try:
            # Allow.ARR: an unfinished list is closed, an unfinished object or string is dropped
            return partial_loads(block, Allow.ARR)
        except Exception:  # the parser raises several private error types
            return None
    return json_repair.loads(block)


def _items(values: list[Any]) -> list[dict[str, Any]]:
    """Question objects from decoded values: a list of objects, one object, or {"questions": [...]}."""
    found: list[dict[str, Any]] = []
    for value in values:
        if isinstance(value, dict):
            lowered = {str(key).strip().lower(): item for key, item in value.items()}
            if "question" in lowered:
                found.append(lowered)
                continue
            nested = [item for item in value.values() if isinstance(item, list)]
            found.extend(_items(nested))
        elif isinstance(value, list):
            found.extend(_items(value) if any(isinstance(item, (list, dict)) for item in value) else [])
    return found


def _body(text: str) -> str:
    """The JSON-bearing part: fenced blocks joined if any, else the text from the first bracket."""
    blocks = [block for block in FENCE.findall(text) if block.strip()]
    if blocks:
        return "\n".join(blocks)
    starts = [index for index in (text.find("["), text.find("{")) if index >= 0]
    return text[min(starts):] if starts else ""


# finish reasons of a reply that ended before the model did: the token limit, or vLLM ending the request
# itself (aborted, an engine error, its repetition detector)
CUT_OFF_REASONS = ("length", "abort", "error", "repetition")


def parse_reply(text: Any, finish_reason: str = "stop") -> ParsedReply:
    """Items of one reply; a finish reason in CUT_OFF_REASONS means the reply was cut off."""
    if not isinstance(text, str) or not text.strip():
        return ParsedReply(failure="empty")
    body = _body(text)
    if not body:
        return ParsedReply(failure="no_json")
    cut_off = finish_reason in CUT_OFF_REASONS
    values, repaired = _scan(body, cut_off)
    items = _items(values)
    if items:
        return ParsedReply(items, repaired=repaired)
    if cut_off:
        return ParsedReply(failure="truncated")
    if any(isinstance(value, (list, dict)) and value for value in values):
        return ParsedReply(failure="wrong_shape")
    return ParsedReply(failure="invalid_json")


def json_values(text: Any, finish_reason: str = "stop") -> list[Any]:
    """Every JSON value found in a reply (fenced or bare, mended where broken); [] when there is none."""
    if not isinstance(text, str) or not text.strip():
        return []
    body = _body(text)
    return _scan(body, finish_reason in CUT_OFF_REASONS)[0] if body else []


def reply_needs_retry(text: Any, finish_reason: str, whole_json: bool = False) -> bool:
    """Whether a teacher reply is worth generating again: cut off, or no question recoverable from it.

    `whole_json` (structured output) asks more: the reply must be one strict JSON value (no raw
    control characters in strings), as the grammar promises for a reply that ended on its own.
    """
    if finish_reason in CUT_OFF_REASONS or parse_reply(text, finish_reason).failure is not None:
        return True
    if whole_json:
        try:
            json.loads(text)
        except (json.JSONDecodeError, TypeError):
            return True
    return False
