"""The reply parser: a table of named teacher replies, and a property over every way teachers write JSON."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_distil.parsing import is_placeholder, json_values, parse_reply, reply_needs_retry

A = {"question": "Is the patient on aspirin?", "type": "boolean", "answer": "Yes", "section": "Discharge Medications",
     "source": "aspirin 81 mg PO daily", "difficulty": 3, "explanation": "Listed at discharge."}
B = {"question": "What was the highest creatinine?", "type": "numeric", "answer": "2.1", "section": "Pertinent Results",
     "source": "[**2150-3-4**] 06:40AM BLOOD Creat-2.1", "difficulty": 5, "explanation": "Highest of the values."}
C = {"question": "What was the last LDL?", "type": "numeric", "answer": "N/A", "section": "not found",
     "source": "not found", "difficulty": 6, "explanation": "No lipid panel."}
D = {"question": "Has the patient's stroke left a deficit?", "type": "boolean", "answer": "No",
     "section": "Past Medical History", "source": "Ischemic stroke, résolu", "difficulty": 4,
     "explanation": 'The note says "no residual deficit" at discharge.'}
a, b, c, d = (json.dumps(item) for item in (A, B, C, D))
d_unescaped = d.replace('\\"', '"')  # inner quotes left unescaped, as teachers write them
Q = {"question": "Q?", "answer": "No"}  # a question that is not a template slot would read "Q?": a placeholder


def case(reply, finish, expected, failure=None, *, id):
    return pytest.param(reply, finish, expected, failure, id=id)


CASES = [
    # --- one block, plain
    case(f"[{a}, {b}]", "stop", [A, B], id="bare-list"),
    case(a, "stop", [A], id="one-bare-object"),
    case(json.dumps([A], indent=4), "stop", [A], id="indented"),
    case(json.dumps([A, D], ensure_ascii=False), "stop", [A, D], id="unicode-unescaped"),
    case(json.dumps([A, D], ensure_ascii=True), "stop", [A, D], id="unicode-escaped"),
    case(json.dumps([{key.capitalize(): value for key, value in A.items()}]), "stop", [A], id="capitalised-keys"),
    case(json.dumps([{key: A[key] for key in reversed(list(A))}]), "stop", [A], id="keys-reordered"),
    case(json.dumps([dict(B, answer=2.1, difficulty="5")]), "stop", [dict(B, answer=2.1, difficulty="5")],
         id="numbers-as-numbers-and-strings"),
    # --- fences
    case(f"```json\n[{a}, {b}]\n```", "stop", [A, B], id="fence-json"),
    case(f"```\n[{a}]\n```", "stop", [A], id="fence-no-tag"),
    case(f"```JSON\n[{a}]\n```", "stop", [A], id="fence-upper-tag"),
    case(f"~~~json\n[{a}]\n~~~", "stop", [A], id="fence-tildes"),
    case(f"`````\n[{a}]\n`````", "stop", [A], id="fence-five-backticks"),
    case(f"````markdown\n```json\n[{a}]\n```\n````", "stop", [A], id="fence-four-holding-a-json-fence"),
    case(f"~~~~\n```json\n[{a},]\n```\n~~~~\n", "stop", [A], id="fence-tildes-holding-a-broken-block"),
    case(f"```json [{a}] ```", "stop", [A], id="fence-inline"),
    case("```json\n```", "stop", [], "no_json", id="fence-empty"),
    case(f"```python\n[{a}]\n```", "stop", [A], id="fence-python-tag"),
    # --- prose around
    case(f"Here are the questions:\n[{a}, {c}]\nLet me know if you need more.", "stop", [A, C], id="prose-around"),
    case(f"See note [1].\n[{a}]", "stop", [A], id="bracket-in-prose-before"),
    case(f"[{a}]\n\nNote: dates are shifted {{per policy}}.", "stop", [A], id="braces-in-prose-after"),
    case(f"<|im_start|>assistant\n[{a}]<|im_end|>", "stop", [A], id="chat-tokens"),
    case(f"I'm happy to help! Here's the list:\n[{a}]", "stop", [A], id="apostrophes-in-prose"),
    # --- several blocks
    case(f"Sure! ```json\n[{a}]\n``` and a second batch ```json\n[{b}]\n```", "stop", [A, B], id="two-fenced-blocks"),
    case(f"[{a}]\n\n[{b}, {c}]", "stop", [A, B, C], id="two-bare-blocks"),
    case(f"Yes questions:\n```json\n[{a},]\n```\nNo questions:\n```json\n[{d}]\n```", "stop", [A, D],
         id="first-block-trailing-comma"),
    case(f"```json\n[{a[:-1]}, \"note\": \"it's \"odd\"\"}}]\n```\n```json\n[{b}]\n```", "stop",
         [dict(A, note="it's \"odd\""), B], id="first-block-stray-quotes"),
    case(f"[{a},]\n[{b},]\n[{c},]", "stop", [A, B, C], id="three-blocks-all-broken"),
    case(f"[{a}] [{b[:-1]},}}]", "stop", [A, B], id="second-block-trailing-comma-in-object"),
    case(f"{a}\n{b}", "stop", [A, B], id="objects-one-per-line"),
    case(f"1. {a}\n2. {b}", "stop", [A, B], id="numbered-objects"),
    # --- wrappers
    case(json.dumps({"questions": [A, B]}), "stop", [A, B], id="wrapper-one-level"),
    case(json.dumps({"response": {"questions": [A, B]}}), "stop", [A, B], id="wrapper-two-levels"),
    case(json.dumps({"data": {"response": {"items": [A]}}}), "stop", [A], id="wrapper-three-levels"),
    case(json.dumps({"yes_questions": [A], "no_questions": [D]}), "stop", [A, D], id="wrapper-two-lists"),
    case(json.dumps([[A, B], [C]]), "stop", [A, B, C], id="list-of-lists"),
    case(json.dumps({"1": A, "2": B}), "stop", [A, B], id="objects-keyed-by-number"),
    # --- mending inside one block
    case(f"[{a}, {b},]", "stop", [A, B], id="trailing-comma"),
    case(f"[{a[:-1]},}}]", "stop", [A], id="trailing-comma-in-object"),
    case(json.dumps([A]).replace('"Yes"', "\u201cYes\u201d"), "stop", [A], id="smart-quotes"),
    case(json.dumps([A]).replace('"Listed at discharge."', '"Listed at\ndischarge."'), "stop",
         [dict(A, explanation="Listed at\ndischarge.")], id="raw-newline-in-string"),
    case(f"[{d_unescaped}]", "stop", [D], id="unescaped-inner-quotes"),
    case(f"[{a}, {b.replace(chr(34) + '2.1' + chr(34), chr(8220) + '2.1' + chr(8221))}]", "stop", [A, B],
         id="smart-quoted-value"),
    case(f"[{a}, {b[:-1]},}}, {c}]", "stop", [A, B, C], id="trailing-comma-middle-item"),
    case(f"[{a}, {b}", "stop", [A, B], id="unclosed-list-ended-by-model"),
    case(f"[{a}\n{b}]", "stop", [A, B], id="missing-comma-between-items"),
    # --- Python literals
    case(repr([A, B]), "stop", [A, B], id="python-literal"),
    case(repr([A, D]), "stop", [A, D], id="python-literal-apostrophe-and-quotes"),
    case(repr([dict(A, answer=True)]), "stop", [dict(A, answer=True)], id="python-literal-true"),
    case(f"```python\n{repr([A])}\n```\n```json\n[{b}]\n```", "stop", [A, B], id="python-then-json-blocks"),
    case("[{'question': 'Is the patient's INR above 2?', 'answer': 'Yes'}]", "stop",
         [{"question": "Is the patient's INR above 2?", "answer": "Yes"}], id="python-unescaped-apostrophe"),
    # --- cut off (token limit and vLLM's own endings)
    case(f"[{a}, {b}, {c[:40]}", "length", [A, B], id="cut-in-third-item"),
    case(f"```json\n[{a}, {b[:60]}", "length", [A], id="cut-fenced"),
    case(f"[{a}, {b}, {c}", "length", [A, B, C], id="cut-before-closing-bracket"),
    case(f"[{a}, {b}, {c},", "length", [A, B, C], id="cut-after-comma"),
    case(f"[{a[:50]}", "length", [], "truncated", id="cut-in-first-item"),
    case(f"[{a}, {b[:60]}", "abort", [A], id="vllm-abort"),
    case(f"[{a}, {b}, {c[:40]}", "error", [A, B], id="vllm-error"),
    case(f"[{a[:50]}", "repetition", [], "truncated", id="vllm-repetition"),
    case(repr([A, B, C])[:-40], "length", [A, B], id="cut-python-literal"),
    case(repr([A, D, C])[:len(repr([A, D])) + 5], "length", [A, D], id="cut-python-literal-after-quotes"),
    case(json.dumps({"response": {"questions": [A, B, C]}})[:-60], "length", [A, B], id="cut-inside-wrapper"),
    case(f"[{a}, {d_unescaped}, {b[:70]}", "length", [A, D], id="cut-after-unescaped-quotes"),
    case(f"```json\n[{a}]\n```\n```json\n[{b}, {c[:20]}", "length", [A, B], id="cut-second-block"),
    case(f"[{a}, {b[:-1]},}}, {c[:30]}", "length", [A, B], id="cut-after-trailing-comma-item"),
    # --- empty lists: valid replies without a question
    case("[]", "stop", [], None, id="empty-list"),
    case("```json\n[]\n```", "stop", [], None, id="empty-list-fenced"),
    case('{"questions": []}', "stop", [], None, id="empty-list-wrapped"),
    case("The note has no numeric values.\n[]", "stop", [], None, id="empty-list-after-prose"),
    # --- placeholders copied from the prompt's template
    case(json.dumps([A, {"question": "...", "answer": "Yes"}]), "stop", [A], id="placeholder-ellipsis"),
    case(json.dumps([{"question": "<question>"}, B]), "stop", [B], id="placeholder-angle-slot"),
    case(json.dumps([A, {"question": "text>", "answer": "No"}]), "stop", [A], id="placeholder-stray-tag"),
    case(json.dumps([{"question": "<question>"}, {"question": "\u2026"}]), "stop", [], "placeholder",
         id="placeholders-only"),
    case(f"[{a}] [{json.dumps(Q)}]", "stop", [A], id="placeholder-q"),
    # --- nothing usable
    case("", "stop", [], "empty", id="empty-string"),
    case("   \n ", "stop", [], "empty", id="blank"),
    case(None, "stop", [], "empty", id="none"),
    case("I cannot answer questions about this note.", "stop", [], "no_json", id="refusal"),
    case('["Yes", "No", "Yes"]', "stop", [], "wrong_shape", id="list-of-strings"),
    case('{"answer": "Yes"}', "stop", [], "wrong_shape", id="object-without-question"),
    case("[1, 2, 3]", "stop", [], "wrong_shape", id="list-of-numbers"),
    case("{}", "stop", [], "wrong_shape", id="empty-object"),
    case("[{]]]", "stop", [], "invalid_json", id="bracket-soup"),
]


@pytest.mark.parametrize("reply, finish_reason, expected, failure", CASES)
def test_reply_table(reply, finish_reason, expected, failure):
    parsed = parse_reply(reply, finish_reason)
    assert parsed.items == expected
    assert parsed.failure == failure


def test_the_table_is_broad():
    assert len(CASES) >= 50


def test_empty_lists_and_placeholders_are_reported_apart():
    assert parse_reply("[]").empty_list and parse_reply("[]").failure is None
    assert not parse_reply(f"[{a}]").empty_list
    parsed = parse_reply(json.dumps([A, {"question": "<question>", "answer": "<answer>"}]))
    assert parsed.items == [A] and parsed.dropped == [({"question": "<question>", "answer": "<answer>"}, "placeholder")]


def test_repair_is_reported():
    assert parse_reply(f"[{a}]").repaired is False
    assert parse_reply(f"[{a},]").repaired is True
    assert parse_reply(repr([A])).repaired is True
    assert parse_reply(f"[{a}, {b[:30]}", "length").repaired is True


@pytest.mark.parametrize("question, placeholder", [
    ("...", True), ("\u2026", True), ("?", True), ("", True), (None, True), (3, True), ("<question>", True),
    ("text>", True), ("<insert question here>", True), ("{question}", True), ("[Question 1]", True),
    ("Question", True), ("Your question here", True), ("Q1", True),
    ("Is the creatinine > 1.3?", False), ("Was the INR >2 on admission?", False), ("Is BNP above 500?", False),
    ("What was the highest troponin (ng/mL)?", False), ("Does the patient take aspirin?", False),
])
def test_placeholder_questions(question, placeholder):
    assert is_placeholder(question) is placeholder


def test_json_values_keep_broken_answer_objects_apart():
    values = json_values('```json\n{"answer": "Yes",}\n```\n{"answer": "No"}')
    assert values == [{"answer": "Yes"}, {"answer": "No"}]


# ---------------------------------------------------------------- the property: every rendering teachers use

WORDS = ["patient", "aspirin", "creatinine", "héparine", "µg/dL", "≥", "stroke", "last", "día", "发热", "value",
         "highest", "admission", "O'Brien", "INR", "2.1", "50%", "(ICU)", "[**2150-3-4**]", "{dose}", "#2", "&"]
words = st.lists(st.sampled_from(WORDS), min_size=1, max_size=6).map(" ".join)
question = st.lists(st.sampled_from(WORDS), min_size=2, max_size=6).map(lambda parts: "What is " + " ".join(parts) + "?")
# inner quotes around a phrase, followed by a word: the way teachers quote the note inside an explanation
explanation = st.one_of(words, st.tuples(words, words, words).map(lambda parts: '{} "{}" {}.'.format(*parts)))
answer = st.one_of(st.sampled_from(["Yes", "No", "N/A", "NA"]), st.integers(-1000, 100000),
                   st.floats(-1e4, 1e6, allow_nan=False).map(lambda value: round(value, 2)), words)
item = st.fixed_dictionaries({
    "question": question, "type": st.sampled_from(["boolean", "numeric"]), "answer": answer,
    "section": st.sampled_from(["Past Medical History", "Pertinent Results", "not found"]), "source": words,
    "difficulty": st.integers(1, 10), "explanation": explanation,
})
noise = st.text(alphabet=st.characters(blacklist_characters="[]{}`~", blacklist_categories=("Cs",)), max_size=40)
style = st.fixed_dictionaries({
    "quoting": st.sampled_from(["json", "json-ascii", "json-unescaped-quotes", "python"]),
    "indent": st.sampled_from([None, 2, 4]), "trailing_commas": st.booleans(),
    "wrappers": st.lists(st.sampled_from(["questions", "response", "data", "items"]), max_size=3),
    "fence": st.sampled_from(["", "```", "````", "`````", "~~~", "~~~~", "````+```"]),
    "tag": st.sampled_from(["", "json", "JSON", "python"]),
})


def render_item(value: dict, quoting: str, indent, trailing_comma: bool) -> str:
    if quoting == "python":
        text = repr(value)
    else:
        text = json.dumps(value, ensure_ascii=quoting == "json-ascii", indent=indent)
        if quoting == "json-unescaped-quotes":
            text = text.replace('\\"', '"')
    return text[:-1].rstrip() + ",\n}" if trailing_comma else text


def render_block(values: list[dict], block_style: dict) -> tuple[str, list[int]]:
    """One block of items as a teacher writes it, and the offset just past each item's closing brace."""
    quote = "'" if block_style["quoting"] == "python" else '"'
    texts = [render_item(value, block_style["quoting"], block_style["indent"], block_style["trailing_commas"])
             for value in values]
    prefix = "".join("{" + quote + key + quote + ": " for key in block_style["wrappers"])
    suffix = "}" * len(block_style["wrappers"])
    text, ends = prefix + "[", []
    for position, item_text in enumerate(texts):
        text += ("," if position else "") + ("\n" if block_style["indent"] else " ") + item_text
        ends.append(len(text))
    text += ("," if block_style["trailing_commas"] and texts else "") + "]" + suffix
    fence = block_style["fence"]
    if not fence:
        return text, ends
    outer, _, inner = fence.partition("+")
    opening = f"{outer}{block_style['tag']}\n" + (f"{inner}json\n" if inner else "")
    closing = (f"\n{inner}" if inner else "") + f"\n{outer}"
    return opening + text + closing, [end + len(opening) for end in ends]


@settings(max_examples=1000, deadline=None)
@given(data=st.data(), values=st.lists(item, min_size=1, max_size=6), before=noise, after=noise,
       between=noise, cut=st.booleans())
def test_complete_items_come_back_in_order_from_any_rendering(data, values, before, after, between, cut):
    blocks = data.draw(st.integers(1, min(3, len(values))))
    bounds = sorted(data.draw(st.lists(st.integers(1, len(values) - 1), min_size=blocks - 1, max_size=blocks - 1,
                                       unique=True))) if blocks > 1 and len(values) > 1 else []
    groups = [values[low:high] for low, high in zip([0, *bounds], [*bounds, len(values)])]
    reply, ends = before + "\n", []
    for position, group in enumerate(groups):
        text, group_ends = render_block(group, data.draw(style))
        ends += [len(reply) + end for end in group_ends]
        reply += text + ("\n" + between + "\n" if position < len(groups) - 1 else "")
    reply += "\n" + after
    finish = "stop"
    if cut:
        reply = reply[: data.draw(st.integers(0, len(reply)))]
        finish = "length"
    complete = [value for value, end in zip(values, ends) if end <= len(reply)]
    parsed = parse_reply(reply, finish)
    assert parsed.items == complete
    assert (parsed.failure is None) == bool(complete)


# ---------------------------------------------------------------- which teacher replies stage A generates again

@pytest.mark.parametrize("reply, finish_reason, whole_json, retry", [
    (f"[{a}]", "stop", False, False),
    (f"[{a}]", "stop", True, False),
    (f"Here you go: [{a}] Hope this helps.", "stop", False, False),  # prose around JSON: usable, kept
    (f"Here you go: [{a}]", "stop", True, True),  # ... but not what a grammar-bound reply should be
    (f"[{a}, {b}]", "length", False, True),  # complete items, yet cut off: a loop or a short budget
    (f"[{a}]", "abort", False, True),
    ("I cannot help with that.", "stop", False, True),
    ("[]", "stop", True, False),  # the note has no such values: a valid answer, not a failure
    ("[]", "stop", False, False),
    (json.dumps([{"question": "<question>"}]), "stop", False, True),  # only the template copied back
    (f"[{a[:-1]}, \"note\": \"line\nbreak\"}}]", "stop", False, False),  # a raw newline: stage B reads it ...
    (f"[{a[:-1]}, \"note\": \"line\nbreak\"}}]", "stop", True, True),  # ... but it is not strict JSON
    ("", "stop", False, True),
])
def test_reply_needs_retry(reply, finish_reason, whole_json, retry):
    assert reply_needs_retry(reply, finish_reason, whole_json) is retry


@settings(max_examples=100, deadline=None)
@given(values=st.lists(item, min_size=1, max_size=4), indent=st.sampled_from([None, 2]), cut=st.floats(0.01, 0.99))
def test_whole_json_replies_are_never_retried_and_any_cut_one_is(values, indent, cut):
    body = json.dumps(values, indent=indent, ensure_ascii=False)
    assert reply_needs_retry(body, "stop", whole_json=True) is False
    # no proper prefix of a JSON list is a JSON value, even one the model ended itself
    assert reply_needs_retry(body[: max(1, int(len(body) * cut))], "stop", whole_json=True) is True


# ---------------------------------------------------------------- nothing dropped in silence (issue 35, item 1)

def python_list_with_a_comment(values: list[dict]) -> str:
    """A Python-style list whose first line is a // comment: the list itself does not look like JSON, so
    every item is mended on its own."""
    return "[\n// the questions\n" + ",\n".join(repr(value) for value in values) + "\n]"


MANY = [dict(A, question=f"Is item {index} on the list?") for index in range(40)]


def test_a_python_list_with_a_comment_keeps_every_item():
    parsed = parse_reply(python_list_with_a_comment(MANY))
    assert parsed.items == MANY
    assert (parsed.failure, parsed.incomplete, parsed.repaired) == (None, None, True)


def test_a_non_breaking_space_before_a_closing_brace_keeps_every_object():
    reply = "[" + ", ".join(json.dumps(value)[:-1] + "\u00a0}" for value in MANY[:5]) + "]"
    parsed = parse_reply(reply)
    assert parsed.items == MANY[:5]
    assert (parsed.failure, parsed.incomplete) == (None, None)


JUNK = '{"note": "not a question",}'  # decodes once mended, but holds no question: a mend that recovers nothing


def test_the_mend_limit_keeps_the_items_read_and_records_the_rest():
    read_first = f"[{a}]\n" + "\n".join([JUNK] * 32)
    parsed = parse_reply(read_first + f"\n{JUNK}\n[{b}]")
    assert parsed.items == [A] and parsed.failure is None
    assert parsed.incomplete == "mend_limit" and parsed.unread == f"{JUNK}\n[{b}]"
    # the bound counts mends that recover nothing: 31 of them, and any number that recover an item, cost nothing
    parsed = parse_reply(f"[{a}]\n" + "\n".join([JUNK] * 31 + [f"[{b},]"] * 300) + f"\n[{c}]")
    assert parsed.items == [A] + [B] * 300 + [C] and parsed.incomplete is None
    # no item before the bound: the reply's failure says why
    parsed = parse_reply("\n".join([JUNK] * 40) + f"\n[{b}]")
    assert (parsed.items, parsed.failure, parsed.incomplete) == ([], "mend_limit", "mend_limit")
    assert reply_needs_retry(read_first + f"\n{JUNK}\n[{b}]", "stop")
    # a looping reply: brackets nested thousands deep are not mended at all, and the bound ends the reading
    assert (parse_reply("[{" * 50000).failure, parse_reply("[{" * 50000).unread[:4]) == ("mend_limit", "[{[{")
    # json_values (student and verifier answers) stops at the same bound
    assert json_values("\n".join(['{"other": 1,}'] * 40) + '\n{"answer": "Yes"}') == []
    assert json_values("\n".join(['{"other": 1,}'] * 31) + '\n{"answer": "Yes"}') == [{"answer": "Yes"}]


# Unicode spaces where JSON allows whitespace: plain, non-breaking, figure, narrow, ideographic, the U+2000 range,
# Ogham, line and paragraph separators, next line, zero-width and the byte-order mark
SPACES = [" ", "\t", "\n", "\r\n", "\u00a0", "\u2007", "\u202f", "\u3000", "\u2000", "\u2003", "\u2005", "\u200a",
          "\u1680", "\u205f", "\u2028", "\u2029", "\x85", "\u200b", "\u2060", "\ufeff"]
gap = st.lists(st.sampled_from(SPACES), max_size=3).map("".join)
# strings that hold such spaces themselves: kept exactly as written
spaced_question = st.tuples(question, st.sampled_from(["", "\u00a05\u00a0mg", "\u3000(ICU)", "\u202f%"])).map("".join)


def render_spaced(draw, value, python: bool) -> str:
    """`value` as JSON (or a Python literal) with a run of Unicode spaces wherever whitespace may stand."""
    if isinstance(value, dict):
        members = [f"{draw(gap)}{render_spaced(draw, key, python)}{draw(gap)}:{draw(gap)}"
                   f"{render_spaced(draw, member, python)}{draw(gap)}" for key, member in value.items()]
        return "{" + (",".join(members) or draw(gap)) + "}"
    if isinstance(value, list):
        elements = [f"{draw(gap)}{render_spaced(draw, element, python)}{draw(gap)}" for element in value]
        return "[" + (",".join(elements) or draw(gap)) + "]"
    return repr(value) if python else json.dumps(value, ensure_ascii=False)


@settings(max_examples=150, deadline=None)
@given(data=st.data(), values=st.lists(item, min_size=1, max_size=4), questions=st.lists(spaced_question, min_size=4,
       max_size=4), python=st.booleans(), wrapped=st.booleans(), fenced=st.booleans())
def test_unicode_spaces_anywhere_whitespace_may_stand(data, values, questions, python, wrapped, fenced):
    values = [dict(value, question=text) for value, text in zip(values, questions)]
    body = render_spaced(data.draw, {"questions": values} if wrapped else values, python)
    reply = data.draw(gap) + (f"```json\n{body}\n```" if fenced else body) + data.draw(gap)
    parsed = parse_reply(reply)
    assert parsed.items == values
    assert (parsed.failure, parsed.incomplete) == (None, None)


MENDS = {  # one item as teachers write it broken, each needing a mend of its own kind
    "trailing-comma": lambda value: json.dumps(value)[:-1] + ",}",
    "non-breaking-space": lambda value: json.dumps(value)[:-1] + "\u00a0}",
    "python": repr,
    "python-ideographic-space": lambda value: repr(value)[:-1] + "\u3000}",
    "unescaped-quotes": lambda value: json.dumps(dict(value, explanation='The note says "no deficit" today.'),
                                                 ensure_ascii=False).replace('\\"', '"'),
}


@settings(max_examples=12, deadline=None)
@given(bases=st.lists(item, min_size=1, max_size=3), count=st.integers(100, 400),
       kinds=st.lists(st.sampled_from(sorted(MENDS)), min_size=1, max_size=4),
       comment=st.sampled_from(["", "// the questions", "# the questions", "/* the questions */"]),
       every=st.integers(5, 50))
def test_hundreds_of_items_needing_mending_all_come_back(bases, count, kinds, comment, every):
    values = [dict(bases[index % len(bases)], question=f"{bases[index % len(bases)]['question']} ({index})")
              for index in range(count)]
    texts = [MENDS[kinds[index % len(kinds)]](value) for index, value in enumerate(values)]
    if "unescaped-quotes" in kinds:
        values = [dict(value, explanation='The note says "no deficit" today.') if kinds[index % len(kinds)] ==
                  "unescaped-quotes" else value for index, value in enumerate(values)]
    lines = [("\n" + comment + "\n" if comment and index % every == 0 else "\n") + text for index, text in
             enumerate(texts)]
    reply = "[" + ",".join(lines) + "\n]"
    parsed = parse_reply(reply)
    assert len(parsed.items) == count and parsed.items == values
    assert (parsed.failure, parsed.incomplete, parsed.repaired) == (None, None, True)


# ---------------------------------------------------------------- reasoning blocks (issue 35, item 2)

DRAFT = {"question": "Draft: is the patient on warfarin?", "answer": "Maybe"}
draft = json.dumps([DRAFT])


@pytest.mark.parametrize("reply, finish_reason, expected, failure", [
    (f"<think>\nFirst try: {draft}\nNo, better ones.\n</think>\n[{a}]", "stop", [A], None),
    (f"  \n<THINK>{draft}</THINK>[{a}, {b}]", "stop", [A, B], None),
    (f"<thinking>Let me draft {draft[:-1]},\n</thinking>\n```json\n[{a}]\n```", "stop", [A], None),
    (f"<reasoning>{draft}</reasoning>\n{a}", "stop", [A], None),
    (f"<Thought>{draft}</Thought>{a}", "stop", [A], None),
    (f"[THINK]{draft}[/THINK]\n[{a}]", "stop", [A], None),
    (f"<|begin_of_thought|>{draft}<|end_of_thought|>\n[{a}]", "stop", [A], None),
    (f"\ufeff<think></think>\n\n[{a}]", "stop", [A], None),  # an empty block (thinking switched off)
    (f"The template opened the block.\n{draft}\n</think>\n[{a}]", "stop", [A], None),  # opening tag in the prompt
    (f"<think>\n{draft}\nHmm, and then [{a}", "length", [], "truncated"),  # cut off inside the block
    (f"<think>\n{draft}\nI give up.", "stop", [], "no_json"),  # never closed: all reasoning
    (f"<think>{draft}</think>\nThe note has no such values.", "stop", [], "no_json"),
    (f"<think>{draft}</think>\n[]", "stop", [], None),
])
def test_reasoning_blocks_are_skipped(reply, finish_reason, expected, failure):
    parsed = parse_reply(reply, finish_reason)
    assert (parsed.items, parsed.failure, parsed.reasoning) == (expected, failure, True)


def test_replies_without_reasoning_say_so():
    assert parse_reply(f"[{a}]").reasoning is False
    assert parse_reply(json.dumps([dict(A, explanation="I think so.")])).reasoning is False


def test_json_values_and_retries_skip_reasoning():
    assert json_values('<think>{"answer": "Yes"}</think>\n{"answer": "No"}') == [{"answer": "No"}]
    assert json_values('<think>{"answer": "Yes"} and more') == []
    assert not reply_needs_retry(f"<think>{draft}</think>\n[{a}]", "stop", whole_json=True)
    assert reply_needs_retry(f"<think>{draft}", "stop")


TAGS = [("<think>", "</think>"), ("<THINK>", "</THINK>"), ("<thinking>", "</thinking>"),
        ("<reasoning>", "</reasoning>"), ("<Thought>", "</Thought>"), ("< think >", "</ think >"),
        ("[THINK]", "[/THINK]"), ("<|begin_of_thought|>", "<|end_of_thought|>")]
drafts = st.lists(item.map(lambda value: dict(value, question="Draft: " + value["question"])), min_size=1, max_size=3)


@settings(max_examples=200, deadline=None)
@given(data=st.data(), drafts=drafts, answers=st.lists(item, max_size=3), tags=st.sampled_from(TAGS),
       ending=st.sampled_from(["closed", "cut", "opened-in-prompt"]), lead=gap, prose=noise)
def test_drafts_inside_reasoning_are_never_items(data, drafts, answers, tags, ending, lead, prose):
    opening, closing = tags
    thought = prose + "\n" + data.draw(style).get("fence", "") + "\n"
    thought += render_block(drafts, data.draw(style))[0]
    cut_at = data.draw(st.integers(0, len(thought)))  # drafts broken anywhere, the block never closed
    answer = render_block(answers, data.draw(style))[0] if answers else "[]"
    if ending == "closed":
        reply, finish, expected = f"{lead}{opening}{thought}{closing}\n{answer}", "stop", answers
    elif ending == "opened-in-prompt":
        reply, finish, expected = f"{thought}{closing}\n{answer}", "stop", answers
    else:
        reply, finish, expected = f"{lead}{opening}{thought[:cut_at]}", "length", []
    parsed = parse_reply(reply, finish)
    assert parsed.items == expected and parsed.reasoning
    assert not any(value["question"].startswith("Draft:") for value in parsed.items)
    assert parsed.failure == (None if ending != "cut" else "truncated")
