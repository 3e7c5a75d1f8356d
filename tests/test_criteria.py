"""Criteria files: reading, rules, one-line errors, and the shipped files the evaluation tasks ask."""

import inspect
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinical_distil import criteria, metrics, preprocess
from clinical_distil.criteria import Rule, parse_rule, read_criteria
from clinical_distil.files import InputError
from clinical_distil.tasks import APIXABAN, APIXABAN_BOOLEAN, APIXABAN_NUMERIC, N2C2, N2C2_CRITERIA, N2C2_NUMERIC


def write(tmp_path, text, name="criteria.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_and_csv_give_the_same_criteria(tmp_path):
    yaml_file = write(tmp_path, """criteria:
  - id: creat
    question: What is the highest creatinine in the {window} before {reference_date}?
    answer: numeric
    rule: "> 1.3"
    window: 6 months
  - id: afib
    question: Does the patient have atrial fibrillation?
    answer: yes/no
  - {id: no-stroke, question: "Has the patient had a stroke?", answer: Yes/No, rule: no}
""")
    csv_file = write(tmp_path, "id,question,answer,rule,window\n"
                     'creat,"What is the highest creatinine in the {window} before {reference_date}?",numeric,> 1.3,'
                     "6 months\nafib,Does the patient have atrial fibrillation?,yes/no,,\n"
                     "no-stroke,Has the patient had a stroke?,boolean,no,\n", "criteria.csv")
    for path in (yaml_file, csv_file):
        creat, afib, no_stroke = read_criteria(path)
        assert (creat.id, creat.answer, creat.rule, creat.window) == ("creat", "numeric", Rule(">", 1.3, 1.3),
                                                                      "6 months")
        assert creat.ask("2019-03-02") == "What is the highest creatinine in the 6 months before 2019-03-02?"
        assert (afib.answer, afib.rule, no_stroke.rule) == ("yes/no", Rule("yes"), Rule("no"))
        answers = ["2.1", "1.3", "NA", "1.5 mg/dL", "about 1.5"]  # a number with its unit counts, a hedge not
        assert [creat.met(answer) for answer in answers] == [True, False, False, True, False]
        assert [afib.met("Yes"), afib.met("yes."), afib.met("No"), afib.met("NA")] == [True, True, False, False]
        assert [no_stroke.met("No"), no_stroke.met("NA"), no_stroke.met("Yes")] == [True, True, False]


@pytest.mark.parametrize("rule, met, not_met", [
    (">= 6.5", ["6.5", "7", "12.0"], ["6.4", "NA", "unknown"]),
    ("< 100", ["99", "-3", "99.99"], ["100", "150", "NA"]),
    ("<= 55", ["55", "20"], ["55.1", "NA"]),
    ("= 2", ["2", "2.0"], ["3", "NA"]),
    ("in [6.5, 9.5]", ["6.5", "9.5", "8"], ["6.4", "9.6", "NA"]),
    ("not in [6.5, 9.5]", ["6.4", "10"], ["6.5", "9.5", "NA"]),
    ("IN [1,2]", ["1.5"], ["3"]),
])
def test_numeric_rules(rule, met, not_met):
    parsed = parse_rule(rule, "numeric", "here")
    assert [parsed.met(answer) for answer in met] == [True] * len(met)
    assert [parsed.met(answer) for answer in not_met] == [False] * len(not_met)
    assert parse_rule(str(parsed), "numeric", "here") == parsed  # written back as read


@given(kind=st.sampled_from([">", ">=", "<", "<=", "="]),
       bound=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda value: round(value, 3)),
       value=st.floats(min_value=-1e6, max_value=1e6, allow_nan=False).map(lambda value: round(value, 3)))
def test_comparison_rules_agree_with_python(kind, bound, value):
    rule = parse_rule(f"{kind} {bound}", "numeric", "here")
    expected = {">": value > bound, ">=": value >= bound, "<": value < bound, "<=": value <= bound,
                "=": value == bound}[kind]
    assert rule.met(repr(value)) is expected


@given(low=st.integers(-1000, 1000), width=st.integers(0, 1000), value=st.integers(-3000, 3000))
def test_interval_rules_are_closed(low, width, value):
    inside = parse_rule(f"in [{low}, {low + width}]", "numeric", "here")
    outside = parse_rule(f"not in [{low},{low + width}]", "numeric", "here")
    assert inside.met(str(value)) is (low <= value <= low + width)
    assert outside.met(str(value)) is not inside.met(str(value))


@given(st.text(max_size=12))
def test_a_rule_is_read_or_refused_in_one_line(text):
    try:
        rule = parse_rule(text, "numeric", "file: criterion x")
    except InputError as error:
        assert str(error).startswith("file: criterion x: rule ") and "\n" not in str(error)
    else:
        assert rule is None or rule.kind in (">", ">=", "<", "<=", "=", "in", "not in")
        assert rule is not None or not text.strip()


@pytest.mark.parametrize("text, message", [
    ("criteria:\n  - {id: a, question: Q, answer: text}\n", "criterion a: answer type 'text' is unknown; write yes/no"),
    ("criteria:\n  - {id: a, question: Q, answer: numeric, rule: '>> 3'}\n", "criterion a: rule '>> 3' cannot be read"),
    ("criteria:\n  - {id: a, question: Q, answer: numeric, rule: 'in [9, 2]'}\n", "interval's ends reversed"),
    ("criteria:\n  - {id: a, question: Q, answer: yes/no, rule: '> 2'}\n", "rule '> 2' for a yes/no answer"),
    ("criteria:\n  - {id: a, question: Q, answer: yes/no}\n  - {id: a, question: R, answer: yes/no}\n",
     "id 'a' is used twice"),
    ("criteria:\n  - {id: a, answer: yes/no}\n", "criterion a has no question"),
    ("criteria:\n  - {id: a, question: 'In {days} days?', answer: yes/no}\n", "question holds {days}"),
    ("criteria:\n  - {id: a, question: 'In the {window}?', answer: yes/no}\n", "gives no window"),
    ("criteria:\n  - {id: a, question: 'Q {?', answer: yes/no}\n", "stray brace"),
    ("criteria:\n  - {id: a, question: Q, answer: yes/no, threshold: 3}\n", "unknown field 'threshold'"),
    ("criteria: []\n", "holds no criterion"),
    ("criteria: {a: 1}\n", "as a list under 'criteria:'"),
    ("criteria: [\n", "is not valid YAML"),
])
def test_bad_criteria_files_are_refused_in_one_line(tmp_path, text, message):
    with pytest.raises(InputError) as refused:
        read_criteria(write(tmp_path, text))
    assert message in str(refused.value) and "\n" not in str(refused.value)


def test_off_type_answers_meet_no_rule():
    no_stroke = criteria.Criterion("no-stroke", "Stroke?", "yes/no", Rule("no"))
    creat = criteria.Criterion("creat", "Creatinine?", "numeric", parse_rule("> 1.3", "numeric", "here"))
    hgb = criteria.Criterion("hgb", "Hemoglobin?", "numeric")
    answers = ["Yes", "no.", "NA", "4", "1.5 mg/dL", "The patient has a history of", "about 1.5"]
    assert [no_stroke.fits(answer) for answer in answers] == [True, True, True, False, False, False, False]
    assert [creat.fits(answer) for answer in answers] == [False, False, True, True, True, False, False]
    # rule `no` is met by anything but Yes: a number or cut-off prose counted as met before
    assert [no_stroke.met(answer) for answer in answers] == [False, True, True, False, False, False, False]
    assert [creat.met(answer) for answer in answers] == [False, False, False, True, True, False, False]
    assert [hgb.met(answer) for answer in answers] == [None] * len(answers)  # no rule: reported, not decided


def test_bad_criteria_paths_and_columns(tmp_path):
    with pytest.raises(InputError, match="criteria file not found"):
        read_criteria(tmp_path / "none.yaml")
    with pytest.raises(InputError, match=r"lacks column\(s\) answer"):
        read_criteria(write(tmp_path, "id,question\na,Q?\n", "c.csv"))
    with pytest.raises(InputError, match="is .yaml, .yml or .csv"):
        read_criteria(write(tmp_path, "id: a\n", "c.json"))


def test_the_shipped_files_are_the_evaluation_tasks_questions():
    assert len(N2C2) == 13 and N2C2_NUMERIC == ("CREATININE", "HBA1C")
    assert len(APIXABAN_BOOLEAN) == 15 and len(APIXABAN_NUMERIC) == 8
    assert preprocess.N2C2_QUESTIONS == {criterion.id: criterion.question for criterion in N2C2}
    assert list(preprocess.APIXABAN_QUESTIONS) == [criterion.id for criterion in APIXABAN]
    assert preprocess.N2C2_QUESTIONS["MI-6MOS"] == \
        "Has the patient had a myocardial infarction in the 6 months before {reference_date}?"
    # the n2c2 metrics threshold the two numeric criteria as the file's rules say
    defaults = inspect.signature(metrics.n2c2_predictions).parameters
    rules = {criterion.id: criterion.rule for criterion in N2C2}
    assert rules["CREATININE"] == Rule(">", defaults["creatinine_above"].default, defaults["creatinine_above"].default)
    assert rules["HBA1C"] == Rule("in", defaults["hba1c_low"].default, defaults["hba1c_high"].default)
    answers = ["1.3", "1.31", "6.5", "9.6", "Yes", "No"]
    labels = ["CREATININE", "CREATININE", "HBA1C", "HBA1C", "ASP-FOR-MI", "ASP-FOR-MI"]
    assert list(metrics.n2c2_predictions(answers, labels)) == \
        [int(rules[label].met(answer)) for answer, label in zip(answers, labels)]
    assert set(N2C2_CRITERIA) == set(rules) and all(not math.isnan(rules[name].low) for name in N2C2_NUMERIC)
    assert criteria.PLACEHOLDERS == ("reference_date", "window")
