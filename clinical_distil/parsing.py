"""Parsing what a teacher (or a student) model wrote into question items.

Real replies wrap their JSON in code fences (of three or more backticks or tildes, nested
too) or prose, split it over several blocks, write Python literals, leave trailing commas,
stray or smart quotes, or stop mid-list at the token limit. Every JSON value in a reply is
found and decoded on its own: standard JSON first; then, with the quotes inside its strings
escaped, JSON or a Python literal; then `json-repair` on that block alone, so one broken
block never costs the items of another. A broken block ends at the latest where a code fence
begins. A block cut off by the token limit keeps exactly its complete items (those whose
closing brace was written), whatever their quoting. Items are the objects with a "question"
key, unwrapped from any depth of wrapper objects and lists, in the order written.

A reply that yields no item gets a reason: empty, no_json, invalid_json, truncated,
wrong_shape or placeholder (every item was a template placeholder). A reply that is an
empty list (the numeric prompt asks for one when the note has no values) is valid and has
no items. Items copied from the prompt's template ("...", "<question>") are dropped one by
one with the reason "placeholder".
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from dataclasses import dataclass, field
from typing import Any

import json_repair

FAILURE_REASONS = ("empty", "no_json", "invalid_json", "truncated", "wrong_shape", "placeholder")
ITEM_DROP_REASONS = ("placeholder",)
_DECODER = json.JSONDecoder(strict=False)  # strict=False: raw newlines inside strings are common
# a code fence: a run of 3+ backticks or tildes and an optional language tag; fences bound a broken block
FENCE_MARK = re.compile(r"(?:`{3,}|~{3,})(?:[ \t]*[A-Za-z][\w+.-]*)?")
# finish reasons of a reply that ended before the model did: the token limit, or vLLM ending the request
# itself (aborted, an engine error, its repetition detector)
CUT_OFF_REASONS = ("length", "abort", "error", "repetition")


@dataclass
class ParsedReply:
    items: list[dict[str, Any]] = field(default_factory=list)
    failure: str | None = None  # one of FAILURE_REASONS when no item was recovered
    repaired: bool = False  # a block needed mending (json-repair) or was cut and closed
    dropped: list[tuple[dict[str, Any], str]] = field(default_factory=list)  # (item, reason) left out
    empty_list: bool = False  # a valid reply with no question (an empty list)


# --- finding and decoding JSON values -------------------------------------------------------------

def _closes_string(text: str, position: int, limit: int) -> bool:
    """A quote closes a string when what follows it (after spaces) ends a value: , : ] } or the block."""
    while position < limit and text[position] in " \t\r\n":
        position += 1
    return position >= limit or text[position] in ",:]}"


def _previous_significant(text: str, position: int, start: int) -> str:
    position -= 1
    while position >= start and text[position] in " \t\r\n":
        position -= 1
    return text[position] if position >= start else ""


@dataclass
class _Extent:
    end: int  # one past the block's last character
    closed: bool  # its brackets balanced before `limit`
    # (position after a "}" that closed an element of a list, the still-open brackets there)
    element_closes: list[tuple[int, tuple[str, ...]]]


def _extent(text: str, start: int, limit: int) -> _Extent:
    """How far the block opened at `start` reaches, tolerant of broken quoting.

    Strings open at a double quote, or at a single quote where a key or value begins (Python
    literals); a quote closes one only where a value could end, so an unescaped inner quote
    ("he said "no" today") does not end it early. Brackets inside strings do not count.
    """
    stack: list[str] = []
    closes: list[tuple[int, tuple[str, ...]]] = []
    quote = ""
    position = start
    while position < limit:
        char = text[position]
        if quote:
            if char == "\\":
                position += 2
                continue
            if char == quote and _closes_string(text, position + 1, limit):
                quote = ""
        elif char == '"' or (char == "'" and _previous_significant(text, position, start) in "[{,:"):
            quote = char
        elif char in "[{":
            stack.append(char)
        elif char in "]}":
            if stack:
                stack.pop()
            if not stack:
                return _Extent(position + 1, True, closes)
            if char == "}" and stack[-1] == "[":
                closes.append((position + 1, tuple(stack)))
        position += 1
    return _Extent(limit, False, closes)


def _escape_inner_quotes(block: str) -> str:
    """The block with every quote that sits inside a string (by the rule of `_extent`) escaped.

    'he said "no chest pain" today' inside a JSON string, or 'the patient's' inside a Python one,
    then decodes exactly; json-repair guesses at such quotes and loses text when a bracket follows.
    """
    out: list[str] = []
    quote = ""
    position, limit = 0, len(block)
    while position < limit:
        char = block[position]
        if quote:
            if char == "\\":
                out.append(block[position:position + 2])
                position += 2
                continue
            if char == quote:
                if _closes_string(block, position + 1, limit):
                    quote = ""
                else:
                    out.append("\\")
        elif char == '"' or (char == "'" and _previous_significant(block, position, 0) in "[{,:"):
            quote = char
        out.append(char)
        position += 1
    return "".join(out)


def _strict(block: str) -> tuple[bool, Any]:
    try:
        value, end = _DECODER.raw_decode(block)
    except (json.JSONDecodeError, RecursionError):
        return False, None
    return (True, value) if not block[end:].strip() else (False, None)


def _decode(block: str) -> tuple[str, Any]:
    """(how, value) of one block: "json" as written; else, with its inner quotes escaped, "escaped" (JSON)
    or "literal" (a Python literal: {'question': 'Is it?', 'answer': True}); else "repair" (json-repair's
    reading); "" when nothing reads it.

    A Python literal is read only after the quotes are escaped: read raw, a '#' or a quote inside a
    broken string would silently become a comment or an end of string.
    """
    decoded, value = _strict(block)
    if decoded:
        return "json", value
    escaped = _escape_inner_quotes(block)
    decoded, value = _strict(escaped)
    if decoded:
        return "escaped", value
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # invalid escape sequences in a model's strings
            return "literal", ast.literal_eval(escaped.strip())
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        pass
    try:
        return "repair", json_repair.loads(escaped)
    except Exception:  # json-repair raises several private error types on pathological input
        return "", None


def _complete_prefix(text: str, start: int, extent: _Extent) -> str | None:
    """The block cut off at the token limit, ended after its last complete list element and closed.

    Of the list elements that were closed, the outermost ones are the items (or their wrapper);
    the cut goes after the last of those, and the brackets still open there are closed.
    """
    if not extent.element_closes:
        return None
    outermost = min(len(stack) for _, stack in extent.element_closes)
    end, stack = [(end, stack) for end, stack in extent.element_closes if len(stack) == outermost][-1]
    return text[start:end] + "".join("]" if bracket == "[" else "}" for bracket in reversed(stack))


def _fence_after(text: str, position: int) -> int:
    match = FENCE_MARK.search(text, position)
    return match.start() if match else len(text)


OPENING = re.compile(r"[\[{]")
OPENINGS_RUN = re.compile(r"[\[{\s]*")
# a bracket that opens JSON structure ('[{', '[[', '["', '[]', '{"key', "{'key", '{key', '{}'), not prose such
# as "[1]", "[**2150-3-4**]" or a run of '{"{"{' that a looping model writes
PLAUSIBLE_START = re.compile(r"""\[\s*[\[{\]"']|\{\s*(?:["']\w|[^\W\d]|\})""")
# a reply holds a handful of broken blocks at most; mending is not tried more often than this per reply,
# so a looping reply full of brackets costs milliseconds, not minutes
MAX_MENDS = 32


def _values(text: str, cut_off: bool, wanted=None) -> tuple[list[Any], bool]:
    """Every JSON value in `text`, left to right, each decoded on its own; and whether any was mended.

    A value that decodes as written is kept whatever it holds. A broken block reaches at most to
    the next code fence; it is mended on its own, and kept only if that recovers what is `wanted`
    (default: a question) or is an exact empty list; otherwise the scan moves on inside it.
    """
    wanted = wanted or (lambda value: bool(_collect([value])))
    values: list[Any] = []
    repaired = False
    position, mends = 0, 0
    while True:
        opening = OPENING.search(text, position)
        if opening is None:
            return values, repaired
        start = opening.start()
        try:
            value, end = _DECODER.raw_decode(text, start)
            values.append(value)
            position = end
            continue
        except json.JSONDecodeError:
            pass
        except RecursionError:  # nested past Python's limit: a loop, not an answer; skip the whole run
            position = OPENINGS_RUN.match(text, start).end()
            continue
        if mends >= MAX_MENDS or not PLAUSIBLE_START.match(text, start):
            position = start + 1
            continue
        mends += 1
        limit = _fence_after(text, start)
        extent = _extent(text, start, limit)
        cut_here = not extent.closed and cut_off and limit == len(text)
        block = _complete_prefix(text, start, extent) if cut_here else text[start:extent.end]
        how, value = _decode(block) if block else ("", None)
        mended = cut_here or how != "json"
        if wanted(value) or (how in ("json", "escaped", "literal") and _holds_empty_list(value)):
            values.append(value)
            repaired = repaired or mended
            position = extent.end
        else:
            position = start + 1


# --- items ------------------------------------------------------------------------------------------

def _is_item(value: Any) -> bool:
    return isinstance(value, dict) and any(str(key).strip().lower() == "question" for key in value)


def _collect(values: list[Any]) -> list[dict[str, Any]]:
    """Question objects (keys lower-cased) in the order written, unwrapped from lists and objects of any depth."""
    found: list[dict[str, Any]] = []
    pending = list(reversed(values))  # a stack, not recursion: a looping model can nest values deeply
    while pending:
        value = pending.pop()
        if _is_item(value):
            found.append({str(key).strip().lower(): item for key, item in value.items()})
        elif isinstance(value, (dict, list)):
            pending.extend(reversed(list(value.values()) if isinstance(value, dict) else value))
    return found


def _holds_empty_list(value: Any) -> bool:
    """[] or a wrapper around one ({"questions": []}): the reply says there is no question to write."""
    if not isinstance(value, (dict, list)) or not value:
        return value == []
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, dict) and value:
            pending.extend(value.values())
        elif value != []:
            return False
    return True


# what a template slot looks like once copied: "...", "<question>", "text>", "{question}", "[question]"
_SLOT_WORDS = re.compile(
    r"^(?:q|question|questions|the question|question text|text|string|str|your question(?: here)?|"
    r"insert question(?: here)?|example question|example|sample question|placeholder|tbd|todo|xxx|none|null)"
    r"\s*\d*$")


def is_placeholder(question: Any) -> bool:
    """A question that is a template placeholder rather than a question about the note."""
    if not isinstance(question, str):
        return True
    text = question.strip()
    if not re.search(r"[^\W_]", text):  # nothing but punctuation: "...", "?", "…"
        return True
    if text.startswith("<") or text.endswith(">") or re.fullmatch(r"[\[{(].*[\]})]", text):
        return True
    return bool(_SLOT_WORDS.match(re.sub(r"[^\w ]", "", text).strip().lower()))


def parse_reply(text: Any, finish_reason: str = "stop") -> ParsedReply:
    """Items of one reply; a finish reason in CUT_OFF_REASONS means the reply was cut off."""
    if not isinstance(text, str) or not text.strip():
        return ParsedReply(failure="empty")
    if "[" not in text and "{" not in text:
        return ParsedReply(failure="no_json")
    cut_off = finish_reason in CUT_OFF_REASONS
    values, repaired = _values(text, cut_off)
    found = _collect(values)
    items = [item for item in found if not is_placeholder(item.get("question"))]
    dropped = [(item, "placeholder") for item in found if is_placeholder(item.get("question"))]
    if items:
        return ParsedReply(items, repaired=repaired, dropped=dropped)
    if dropped:
        return ParsedReply(failure="placeholder", repaired=repaired, dropped=dropped)
    if any(_holds_empty_list(value) for value in values):
        return ParsedReply(empty_list=True)
    if cut_off:
        return ParsedReply(failure="truncated")
    if values:
        return ParsedReply(failure="wrong_shape")
    return ParsedReply(failure="invalid_json")


def _has_key(value: Any, keys: tuple[str, ...]) -> bool:
    pending = [value]
    while pending:
        value = pending.pop()
        if isinstance(value, dict):
            if any(str(key).strip().lower() in keys for key in value):
                return True
            pending.extend(value.values())
        elif isinstance(value, list):
            pending.extend(value)
    return False


def json_values(text: Any, finish_reason: str = "stop") -> list[Any]:
    """Every JSON value found in a reply (fenced or bare, mended where broken: kept when it holds an object
    with an "answer" or "question" key); [] when there is none."""
    if not isinstance(text, str) or not text.strip():
        return []
    return _values(text, finish_reason in CUT_OFF_REASONS,
                   wanted=lambda value: _has_key(value, ("answer", "question")))[0]


def reply_needs_retry(text: Any, finish_reason: str, whole_json: bool = False) -> bool:
    """Whether a teacher reply is worth generating again: cut off, or no question recoverable from it.

    An empty list is a valid answer (no values of that kind in the note), not a failure.
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
