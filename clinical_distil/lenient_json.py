"""JSON values found in a model's text and decoded leniently, each on its own.

Real replies wrap their JSON in code fences (of three or more backticks or tildes, nested
too) or prose, split it over several blocks, write Python literals, leave trailing commas,
stray or smart quotes, or stop mid-list at the token limit. Every JSON value in a text is
found and decoded on its own: standard JSON first; then, with the quotes inside its strings
escaped, JSON or a Python literal; then `json-repair` on that block alone, so one broken
block never costs the values of another. A broken block ends at the latest where a code fence
begins. A block cut off by the token limit keeps exactly its complete elements (those whose
closing brace was written), whatever their quoting.

Whitespace is any Unicode space where JSON allows whitespace (a non-breaking space before a
closing brace, an ideographic space after a comma, a byte-order mark before a key), and
`//`, `/* */` and `#` comments outside strings are read past.

Mending is bounded: after MAX_MENDS mends that recovered nothing, the rest of the text is not
read (a looping reply full of brackets would otherwise cost minutes); mends that recover a
value do not count.
"""

from __future__ import annotations

import ast
import json
import re
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import json_repair

_DECODER = json.JSONDecoder(strict=False)  # strict=False: raw newlines inside strings are common
# a code fence: a run of 3+ backticks or tildes and an optional language tag; fences bound a broken block
FENCE_MARK = re.compile(r"(?:`{3,}|~{3,})(?:[ \t]*[A-Za-z][\w+.-]*)?")
# characters that stand where JSON allows whitespace: Unicode spaces (str.isspace: U+00A0, U+2000-U+200A,
# U+202F, U+3000, ...) and the zero-width ones models emit (U+200B-U+200D, U+2060, the byte-order mark U+FEFF)
ZERO_WIDTH = "\u200b\u200c\u200d\u2060\ufeff"
SPACE = rf"[\s{ZERO_WIDTH}]"


def _is_space(char: str) -> bool:
    return char.isspace() or char in ZERO_WIDTH


def is_blank(text: str) -> bool:
    """Nothing but whitespace, zero-width characters included."""
    return all(_is_space(char) for char in text)


def _comment_end(text: str, position: int, limit: int) -> int:
    """Where a comment that starts at `position` (outside strings: // or # to the line's end, /* */) ends;
    `position` itself when none starts there."""
    char = text[position]
    if char == "#" or text.startswith("//", position):
        end = text.find("\n", position, limit)
        return limit if end < 0 else end
    if text.startswith("/*", position):
        end = text.find("*/", position + 2, limit)
        return limit if end < 0 else end + 2
    return position


def _closes_string(text: str, position: int, limit: int) -> bool:
    """A quote closes a string when what follows it (after spaces) ends a value: , : ] } or the block.

    (A comment is not passed over here: 'he said "no" #2 today' would end the string at "no".)
    """
    while position < limit and _is_space(text[position]):
        position += 1
    return position >= limit or text[position] in ",:]}"


@dataclass
class _Extent:
    end: int  # one past the block's last character
    closed: bool  # its brackets balanced before `limit`
    # (position after a "}" that closed an element of a list, the still-open brackets there)
    element_closes: list[tuple[int, tuple[str, ...]]]
    depth: int = 0  # the deepest nesting of brackets in it


def _scan_block(text: str, start: int, limit: int, out: list[str] | None = None) -> _Extent:
    """Walks the block opened at `start`, tolerant of broken quoting: how far it reaches and, into `out` when
    given, the block rewritten to decode (see `_escape_inner_quotes`).

    Strings open at a double quote, or at a single quote where a key or value begins (after [ { , or :,
    Python literals); a quote closes one only where a value could end, so an unescaped inner quote
    ("he said "no" today") does not end it early. Brackets inside strings do not count; outside
    strings, comments are passed over and any Unicode space is whitespace.
    """
    stack: list[str] = []
    closes: list[tuple[int, tuple[str, ...]]] = []
    quote, previous = "", ""  # the string open now; the last character read outside spaces and comments
    position, depth = start, 0
    while position < limit:
        char = text[position]
        if quote:
            if char == "\\":
                if out is not None:
                    out.append(text[position:position + 2])
                previous = text[position + 1:position + 2]
                position += 2
                continue
            if char == quote:
                if _closes_string(text, position + 1, limit):
                    quote = ""
                elif out is not None:
                    out.append("\\")
        elif _is_space(char):
            if out is not None:
                out.append(" ")
            position += 1
            continue
        elif char in "#/" and _comment_end(text, position, limit) > position:
            position = _comment_end(text, position, limit)
            continue
        elif char == '"' or (char == "'" and previous in ("", "[", "{", ",", ":")):
            quote = char
        elif char in "[{":
            stack.append(char)
            depth = max(depth, len(stack))
            if depth > MAX_DEPTH and out is None:  # a loop, not a reply's items: no need to find its end
                return _Extent(limit, False, closes, depth)
        elif char in "]}" and out is None:
            if stack:
                stack.pop()
            if not stack:
                return _Extent(position + 1, True, closes, depth)
            if char == "}" and stack[-1] == "[":
                closes.append((position + 1, tuple(stack)))
        if out is not None:
            out.append(char)
        previous = char
        position += 1
    return _Extent(limit, False, closes, depth)


def _extent(text: str, start: int, limit: int) -> _Extent:
    """How far the block opened at `start` reaches (by the rules of `_scan_block`)."""
    return _scan_block(text, start, limit)


def _escape_inner_quotes(block: str) -> str:
    """The block with every quote that sits inside a string (by the rules of `_scan_block`) escaped, and outside
    strings every Unicode space made a plain one and every comment dropped.

    'he said "no chest pain" today' inside a JSON string, or 'the patient's' inside a Python one,
    then decodes exactly; json-repair guesses at such quotes and loses text when a bracket follows.
    """
    out: list[str] = []
    _scan_block(block, 0, len(block), out)
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
OPENINGS_RUN = re.compile(rf"(?:[\[{{]|{SPACE})*")
# a bracket that opens JSON structure ('[{', '[[', '["', '[]', '{"key', "{'key", '{key', '{}'), not prose such
# as "[1]", "[**2150-3-4**]" or a run of '{"{"{' that a looping model writes
PLAUSIBLE_START = re.compile(rf"""\[{SPACE}*[\[{{\]"']|\{{{SPACE}*(?:["']\w|[^\W\d]|\}})""")
# a reply holds a handful of broken blocks at most; a mend that recovers nothing is not tried more often than
# this per reply, so a looping reply full of brackets costs milliseconds, not minutes (a mend that recovers a
# value moves the scan past its block, so those cost no more than reading the reply, and are not counted)
MAX_MENDS = 32
# items sit a few brackets deep (a wrapper or two, a list, the object); a block nested deeper than this is a
# loop ('[{[{[{...'), whose mending by json-repair would take seconds each time: it counts as a failed mend
MAX_DEPTH = 64


@dataclass
class Scan:
    values: list[Any]
    repaired: bool  # a value needed mending (or was cut and closed)
    unread_from: int | None  # where reading stopped at the mending bound; None when the whole text was read


def read_values(text: str, cut_off: bool, wanted: Callable[[Any], bool]) -> Scan:
    """Every JSON value in `text`, left to right, each decoded on its own; whether any was mended; where
    reading stopped, if it did.

    A value that decodes as written is kept whatever it holds. A broken block reaches at most to
    the next code fence; it is mended on its own, and kept only if that recovers what is `wanted`
    or is an exact empty list (or a wrapper around one); otherwise the scan moves on inside it. After
    MAX_MENDS mends that recovered nothing, reading stops at the next block that needs one. `cut_off`: the
    text ended at the token limit, so a block still open at its end keeps its complete elements.
    """
    values: list[Any] = []
    repaired = False
    position, failed_mends = 0, 0
    fence = -1  # the next code fence at or after the last block mended (searched again only once passed)
    while True:
        opening = OPENING.search(text, position)
        if opening is None:
            return Scan(values, repaired, None)
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
        if not PLAUSIBLE_START.match(text, start):
            position = start + 1
            continue
        if failed_mends >= MAX_MENDS:
            return Scan(values, repaired, start)
        if fence < start:
            fence = _fence_after(text, start)
        limit = fence
        extent = _extent(text, start, limit)
        cut_here = not extent.closed and cut_off and limit == len(text)
        block = _complete_prefix(text, start, extent) if cut_here else text[start:extent.end]
        how, value = _decode(block) if block and extent.depth <= MAX_DEPTH else ("", None)
        mended = cut_here or how != "json"
        if wanted(value) or (how in ("json", "escaped", "literal") and holds_empty_list(value)):
            values.append(value)
            repaired = repaired or mended
            position = extent.end
        else:
            failed_mends += 1
            position = start + 1


def holds_empty_list(value: Any) -> bool:
    """[] or a wrapper around one ({"questions": []}): a reply that says there is nothing to write."""
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
