"""The reply parser on hand-written teacher replies, plus a round-trip property."""

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_distil.parsing import parse_reply, reply_needs_retry

A = {"question": "Is the patient on aspirin?", "type": "boolean", "answer": "Yes", "section": "Discharge Medications",
     "source": "aspirin 81 mg PO daily", "difficulty": 3, "explanation": "Listed at discharge."}
B = {"question": "What was the highest creatinine?", "type": "numeric", "answer": "2.1", "section": "Pertinent Results",
     "source": "Creat-2.1", "difficulty": 5, "explanation": "Highest of the values."}
C = {"question": "What was the last LDL?", "type": "numeric", "answer": "N/A", "section": "not found",
     "source": "not found", "difficulty": 6, "explanation": "No lipid panel."}
a, b, c = (json.dumps(item) for item in (A, B, C))

CASES = [
    # (reply, finish_reason, expected items, expected failure)
    (f"[{a}, {b}]", "stop", [A, B], None),
    (f"```json\n[{a}, {b}]\n```", "stop", [A, B], None),
    (f"```\n[{a}]\n```", "stop", [A], None),
    (f"```JSON\n[{a}]\n```", "stop", [A], None),
    (f"Here are the questions:\n[{a}, {c}]\nLet me know if you need more.", "stop", [A, C], None),
    (f"Sure! ```json\n[{a}]\n``` and a second batch ```json\n[{b}]\n```", "stop", [A, B], None),
    (f"[{a}]\n\n[{b}, {c}]", "stop", [A, B, C], None),
    (a, "stop", [A], None),
    (json.dumps({"questions": [A, B]}), "stop", [A, B], None),
    (f"[{a}, {b},]", "stop", [A, B], None),
    (f"[{a[:-1]},}}]", "stop", [A], None),
    (json.dumps([A]).replace('"Yes"', "\u201cYes\u201d"), "stop", [A], None),
    (json.dumps([A]).replace('"Listed at discharge."', '"Listed at\ndischarge."'), "stop",
     [dict(A, explanation="Listed at\ndischarge.")], None),
    (json.dumps([dict(B, answer=2.1, difficulty="5")]), "stop", [dict(B, answer=2.1, difficulty="5")], None),
    (json.dumps([{key: A[key] for key in reversed(list(A))}]), "stop", [A], None),
    (json.dumps([{key.capitalize(): value for key, value in A.items()}]), "stop", [A], None),
    (json.dumps([A], indent=4), "stop", [A], None),
    (f"[{a}, {b}, {c[:40]}", "length", [A, B], None),
    (f"```json\n[{a}, {b[:60]}", "length", [A], None),
    (f"[{a}, {b}, {c}", "length", [A, B, C], None),
    (f"[{a[:50]}", "length", [], "truncated"),
    # vLLM ended the request itself: a cut reply like one at the token limit
    (f"[{a}, {b[:60]}", "abort", [A], None),
    (f"[{a}, {b}, {c[:40]}", "error", [A, B], None),
    (f"[{a[:50]}", "repetition", [], "truncated"),
    ("", "stop", [], "empty"),
    ("   \n ", "stop", [], "empty"),
    (None, "stop", [], "empty"),
    ("I cannot answer questions about this note.", "stop", [], "no_json"),
    ('["Yes", "No", "Yes"]', "stop", [], "wrong_shape"),
    ('{"answer": "Yes"}', "stop", [], "wrong_shape"),
    ("[1, 2, 3]", "stop", [], "wrong_shape"),
    ("[{]]]", "stop", [], "invalid_json"),
    ("```json\n```", "stop", [], "no_json"),
    (f"[{a}, {b.replace(chr(34) + '2.1' + chr(34), chr(8220) + '2.1' + chr(8221))}]", "stop", [A, B], None),
    (f"[{a}, {b[:-1]},}}, {c}]", "stop", [A, B, C], None),
    (f"See note [1].\n[{a}]", "stop", [A], None),
    (f"<|im_start|>assistant\n[{a}]<|im_end|>", "stop", [A], None),
    (f"[{a}] [{{\"question\": \"Q?\", \"answer\": \"No\"}}]", "stop", [A, {"question": "Q?", "answer": "No"}], None),
]


@pytest.mark.parametrize("reply, finish_reason, expected, failure", CASES)
def test_reply_table(reply, finish_reason, expected, failure):
    parsed = parse_reply(reply, finish_reason)
    assert parsed.items == expected
    assert parsed.failure == failure


def test_repair_is_reported():
    assert parse_reply(f"[{a}]").repaired is False
    assert parse_reply(f"[{a},]").repaired is True
    assert parse_reply(f"[{a}, {b[:30]}", "length").repaired is True


text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30)
item = st.fixed_dictionaries({
    "question": text, "type": st.sampled_from(["boolean", "numeric"]),
    "answer": st.one_of(st.sampled_from(["Yes", "No", "N/A"]), st.floats(allow_nan=False, allow_infinity=False),
                        st.integers(), text),
    "section": text, "source": text, "difficulty": st.integers(min_value=1, max_value=10), "explanation": text,
})
noise = st.text(alphabet=st.characters(blacklist_characters="[]{}`", blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=150, deadline=None)
@given(items=st.lists(item, min_size=1, max_size=5), before=noise, after=noise,
       fence=st.sampled_from(["", "```json\n", "```\n"]), indent=st.sampled_from([None, 2]))
def test_any_valid_items_wrapped_in_noise_round_trip(items, before, after, fence, indent):
    body = json.dumps(items, indent=indent, ensure_ascii=False)
    reply = f"{before}{fence}{body}{chr(10) + '```' if fence else ''}{after}"
    parsed = parse_reply(reply)
    assert parsed.failure is None
    assert parsed.items == items


# ---------------------------------------------------------------- which teacher replies stage A generates again

@pytest.mark.parametrize("reply, finish_reason, whole_json, retry", [
    (f"[{a}]", "stop", False, False),
    (f"[{a}]", "stop", True, False),
    (f"Here you go: [{a}] Hope this helps.", "stop", False, False),  # prose around JSON: usable, kept
    (f"Here you go: [{a}]", "stop", True, True),  # ... but not what a grammar-bound reply should be
    (f"[{a}, {b}]", "length", False, True),  # complete items, yet cut off: a loop or a short budget
    (f"[{a}]", "abort", False, True),
    ("I cannot help with that.", "stop", False, True),
    ("[]", "stop", True, True),  # whole JSON, no question
    (f"[{a[:-1]}, \"note\": \"line\nbreak\"}}]", "stop", False, False),  # a raw newline: stage B reads it ...
    (f"[{a[:-1]}, \"note\": \"line\nbreak\"}}]", "stop", True, True),  # ... but it is not strict JSON
    ("", "stop", False, True),
])
def test_reply_needs_retry(reply, finish_reason, whole_json, retry):
    assert reply_needs_retry(reply, finish_reason, whole_json) is retry


@settings(max_examples=100, deadline=None)
@given(items=st.lists(item, min_size=1, max_size=4), indent=st.sampled_from([None, 2]), cut=st.floats(0.01, 0.99))
def test_whole_json_replies_are_never_retried_and_any_cut_one_is(items, indent, cut):
    body = json.dumps(items, indent=indent, ensure_ascii=False)
    assert reply_needs_retry(body, "stop", whole_json=True) is False
    # no proper prefix of a JSON list is a JSON value, even one the model ended itself
    assert reply_needs_retry(body[: max(1, int(len(body) * cut))], "stop", whole_json=True) is True
