"""Parsing what a teacher (or a student) model wrote into question items.

The JSON values of a reply are found and decoded by `clinical_distil.lenient_json` (code fences,
prose, broken quoting, Python literals, blocks cut off at the token limit, mending with a bound).
Items are the objects with a "question" key, unwrapped from any depth of wrapper objects and
lists, in the order written.

Reasoning models (Qwen3, R1-distilled models) open their reply with a reasoning block,
`<think> ... </think>` (also `<thinking>`, `<reasoning>`, `<thought>`, `[THINK]`,
`<|begin_of_thought|>`, in any case), where drafts of JSON the model then rejects stand.
Every reader of replies here (`parse_reply`, `json_values`) skips such blocks before looking
for JSON: a closed block, a block cut off before its closing tag (the rest of the reply is
reasoning: no JSON), and a closing tag without an opening one (the chat template wrote the
opening tag into the prompt: everything before it is reasoning).

A reply that reaches the mending bound (MAX_MENDS mends that recovered nothing) keeps every
item read so far and says so: `incomplete` is "mend_limit" (and `failure` is "mend_limit" when
no item was read).

A reply that yields no item gets a reason: empty, no_json, invalid_json, truncated,
wrong_shape, placeholder (every item was a template placeholder) or mend_limit. A reply
that is an empty list (the numeric prompt asks for one when the note has no values) is valid
and has no items. Items copied from the prompt's template ("...", "<question>") are dropped
one by one with the reason "placeholder".
"""

from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass, field
from typing import Any

from clinical_distil.lenient_json import MAX_MENDS, holds_empty_list, is_blank, read_values

log = logging.getLogger(__name__)

FAILURE_REASONS = ("empty", "no_json", "invalid_json", "truncated", "wrong_shape", "placeholder", "mend_limit")
ITEM_DROP_REASONS = ("placeholder",)
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
    # "mend_limit" when the rest of the reply went unread at the mending bound, items or not
    incomplete: str | None = None
    unread: str = ""  # that rest of the reply, from where reading stopped
    reasoning: bool = False  # the reply had a reasoning block (<think> ...), skipped before reading JSON


# --- reasoning blocks -------------------------------------------------------------------------------

# an opening or closing tag of a reasoning block: <think> </think>, <thinking>, <reasoning>, <thought> in any case
# and spacing, Magistral's [THINK] [/THINK], OpenThoughts' <|begin_of_thought|> <|end_of_thought|>
REASONING_TAG = re.compile(
    r"<\s*(?P<slash>/?)\s*(?:think|thinking|reasoning|thought)\s*>|\[(?P<bracket_slash>/?)THINK\]"
    r"|<\|(?P<edge>begin|end)_of_thought\|>", re.IGNORECASE)


def strip_reasoning(text: str) -> tuple[str, bool]:
    """The reply without its reasoning blocks, and whether it had one.

    A block closed by its tag is dropped; one still open at the end (cut off) drops the rest of the
    reply; a closing tag with no opening one before it (the chat template put the opening tag in
    the prompt) drops everything before it.
    """
    kept: list[str] = []
    position, inside, found = 0, False, False
    for tag in REASONING_TAG.finditer(text):
        closing = bool(tag["slash"] or tag["bracket_slash"] or (tag["edge"] or "").lower() == "end")
        found = True
        if not inside and not closing:
            kept.append(text[position:tag.start()])
            inside = True
        elif closing:
            if not inside:  # everything so far was reasoning
                kept = []
            inside = False
            position = tag.end()
    if not found:
        return text, False
    if not inside:
        kept.append(text[position:])
    return "\n".join(kept), True



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


def _holds_question(value: Any) -> bool:
    return bool(_collect([value]))


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
    """Items of one reply; a finish reason in CUT_OFF_REASONS means the reply was cut off.

    A reasoning block is skipped first (`reasoning` says there was one); a reply that is all reasoning
    has no JSON ("truncated" when it was cut off). A reply read only in part (`incomplete`) keeps the items
    of the part read.
    """
    if not isinstance(text, str) or is_blank(text):
        return ParsedReply(failure="empty")
    cut_off = finish_reason in CUT_OFF_REASONS
    text, reasoning = strip_reasoning(text)
    if "[" not in text and "{" not in text:
        return ParsedReply(failure="truncated" if cut_off and reasoning and is_blank(text) else "no_json",
                           reasoning=reasoning)
    scan = read_values(text, cut_off, wanted=_holds_question)
    found = _collect(scan.values)
    items = [item for item in found if not is_placeholder(item.get("question"))]
    dropped = [(item, "placeholder") for item in found if is_placeholder(item.get("question"))]
    read = {"repaired": scan.repaired, "dropped": dropped, "reasoning": reasoning}
    if scan.unread_from is not None:
        read.update(incomplete="mend_limit", unread=text[scan.unread_from:])
        if not items:  # the unread rest may hold the items: say so rather than "placeholder" or "invalid_json"
            return ParsedReply(failure="mend_limit", **read)
    if items:
        return ParsedReply(items, **read)
    if dropped:
        return ParsedReply(failure="placeholder", **read)
    if any(holds_empty_list(value) for value in scan.values):
        return ParsedReply(empty_list=True, reasoning=reasoning)
    if cut_off:
        return ParsedReply(failure="truncated", reasoning=reasoning)
    if scan.values:
        return ParsedReply(failure="wrong_shape", reasoning=reasoning)
    return ParsedReply(failure="invalid_json", reasoning=reasoning)


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
    """Every JSON value found in a reply after its reasoning block (fenced or bare, mended where broken: kept
    when it holds an object with an "answer" or "question" key); [] when there is none."""
    if not isinstance(text, str) or is_blank(text):
        return []
    text = strip_reasoning(text)[0]
    scan = read_values(text, finish_reason in CUT_OFF_REASONS,
                       wanted=lambda value: _has_key(value, ("answer", "question")))
    if scan.unread_from is not None:
        log.warning("a reply was read up to character %d of %d: %d mends recovered nothing", scan.unread_from,
                    len(text), MAX_MENDS)
    return scan.values


def reply_needs_retry(text: Any, finish_reason: str, whole_json: bool = False) -> bool:
    """Whether a teacher reply is worth generating again: cut off, or no question recoverable from it.

    An empty list is a valid answer (no values of that kind in the note), not a failure; a reply read only
    in part (the mending bound) is worth another try. `whole_json` (structured output) asks more: the
    reply after its reasoning block must be one strict JSON value (no raw control characters in strings),
    as the grammar promises for a reply that ended on its own.
    """
    if finish_reason in CUT_OFF_REASONS:
        return True
    parsed = parse_reply(text, finish_reason)
    if parsed.failure is not None or parsed.incomplete is not None:
        return True
    if whole_json:
        try:
            json.loads(strip_reasoning(text)[0])
        except (json.JSONDecodeError, TypeError):
            return True
    return False
