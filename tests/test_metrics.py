"""Scoring: answer extraction, the paper's metrics against sklearn, official n2c2 F1, bootstrap, XML export."""

import xml.etree.ElementTree as ElementTree

import numpy as np
import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st
from sklearn.metrics import balanced_accuracy_score, f1_score

from clinical_distil import evaluate, metrics
from clinical_distil.preprocess import APIXABAN_QUESTIONS, N2C2_QUESTIONS
from clinical_distil.files import InputError
from clinical_distil.tasks import APIXABAN_BOOLEAN, APIXABAN_NUMERIC, N2C2_CRITERIA

# realistic replies of small students and what they answer (None: unparseable)
REPLIES = [
    ('```json\n{"question": "On aspirin?", "type": "boolean", "answer": "Yes", "source": "ASA 81"}\n```', "Yes"),
    ('{"question": "On aspirin?", "type": "boolean", "answer": "No"}', "No"),
    ('{"answer": "yes"}', "Yes"),
    ('{"Answer": "NO"}', "No"),
    ('{"answer": true}', "Yes"),
    ('{"answer": 1.40}', "1.4"),
    ('{"answer": "1.40 mg/dL"}', "1.4"),
    ('{"answer": "7.2%"}', "7.2"),
    ('{"answer": "NA"}', "NA"),
    ('{"answer": "N/A"}', "NA"),
    ('{"answer": "not mentioned"}', "NA"),
    ('{"answer": null}', "NA"),
    ('Here is the answer:\n```json\n{"question": "Highest creatinine?", "answer": "2.1",}\n```', "2.1"),
    ("{'question': 'Highest HbA1c?', 'answer': '8.1'}", "8.1"),
    ('```json\n{"question": "Drug use?", "answer": "No", "explanation": "Denies illicit', "No"),
    ('[{"question": "MI?", "answer": "Yes"}]', "Yes"),
    ('"answer": "Yes", "source": "NSTEMI in 2064"', "Yes"),
    ("Answer: No", "No"),
    ("Yes", "Yes"),
    ("No.", "No"),
    ("yes, the patient takes aspirin daily", "Yes"),
    ("1.8", "1.8"),
    ("1.8 mg/dL", "1.8"),
    ("NA", "NA"),
    ("", None),
    ("I cannot determine this from the note.", None),
    ("The patient has a history of diabetes and hypertension.", None),
    ('{"question": "On aspirin?", "type": "boolean"}', None),
]


@pytest.mark.parametrize("reply, expected", REPLIES)
def test_extract_answer(reply, expected):
    assert metrics.extract_answer(reply) == expected


@given(st.text(max_size=200))
def test_extract_answer_never_raises(text):
    answer = metrics.extract_answer(text)
    assert answer is None or isinstance(answer, str)


@given(st.sampled_from(["Yes", "No", "NA", "2.5", "140"]))
def test_extract_answer_reads_what_the_student_was_trained_to_write(answer):
    from clinical_distil.prompts import answer_target

    assert metrics.extract_answer(answer_target({"question": "q", "type": "boolean", "answer": answer})) == answer


def test_same_answer_and_thresholds():
    assert metrics.same_answer("1.4", "1.40") and metrics.same_answer("NA", "not documented")
    assert not metrics.same_answer(None, "No") and not metrics.same_answer("1.4", "1.41")
    answers = pd.Series(["1.3", "1.31", "6.5", "9.5", "9.6", "NA", None, "Yes", None])
    criteria = pd.Series(["CREATININE", "CREATININE", "HBA1C", "HBA1C", "HBA1C", "HBA1C", "ABDOMINAL", "ABDOMINAL",
                          "CREATININE"])
    assert metrics.n2c2_predictions(answers, criteria).tolist() == [0, 1, 1, 1, 0, 0, 0, 1, 0]
    open_ended = metrics.n2c2_predictions(answers, criteria, hba1c_high=float("inf"))
    assert open_ended.tolist() == [0, 1, 1, 1, 1, 0, 0, 1, 0]  # the paper's >= 6.5


@given(st.lists(st.tuples(st.integers(0, 2), st.integers(0, 2)), min_size=1, max_size=60))
def test_per_question_metrics_equal_sklearn(pairs):
    labels, predictions = (np.array(values) for values in zip(*pairs))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when a predicted class is absent from the labels
        expected = balanced_accuracy_score(labels, predictions)
    assert metrics.balanced_accuracy(labels, predictions) == pytest.approx(expected)
    assert metrics.micro_f1(labels, predictions) == pytest.approx(f1_score(labels, predictions, average="micro"))


def test_hand_computed_metrics():
    labels, predictions = np.array([1, 1, 1, 0]), np.array([1, 0, 1, 1])
    assert metrics.balanced_accuracy(labels, predictions) == pytest.approx((2 / 3 + 0) / 2)
    assert metrics.micro_f1(labels, predictions) == pytest.approx(0.5)


def small_n2c2():
    # criterion A: 3 met (2 found), 1 not met (called met); criterion B: 2 not met (both right), 2 met (1 found)
    return pd.DataFrame({"question_label": ["A"] * 4 + ["B"] * 4,
                         "target": [1, 1, 1, 0, 0, 0, 1, 1], "prediction": [1, 1, 0, 1, 0, 0, 1, 0]})


def test_n2c2_official_scores_on_known_counts():
    scores = metrics.n2c2_official(small_n2c2())
    # pooled met: tp 3, fp 1, fn 2 -> P 3/4, R 3/5; not met: tp 2, fp 2, fn 1 -> P 1/2, R 2/3
    met, not_met = 2 * 0.75 * 0.6 / 1.35, 2 * 0.5 * (2 / 3) / (0.5 + 2 / 3)
    assert scores["micro_f1_met"] == pytest.approx(met) and scores["micro_f1_not_met"] == pytest.approx(not_met)
    assert scores["micro_f1"] == pytest.approx((met + not_met) / 2)
    # per criterion: A met F1 = 2*(2/3)*(2/3)/(4/3) = 2/3, A not met F1 = 0 (tp 0); B met P 1 R 1/2 -> 2/3,
    # B not met P 2/3 R 1 -> 0.8
    assert scores["macro_f1_met"] == pytest.approx((2 / 3 + 2 / 3) / 2)
    assert scores["macro_f1_not_met"] == pytest.approx((0 + 0.8) / 2)
    assert scores["macro_f1"] == pytest.approx((2 / 3 + 0.4) / 2)
    table = scores["per_criterion"].set_index("question_label")
    assert table.loc["A", ["met_tp", "met_fp", "met_fn", "not_met_tp"]].tolist() == [2, 1, 1, 0]


def test_bootstrap_is_seeded_and_brackets_the_mean():
    frame = pd.DataFrame({"q": np.repeat(["a", "b", "c", "d"], 25), "target": np.tile([0, 1], 50),
                          "prediction": np.random.default_rng(3).integers(0, 2, 100)})
    first = metrics.summarize(frame, "q", resamples=300, seed=7)
    again = metrics.summarize(frame, "q", resamples=300, seed=7)
    other = metrics.summarize(frame, "q", resamples=300, seed=8)
    assert first == again and first["micro_f1_ci_examples"] != other["micro_f1_ci_examples"]
    for key in ("balanced_accuracy", "micro_f1"):
        for interval in (first[f"{key}_ci_questions"], first[f"{key}_ci_examples"]):
            assert interval[0] <= first[key] <= interval[1]


def test_n2c2_xml_export_round_trips(tmp_path):
    from clinical_distil.n2c2 import read_patient_file

    rows = pd.DataFrame({"patient": ["101"] * 13, "question_label": list(N2C2_CRITERIA),
                         "prediction": [1, 0] * 6 + [1]})
    [path] = evaluate.write_n2c2_xml(rows, tmp_path)
    assert path.name == "101.xml"
    parsed = read_patient_file(path)
    assert parsed.tags == {criterion: bool(value) for criterion, value in zip(N2C2_CRITERIA, rows["prediction"])}
    assert ElementTree.parse(path).getroot().find("TAGS")[0].get("met") == "met"
    with pytest.raises(InputError, match="no prediction for MI-6MOS"):
        evaluate.write_n2c2_xml(rows.iloc[:12], tmp_path / "partial")


def test_question_vocabularies_cover_every_criterion():
    assert list(N2C2_QUESTIONS) == list(N2C2_CRITERIA)
    assert set(APIXABAN_QUESTIONS) == set(APIXABAN_BOOLEAN) | set(APIXABAN_NUMERIC)
    assert len(APIXABAN_BOOLEAN) == 15 and len(APIXABAN_NUMERIC) == 8


# --- scoring frames with parsed and unparseable replies mixed, whatever the dtypes ----------------

DTYPES = [pytest.param(None, id="as-built"), pytest.param(object, id="object"), pytest.param("str", id="str"),
          pytest.param("string", id="string")]


def _typed(frame: pd.DataFrame, dtype) -> pd.DataFrame:
    return frame if dtype is None else frame.astype({column: dtype for column in frame.columns
                                                    if column not in ("label",) or dtype != "string"})


@pytest.mark.parametrize("dtype", DTYPES)
def test_annotated_unparseable_yes_no_counts_as_no(dtype):
    frame = _typed(pd.DataFrame({
        "output": ['{"answer": "Yes"}', "blah", '{"answer": "2.1"}', "unsure", None, '{"answer": "210,000"}',
                   "{broken", '{"answer": "NA"}'],
        "finish_reason": ["stop", "stop", "stop", "stop", None, "stop", "length", "stop"],
        "label": ["Yes", "No", "2.1", "3", "No", "210000", "NA", "NA"],
        "question_type": ["yes_no", "yes_no", "numeric", "numeric", "yes_no", "numeric", "na-bool", "na-numeric"]}),
        dtype)
    scored = metrics.score_outputs(frame, "annotated-synthetic")
    assert scored["parsed"].tolist() == [True, False, True, False, False, True, False, True]
    assert scored["prediction"].tolist() == ["Yes", "No", "2.1", "unparseable", "No", "210000", "No", "NA"]
    assert scored["correct"].tolist() == [True, True, True, False, True, True, False, True]
    table = metrics.per_question(scored, "question_type").set_index("question_type")
    assert table.loc["yes_no", "balanced_accuracy"] == 1.0 and table.loc["yes_no", "micro_f1"] == 1.0
    # numeric: labels 2.1, 3, 210000 each a class, 2 of 3 found
    assert table.loc["numeric", "balanced_accuracy"] == pytest.approx(2 / 3)
    assert table.loc["numeric", "micro_f1"] == pytest.approx(2 / 3)
    assert table.loc["na-bool", "micro_f1"] == 0.0 and table.loc["na-numeric", "micro_f1"] == 1.0


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("labels", [[1, 0, 1, 0, 1, 0], ["1", "0", "1", "0", "1", "0"], ["met", "not met"] * 3,
                                    [1.0, 0.0, 1.0, 0.0, 1.0, 0.0]])
def test_i2b2_unparseable_counts_as_not_met(dtype, labels):
    frame = pd.DataFrame({
        "output": ['{"answer": "Yes"}', "garbage", '{"answer": "1.40 mg/dL"}', "???", '{"answer": "7.1"}', ""],
        "label": labels,
        "question_label": ["ABDOMINAL", "ABDOMINAL", "CREATININE", "CREATININE", "HBA1C", "HBA1C"]})
    scored = metrics.score_outputs(_typed(frame, dtype), "i2b2")
    assert scored["target"].tolist() == [1, 0, 1, 0, 1, 0]
    assert scored["prediction"].tolist() == [1, 0, 1, 0, 1, 0]
    official = metrics.n2c2_official(scored)
    assert official["micro_f1"] == 1.0 and official["macro_f1"] == 1.0
    assert metrics.per_question(scored, "question_label")["balanced_accuracy"].tolist() == [1.0, 1.0, 1.0]


@pytest.mark.parametrize("dtype", DTYPES)
def test_apixaban_unparseable_boolean_is_no_and_numeric_is_unparseable(dtype):
    frame = pd.DataFrame({
        "output": ['{"answer": "Yes"}', "nothing", '{"answer": "98,000"}', "nothing", '{"answer": "1.9."}',
                   '{"answer": "No"}'],
        "label": ["Yes", "No", "98000", "2.4", "1.90", "Yes"],
        "criterion": ["afib", "afib", "lowest_platelets", "highest_creatinine", "highest_creatinine", "t2d"],
        "question_type": ["boolean", "boolean", "numeric", "numeric", "numeric", "boolean"]})
    scored = metrics.score_outputs(_typed(frame, dtype), "apixaban")
    assert scored["target"].tolist() == ["1", "0", "98000", "2.4", "1.9", "1"]
    assert scored["prediction"].tolist() == ["1", "0", "98000", "unparseable", "1.9", "0"]
    table = metrics.per_question(scored, "criterion").set_index("criterion")
    assert table["micro_f1"].to_dict() == {"afib": 1.0, "highest_creatinine": 0.5, "lowest_platelets": 1.0, "t2d": 0.0}


def test_scores_read_back_from_chunk_files_are_the_same(tmp_path):
    """The CSV round trip (empty outputs, "NA" answers and labels) changes no decision."""
    from clinical_distil.files import write_csv

    frame = pd.DataFrame({"id": range(4), "output": ['{"answer": "NA"}', "", "blah", '{"answer": "No"}'],
                          "finish_reason": ["stop"] * 4, "label": ["NA", "No", "No", "Yes"],
                          "question_type": ["na-bool", "yes_no", "yes_no", "yes_no"]})
    write_csv(frame, tmp_path / "prompts_0_4_chunk_0.csv")
    read = evaluate.read_model_outputs(tmp_path, "prompts")
    direct, round_trip = (metrics.score_outputs(table, "annotated-synthetic") for table in (frame, read))
    assert round_trip["prediction"].tolist() == direct["prediction"].tolist() == ["NA", "No", "No", "No"]
    assert round_trip["target"].tolist() == ["NA", "No", "No", "Yes"]


@pytest.mark.parametrize("prediction, label, same", [
    ("210,000", "210000", True), ("1.40 mg/dL", 1.4, True), ("7.5%.", "7.5", True), ("2.1", "2.10", True),
    ("1e3", "1,000", True), ("-2", "2", False), ("120/80", "120", False), (None, "NA", False), (float("nan"), "No", False),
    ("Yes.", "yes", True), ("n/a", "NA", True),
])
def test_same_answer_reads_numbers_as_numbers(prediction, label, same):
    assert metrics.same_answer(prediction, label) is same


def test_patient_ids_are_read_as_written(tmp_path):
    """n2c2 patient "0020" stays "0020" through eval-inference's files, so its exported file meets the gold."""
    from clinical_distil.eval_inference import load_eval_rows

    rows = pd.DataFrame({"id": ["0020_ABDOMINAL", "0105_ABDOMINAL"], "patient": ["0020", "0105"],
                         "question_label": ["ABDOMINAL"] * 2, "label": ["met", "not met"], "prompt": ["p", "p"]})
    rows.to_csv(tmp_path / "test.csv", index=False)
    assert load_eval_rows(tmp_path / "test.csv", "i2b2")["patient"].tolist() == ["0020", "0105"]
    rows.assign(output=['{"answer": "Yes"}'] * 2).to_csv(tmp_path / "test_0_2_chunk_0.csv", index=False)
    assert evaluate.read_model_outputs(tmp_path, "test")["patient"].tolist() == ["0020", "0105"]


# --- empty answers and reasoning blocks (issue 35, items 2 and 3) ---------------------------------

@pytest.mark.parametrize("reply, finish_reason", [
    ('{"answer": "', "stop"), ('{"answer": "', None), ('{"answer": "', "length"), ('{"answer": "', "abort"),
    ('{"question": "Is the LDL documented?", "type": "boolean", "answer": "', "stop"),
    ('```json\n{"question": "Is the LDL documented?", "answer": "', None),
    ('{"answer": ""}', "stop"), ('{"answer": "   "}', "stop"), ('{"answer": "\u00a0\u3000"}', "stop"),
    ('{"answer": "\ufeff\u00a0\u200b "}', "length"), ('[{"answer": ""}]', "stop"), ('"answer": "', "stop"),
    ('"answer": " "', "stop"), ("Answer:  ", None),
    ('{"answer": "N', "length"), ('{"question": "Smoker?", "answer": "Ye', "length"),  # the limit cut the word
    ("<think>The answer is NA.</think>\n", "stop"), ('<think>{"answer": "NA"}', "length"),
])
def test_an_empty_or_cut_answer_is_unparseable(reply, finish_reason):
    assert metrics.extract_answer(reply, finish_reason) is None


@pytest.mark.parametrize("reply, expected", [
    ('<think>\nDraft: {"answer": "NA"}. Answer: Yes? No.\n</think>\n{"answer": "No"}', "No"),
    ('  <THINK>answer: Yes</THINK>\n```json\n{"answer": "2.1"}\n```', "2.1"),
    ('<thinking>\nmaybe 2.1\n</thinking>\n1.4', "1.4"),
    ('<reasoning>Yes, the note says so.</reasoning>\nNo', "No"),
    ('The template opened the block. {"answer": "Yes"}\n</think>\n{"answer": "NA"}', "NA"),
])
def test_reasoning_blocks_are_skipped_before_the_answer(reply, expected):
    assert metrics.extract_answer(reply) == expected


@given(draft=st.sampled_from(["Yes", "No", "NA", "2.5"]), answer=st.sampled_from(["Yes", "No", "NA", "140"]),
       tag=st.sampled_from(["think", "THINK", "thinking", "reasoning", "Thought"]),
       as_json=st.booleans(), lead=st.sampled_from(["", " ", "\n\n", "\u00a0"]))
def test_the_answer_after_a_reasoning_block_is_read_never_the_draft(draft, answer, tag, as_json, lead):
    thought = f'{{"answer": "{draft}"}}' if as_json else f"Answer: {draft}"
    reply = f'{lead}<{tag}>\n{thought}\n</{tag}>\n{{"answer": "{answer}"}}'
    assert metrics.extract_answer(reply) == answer
    assert metrics.extract_answer(f"{lead}<{tag}>\n{thought}\n", "length") is None


def test_an_empty_reply_never_scores_as_a_correct_na(tmp_path):
    """Answer files of a student whose replies were cut inside the answer string (or empty, or all reasoning):
    on the "not in the note" questions none is a correct NA, and each is counted as a parse failure."""
    from clinical_distil.files import write_csv

    outputs = tmp_path / "outputs" / "annotated-synthetic"
    replies = ['{"answer": "', '{"question": "Any LDL?", "answer": "', '{"answer": ""}', "<think>NA, surely",
               '<think>{"answer": "Yes"}</think>{"answer": "NA"}', '{"answer": "NA"}']
    write_csv(pd.DataFrame({"id": range(6), "output": replies, "finish_reason": ["stop", "", "stop", "length", "stop",
                                                                                "stop"],
                            "label": ["NA"] * 6,
                            "question_type": ["na-bool", "na-numeric", "na-bool", "na-bool", "na-numeric",
                                              "na-numeric"]}), outputs / "student" / "prompts_0_6_chunk_0.csv")
    evaluation = evaluate.evaluate_models(outputs, "prompts", "annotated-synthetic", resamples=10)
    scored, summary = evaluation["scored"]["student"], evaluation["summaries"]["student"]
    assert scored["answer"].tolist() == [None, None, None, None, "NA", "NA"]
    assert scored["prediction"].tolist() == ["No", "unparseable", "No", "No", "NA", "NA"]
    assert scored["correct"].tolist() == [False, False, False, False, True, True]
    assert summary["parse_failures"] == 4 and summary["accuracy"] == pytest.approx(2 / 6)


def test_an_empty_reply_is_unparseable_in_the_n2c2_scores(tmp_path):
    from clinical_distil.files import write_csv

    outputs = tmp_path / "outputs" / "i2b2"
    write_csv(pd.DataFrame({"id": range(4), "patient": ["100"] * 4,
                            "output": ['{"answer": "', '{"answer": ""}', '<think>{"answer": "Yes"}</think>No',
                                       '{"answer": "1.1"}'],
                            "finish_reason": ["stop", None, "stop", "stop"], "label": ["not met"] * 4,
                            "question_label": ["ABDOMINAL", "ADVANCED-CAD", "ALCOHOL-ABUSE", "CREATININE"]}),
              outputs / "student" / "test_0_4_chunk_0.csv")
    evaluation = evaluate.evaluate_models(outputs, "test", "i2b2", resamples=10)
    scored, summary = evaluation["scored"]["student"], evaluation["summaries"]["student"]
    assert scored["parsed"].tolist() == [False, False, True, True]
    assert scored["answer"].tolist() == [None, None, "No", "1.1"]
    assert scored["prediction"].tolist() == [0, 0, 0, 0] and summary["parse_failures"] == 2
