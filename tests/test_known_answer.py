"""The known-answer benchmark's parts: the simulated corpus, the truth checker, the reference teacher,
teacher precision and the experiment's collection of results (experiments/known_answer.py)."""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import json
import random
import re
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import run_script
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_distil import layout
from clinical_distil.files import InputError, write_csv
from clinical_distil.vllm_engine import MEMORY_SHARE_VARIABLE, memory_share
from simulation import reference_teacher
from simulation.corpus import CORPUS_FILE, read_facts, write_corpus
from simulation.fact_sheets import Lab, make_sheets
from simulation.notes import DateStyle
from simulation.reference_teacher import (
    AGGREGATES,
    CONDITION_NAMES,
    LAB_NAMES,
    LAB_TEMPLATES,
    not_found_numeric_items,
    numeric_items,
    reference_reply,
    yes_no_items,
)
from simulation.teacher_check import check_items, concept_kind, teacher_precision, yes_share_by_kind
from simulation.truth import Expected, answer_matches, expected_answer, vitals_of
from simulation.varied import render_varied_discharge_summary

sys.path.insert(0, str(layout.REPO_ROOT / "experiments"))
import known_answer  # noqa: E402  (experiments/ is scripts, not a package)
import known_answer_arms  # noqa: E402
import known_answer_results  # noqa: E402
import known_answer_stats  # noqa: E402


@pytest.fixture(scope="module")
def corpus(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("corpus")
    write_corpus(root, patients=40, seed=3, annotated_notes=4, n2c2_train=2, n2c2_test=3, apixaban_notes=2)
    return root


def sheet_with(**fields):
    """One simulated patient with the given facts set exactly."""
    sheet = make_sheets(random.Random(0), 1, 1, 10, 2100)[0]
    return dataclasses.replace(sheet, **fields)


# --- corpus -------------------------------------------------------------------------------------------

def digest(root: Path) -> dict[str, str]:
    found = {}
    for path in sorted(root.rglob("*")):
        if path.is_file():
            data = gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_bytes()
            found[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return found


def test_corpus_is_deterministic_for_its_seed(corpus, tmp_path):
    write_corpus(tmp_path / "again", patients=40, seed=3, annotated_notes=4, n2c2_train=2, n2c2_test=3,
                 apixaban_notes=2)
    write_corpus(tmp_path / "other", patients=40, seed=4, annotated_notes=4, n2c2_train=2, n2c2_test=3,
                 apixaban_notes=2)
    assert digest(tmp_path / "again") == digest(corpus)
    assert digest(tmp_path / "other")["mimic/NOTEEVENTS.csv.gz"] != digest(corpus)["mimic/NOTEEVENTS.csv.gz"]


def test_corpus_files_and_held_out_patients(corpus):
    summary = json.loads((corpus / CORPUS_FILE).read_text())
    notes = pd.read_csv(layout.corpus_notes(corpus))
    discharge = notes[notes["CATEGORY"] == "Discharge summary"]
    assert summary["discharge_summaries"] == len(discharge) == 40 and summary["notes"] == len(notes)
    assert set(notes["CATEGORY"]) > {"Discharge summary"}  # nursing, radiology and ECG notes around them
    assert not set(notes["SUBJECT_ID"]) & set(summary["held_out_subject_ids"])
    facts = read_facts(layout.facts_file(layout.corpus_notes(corpus)))
    assert set(facts) == set(discharge["HADM_ID"])
    assert sorted(path.name for path in (corpus / "raw" / "n2c2-2018-track1" / "test").iterdir()) == \
        ["102.xml", "103.xml", "104.xml"]
    annotated = pd.concat([pd.read_csv(path, keep_default_na=False)
                           for path in sorted((corpus / "raw" / "annotated-synthetic").glob("*.csv"))])
    assert len(annotated) == summary["annotated_questions"] == 20
    assert set(annotated["type"]) == {"yes", "numeric", "na-numeric", "na-bool"}
    apixaban = pd.concat(pd.read_csv(path) for path in sorted((corpus / "raw" / "apixaban").glob("*.csv")))
    assert len(apixaban) == summary["apixaban_rows"] == 2 * 23


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 10**6), typo_rate=st.sampled_from([0.0, 0.15, 0.6]))
def test_every_mention_stands_in_its_note(seed, typo_rate):
    rng = random.Random(seed)
    sheet = make_sheets(rng, 1, 1, 10, 2100)[0]
    note = render_varied_discharge_summary(sheet, DateStyle("mimic-iii"), rng, typo_rate=typo_rate)
    assert note.mentions and all(mention.text in note.text for mention in note.mentions)
    for mention in note.find("lab"):
        assert mention.value in sheet.lab_values(mention.key.split(":")[1])


# --- truth --------------------------------------------------------------------------------------------

LABS = [Lab("2154-07-27", "creatinine", 1.5), Lab("2154-07-28", "creatinine", 2.5),
        Lab("2154-07-29", "creatinine", 1.1), Lab("2154-07-27", "hba1c", 7.4)]


@pytest.mark.parametrize("question, answer, concept", [
    ("Does the patient have atrial fibrillation?", "Yes", "condition:afib"),
    ("Is there a history of type 2 diabetes?", "No", "condition:t2d"),
    ("Is the patient on aspirin?", "No", "drug:aspirin"),
    ("Is the patient taking warfarin at discharge?", "Yes", "drug:warfarin"),
    ("What was the highest creatinine?", 2.5, "lab:creatinine"),
    ("What was the lowest creatinine value?", 1.1, "lab:creatinine"),
    ("What was the patient's hemoglobin A1c?", 7.4, "lab:hba1c"),
    ("Was any creatinine value above 2?", "Yes", "lab:creatinine > 2"),
    ("Has the patient had a myocardial infarction in the past 6 months?", "Yes", "event:mi 180d"),
    ("Has the patient had a myocardial infarction in the past 1 month?", "No", "event:mi 30d"),
    ("What was the patient's LDL cholesterol?", "NA", "absent number"),
    ("Has the patient received the influenza vaccine?", "NA", "not recorded"),
    ("How many alcoholic drinks does the patient have per week?", 10.0, "alcohol per week"),
])
def test_expected_answers_from_the_fact_sheet(question, answer, concept):
    sheet = sheet_with(labs=LABS, mi_days_ago=90, alcohol_drinks_per_week=10,
                       medications=["warfarin 5 mg PO daily"],
                       conditions={**sheet_with().conditions, "afib": True, "t2d": False})
    assert expected_answer(question, sheet, {}) == Expected(answer, concept)


@pytest.mark.parametrize("question", ["Does the patient's father have diabetes?",
                                      "Does the patient have atrial fibrillation and diabetes?",
                                      "What is the weather like?"])
def test_questions_that_cannot_be_read_are_unverifiable(question):
    assert expected_answer(question, sheet_with(), {}) is None


@pytest.mark.parametrize("answer, expected, matches", [
    ("1.50", 1.5, True), ("1.5 mg/dL", 1.5, True), ("1.6", 1.5, False), ("yes", "Yes", True), ("No", "Yes", False),
    ("N/A", "NA", True), ("NA", 1.5, False), ("210,000", 210000.0, True),
])
def test_answer_matches(answer, expected, matches):
    assert answer_matches(answer, expected) is matches


# --- the reference teacher and teacher precision -------------------------------------------------------

@pytest.fixture(scope="module")
def facts(corpus) -> dict:
    facts = read_facts(layout.facts_file(layout.corpus_notes(corpus)))
    notes = pd.read_csv(layout.corpus_notes(corpus))
    texts = dict(zip(notes.loc[notes["CATEGORY"] == "Discharge summary", "HADM_ID"],
                     notes.loc[notes["CATEGORY"] == "Discharge summary", "TEXT"]))
    return {hadm_id: {**record, "text": texts[hadm_id]} for hadm_id, record in facts.items()}


def items_of(facts: dict, question_type: str, count: int = 5) -> pd.DataFrame:
    """The reference teacher's items for every note, with stage B's quote check (plain containment here)."""
    rows = []
    for hadm_id, record in facts.items():
        for item in reference_reply(record, question_type, count, count, seed=0):
            rows.append({"hadm_id": hadm_id, "question_type": question_type, "question": item["question"],
                         "answer": item["answer"], "source_in_note": item["source"] in record["text"]})
    return pd.DataFrame(rows)


def test_reference_teacher_is_right_by_construction(facts):
    items = pd.concat([items_of(facts, kind) for kind in ("yes_no", "numeric", "na-numeric", "na-bool")])
    table = teacher_precision(check_items(items, facts)).set_index("question_type")
    assert table.loc["all", "items"] == len(items)
    assert table["verifiable"].tolist() == [1.0] * 5 and table["precision"].tolist() == [1.0] * 5
    assert table.loc["yes_no", "quote_in_note"] == table.loc["numeric", "quote_in_note"] == 1.0
    yes_no = items_of(facts, "yes_no", count=2)
    assert (yes_no.groupby("hadm_id")["answer"].value_counts().unstack()[["Yes", "No"]] == 2).all().all()


@pytest.mark.parametrize("precision", [0.8, 0.5])
def test_reference_at_p_is_right_with_chance_p(facts, precision):
    """reference@P: each answer is made wrong with chance 1 - P, only in ways the truth check verifies, so the
    measured precision is P within binomial error (three standard errors) for every question type together and
    every item stays verifiable; the questions are reference's own, and P = 1 writes reference's replies."""
    rows = []
    for hadm_id, record in facts.items():
        for kind in ("yes_no", "numeric", "na-numeric", "na-bool"):
            exact = reference_reply(record, kind, 5, 5, seed=0)
            noisy = reference_reply(record, kind, 5, 5, seed=0, precision=precision)
            assert [item["question"] for item in noisy] == [item["question"] for item in exact]
            assert reference_reply(record, kind, 5, 5, seed=0, precision=1.0) == exact
            rows += [{"hadm_id": hadm_id, "question_type": kind, "question": item["question"],
                      "answer": item["answer"], "source_in_note": True} for item in noisy]
    checked = check_items(pd.DataFrame(rows), facts)
    assert checked["verifiable"].all()
    measured, items = checked["answer_right"].mean(), len(checked)
    assert abs(measured - precision) <= 3 * (precision * (1 - precision) / items) ** 0.5, (measured, items)
    assert set(checked.loc[~checked["answer_right"], "question_type"]) == {"yes_no", "numeric", "na-numeric",
                                                                        "na-bool"}


@pytest.mark.parametrize("option, works", [("0.8", True), ("1", True), ("0", False), ("1.2", False),
                                           ("high", False)])
def test_reference_at_p_is_named_by_its_precision(corpus, option, works):
    from clinical_distil.backends import is_plugged, plugged_engine

    assert is_plugged(f"reference@{option}") and not is_plugged("models/reference")
    factory = plugged_engine(f"reference@{option}")
    notes = pd.read_csv(layout.corpus_notes(corpus))
    notes = notes[notes["CATEGORY"] == "Discharge summary"].rename(columns={"HADM_ID": "hadm_id"}).head(2)
    if not works:
        with pytest.raises(InputError, match=rf"^--model_id reference@{option}: give the precision of its answers"):
            factory(layout.corpus_notes(corpus), notes, 0)
        return
    teacher = factory(layout.corpus_notes(corpus), notes, 0)
    assert teacher.precision == float(option)
    assert ("made wrong with chance 0.2 (reference@0.8)" in teacher.manifest["teacher"]) == (option == "0.8")


DRUGS = ("aspirin", "apixaban", "warfarin", "metformin", "furosemide", "metoprolol", "atorvastatin")


def test_reference_teacher_asks_about_what_the_lists_leave_out(facts):
    """A condition or drug the note does not name gets a No that quotes the list (past medical history,
    discharge medications): a student taught only denials would answer Yes to every diagnosis it is asked."""
    pool, unlisted, drugs_left_out = [], 0, 0
    for record in facts.values():
        keys = {mention.key for mention in record["mentions"]}
        items = yes_no_items(record["sheet"], record["mentions"], random.Random(0))
        pool += items
        for item in items:
            named = [name for name in CONDITION_NAMES if any(word in item.question for word in CONDITION_NAMES[name])]
            if item.explanation.startswith("The past medical history lists"):
                unlisted += 1
                assert item.answer == "No" and item.section == "Past Medical History" and item.source in record["text"]
                assert not any(f"cond:{name}" in keys or f"neg:{name}" in keys for name in named)
            if item.explanation == "The discharge medications do not list it.":
                [drug] = [drug for drug in DRUGS if re.search(rf"\b{drug}\b", item.question)]
                assert item.answer == "No" and f"med:{drug}" not in keys and item.source in record["text"]
                drugs_left_out += 1
    no_answers = [item for item in pool if item.answer == "No"]
    denials = sum(item.explanation == "The note explicitly denies it." for item in pool)
    assert unlisted > 0 and drugs_left_out > 0 and len(no_answers) > denials


def test_reference_teacher_answers_every_kind_of_yes_no_question_both_ways(facts):
    """No kind of yes/no question (condition, drug, event, time window, lab threshold, social history) is
    answered nearly always one way: the student would learn the answer from the kind of question."""
    items = items_of(facts, "yes_no")
    balance = yes_share_by_kind(check_items(items, facts)).set_index("kind")
    assert set(balance.index) == {"condition", "drug", "event", "event in a time window", "lab threshold",
                                  "social history and capacity"}
    assert balance["yes_share"].between(0.2, 0.8).all(), balance


def test_concept_kinds_and_the_yes_share_of_a_hand_made_mix(facts):
    assert [concept_kind(concept) for concept in ("condition:afib", "event:mi", "event:mi 180d", "drug:aspirin",
                                                  "lab:creatinine > 1.5", "english", "current smoker")] == [
        "condition", "event", "event in a time window", "drug", "lab threshold", "social history and capacity",
        "social history and capacity"]
    hadm_id, record = next(iter(facts.items()))
    takes_aspirin = "Yes" if any(med.lower().startswith("aspirin") for med in record["sheet"].medications) else "No"
    items = pd.DataFrame([
        {"hadm_id": hadm_id, "question_type": "yes_no", "question": "Is the patient taking aspirin at discharge?",
         "answer": "Yes", "source_in_note": True},
        {"hadm_id": hadm_id, "question_type": "yes_no", "question": "Was the patient discharged on aspirin?",
         "answer": "No", "source_in_note": True},
        {"hadm_id": hadm_id, "question_type": "yes_no", "question": "Is aspirin among the discharge medications?",
         "answer": takes_aspirin, "source_in_note": True},
        {"hadm_id": hadm_id, "question_type": "yes_no", "question": "Does the patient's mother have diabetes?",
         "answer": "Yes", "source_in_note": False},  # unverifiable: left out
        {"hadm_id": hadm_id, "question_type": "na-bool", "question": "Is the patient a veteran?", "answer": "NA",
         "source_in_note": False},  # not a yes/no item
    ])
    table = yes_share_by_kind(check_items(items, facts))
    assert table.to_dict("records") == [{"kind": "drug", "items": 3,
                                         "yes_share": round((1 + (takes_aspirin == "Yes")) / 3, 3)}]


def test_lab_questions_are_worded_alike_whether_or_not_the_note_has_the_lab(facts):
    """The wording of a lab question must not tell present from absent (a student would learn NA from it)."""
    names = "|".join(sorted(map(re.escape, LAB_NAMES.values()), key=len, reverse=True))
    aggregates = "|".join(words for _, words in AGGREGATES)
    shape = lambda question: re.sub(rf"\b({aggregates}) ", "", re.sub(names, "X", question))  # noqa: E731
    present, absent, rng = set(), set(), random.Random(1)
    for record in facts.values():
        present |= {shape(item.question) for item in numeric_items(record["sheet"], record["mentions"], rng)
                    if re.search(names, item.question)}
        absent |= {shape(item.question) for item in not_found_numeric_items(record["sheet"], record["mentions"], rng)
                   if re.search(names, item.question)}
    assert present == absent == {" ".join(template.format(which="", name="X").split()) for template in LAB_TEMPLATES}


def test_reference_reply_is_deterministic_and_writes_complete_items(facts):
    record = next(iter(facts.values()))
    first = reference_reply(record, "numeric", 3, 3, seed=5)
    assert first == reference_reply(record, "numeric", 3, 3, seed=5) and len(first) == 3
    assert all(set(item) >= {"question", "answer", "source", "section", "explanation", "difficulty"} for item in first)
    with pytest.raises(ValueError, match="unknown question type"):
        reference_reply(record, "essay", 3, 3, seed=5)


def test_teacher_precision_counts_wrong_and_unverifiable_items(facts):
    hadm_id, record = next(iter(facts.items()))
    sheet = record["sheet"]
    has_afib = "Yes" if sheet.conditions["afib"] else "No"
    wrong = "No" if has_afib == "Yes" else "Yes"
    items = pd.DataFrame([
        {"hadm_id": hadm_id, "question_type": "yes_no", "question": "Does the patient have atrial fibrillation?",
         "answer": has_afib, "source_in_note": True},
        {"hadm_id": hadm_id, "question_type": "yes_no", "question": "Is there a history of atrial fibrillation?",
         "answer": wrong, "source_in_note": False},
        {"hadm_id": hadm_id, "question_type": "yes_no", "question": "Does the patient's mother have diabetes?",
         "answer": "No", "source_in_note": False},
        {"hadm_id": hadm_id, "question_type": "na-numeric", "question": "What was the patient's LDL cholesterol?",
         "answer": "NA", "source_in_note": False},
        {"hadm_id": 1, "question_type": "yes_no", "question": "Is the patient on aspirin?", "answer": "No",
         "source_in_note": True},  # not a simulated admission: left out
    ])
    checked = check_items(items, facts)
    assert checked["answer_right"].tolist() == [True, False, False, True]
    assert checked["verifiable"].tolist() == [True, True, False, True]
    table = teacher_precision(checked).set_index("question_type")
    assert table.loc["yes_no"].tolist() == [3, 0.667, 0.5, 0.333]
    assert table.loc["all"].tolist() == [4, 0.75, 0.667, 0.333]


# --- experiments/known_answer.py --------------------------------------------------------------------

def test_arms_are_parsed_or_refused_in_one_line():
    Arm = known_answer_arms.Arm
    assert known_answer_arms.parse_arms("reference:25, self:10,self:10:filtered") == [
        Arm("reference", 25), Arm("self", 10), Arm("self", 10, True)]
    assert [arm.label for arm in known_answer_arms.parse_arms("self:10:filtered,reference:3")] == [
        "self:10:filtered", "reference:3"]
    assert known_answer_arms.parse_arms("reference@0.8:150,text-only:150") == [Arm("reference@0.8", 150),
                                                                            Arm("text-only", 150)]
    for bad in ("reference", "teacher:5", "self:0", "reference:x", "self:10:sifted", "self:10:filtered:2",
                "reference@0:5", "reference@1.5:5", "reference@x:5", "self@0.8:5", "self:10:filtered:permuted",
                "self:10:seed1:seed2", "self:10:seedx", "self:10:filtered:filtered"):
        with pytest.raises(InputError, match="write TEACHER:NOTES, then :filtered or :permuted and :seedN"):
            known_answer_arms.parse_arms(bad)
    with pytest.raises(InputError, match="names an arm twice"):
        known_answer_arms.parse_arms("self:10,self:10")
    # seeds: each arm once per seed unless it names its own; the label and folder say the seed
    assert [arm.label for arm in known_answer_arms.parse_arms("reference:4,text-only:4:seed9,reference:4:permuted",
                                                         "1,2")] == [
        "reference:4:seed1", "reference:4:seed2", "text-only:4:seed9", "reference:4:permuted:seed1",
        "reference:4:permuted:seed2"]
    assert known_answer_arms.arm_root(Path("c"), Arm("reference@0.8", 4, permuted=True, seed=3)) == \
        Path("c/arms/reference@0.8-4-permuted-seed3")
    with pytest.raises(InputError, match="--seeds must be whole numbers separated by commas"):
        known_answer_arms.parse_arms("reference:4", "1,x")
    with pytest.raises(InputError, match="names an arm twice"):
        known_answer_arms.parse_arms("reference:4:seed1,reference:4", "1")


def test_the_grid_is_the_analysis_plans():
    """{reference, reference@0.8, text-only} x 3 seeds at the largest size, the reference teacher at the two other
    sizes, the format-only fine-tune at the largest: 18 arms, the first the reference at the largest size."""
    arms = known_answer_arms.grid_arms(known_answer_arms.parse_sizes("100,1000,300"))
    assert [arm.label for arm in arms] == [
        "reference:1000:seed1", "reference:1000:seed2", "reference:1000:seed3",
        "reference@0.8:1000:seed1", "reference@0.8:1000:seed2", "reference@0.8:1000:seed3",
        "text-only:1000:seed1", "text-only:1000:seed2", "text-only:1000:seed3",
        "reference:300:seed1", "reference:300:seed2", "reference:300:seed3",
        "reference:100:seed1", "reference:100:seed2", "reference:100:seed3",
        "reference:1000:permuted:seed1", "reference:1000:permuted:seed2", "reference:1000:permuted:seed3"]
    for bad in ("100,300", "100,300,x", "0,1,2"):
        with pytest.raises(InputError, match="--grid takes the three teacher note counts"):
            known_answer_arms.parse_sizes(bad)


def test_arm_command_runs_the_driver_on_the_arm_with_the_engine_asked_for(corpus):
    Arm = known_answer_arms.Arm
    root = known_answer_arms.arm_root(corpus, Arm("self", 7))
    argv = known_answer_arms.arm_command(Path("known.yaml"), corpus, root, Arm("self", 7), "models/student", "vllm")
    flag = lambda name: argv[argv.index(name) + 1]  # noqa: E731
    assert flag("--teacher") == "models/student" and flag("--engine") == "vllm" and flag("--data_dir") == str(root)
    assert json.loads(flag("--select")) == {"num_notes": 7}
    assert json.loads(flag("--eval"))["i2b2"] == {"input_dir": str(corpus / "raw" / "n2c2-2018-track1")}
    assert not {"--post_process", "--prep_training", "--to_stage"} & set(argv)
    assert "--engine" not in known_answer_arms.arm_command(Path("known.yaml"), corpus, root, Arm("reference", 7), "m")
    for teacher in ("reference", "reference@0.8", "text-only"):  # teachers that are no model go as named
        argv = known_answer_arms.arm_command(Path("known.yaml"), corpus, root, Arm(teacher, 7), "m")
        assert argv[argv.index("--teacher") + 1] == teacher
    # a filtered arm: its own folder, every stage B filter on; its twin trains on as many items per type
    filtered = Arm("self", 7, True)
    assert known_answer_arms.arm_root(corpus, filtered) == corpus / "arms" / "self-7-filtered"
    assert filtered.twin == Arm("self", 7) and filtered.filters == \
        "require_source_in_note,require_answer_type,drop_duplicates,drop_near_duplicates"
    argv = known_answer_arms.arm_command(Path("known.yaml"), corpus, known_answer_arms.arm_root(corpus, filtered), filtered,
                                    "m", to_stage="prep_training")
    assert json.loads(flag("--post_process")) == {"require_source_in_note": True, "require_answer_type": True,
                                                 "drop_duplicates": True, "drop_near_duplicates": True}
    assert flag("--to_stage") == "prep_training" and "--prep_training" not in argv
    argv = known_answer_arms.arm_command(Path("known.yaml"), corpus, root, Arm("self", 7), "m", per_type=12)
    assert json.loads(flag("--prep_training")) == {"per_type": 12} and "--post_process" not in argv
    # a seed sets stage C's sampling and the training run; a permuted arm trains on answers permuted per type
    argv = known_answer_arms.arm_command(Path("known.yaml"), corpus, root, Arm("reference", 7, permuted=True, seed=2), "m")
    assert json.loads(flag("--prep_training")) == {"seed": 2, "permute_answers": True}
    assert json.loads(flag("--finetune")) == {"seed": 2}


def test_arms_run_in_parallel_with_their_own_logs_and_failures_end_the_run(tmp_path, capsys):
    sleeper = "import sys, time; time.sleep(1.5); print('arm', sys.argv[1]); sys.exit(int(sys.argv[2]))"
    commands = [(f"a{index}", [sys.executable, "-c", sleeper, str(index), "0"], tmp_path / f"a{index}.log")
                for index in range(3)]
    started = time.monotonic()
    known_answer_arms.run_commands(commands, parallel=3)
    assert time.monotonic() - started < 4.0  # three 1.5 s arms at once, not 4.5 s one after another
    assert [(tmp_path / f"a{index}.log").read_text() for index in range(3)] == ["arm 0\n", "arm 1\n", "arm 2\n"]
    failing = [("bad", [sys.executable, "-c", sleeper, "9", "3"], tmp_path / "bad.log"),
               ("good", [sys.executable, "-c", sleeper, "8", "0"], tmp_path / "good.log")]
    with pytest.raises(SystemExit) as ended:
        known_answer_arms.run_commands(failing, parallel=2)
    assert ended.value.code == 3 and (tmp_path / "good.log").read_text() == "arm 8\n"  # the other arm finished
    assert f"== arm bad: failed (exit code 3, see {tmp_path / 'bad.log'})" in capsys.readouterr().out
    for bad in (0, -1, True):
        with pytest.raises(InputError, match="--parallel must be a whole number of arms at a time"):
            known_answer.main(corpus=str(tmp_path / "none"), parallel=bad)
    assert not (tmp_path / "none").exists()


def test_an_early_training_that_fails_runs_again_with_its_arm_and_a_failed_first_arm_ends_the_run(tmp_path,
                                                                                                   monkeypatch):
    """While the first arm makes the base's answers the next arms train; one that fails there (out of memory beside
    the others, say) is not given up: it runs again, whole, with the other arms, and only then does the run end
    with its exit code if it fails again."""
    corpus, ran, Arm = tmp_path / "corpus", [], known_answer_arms.Arm
    arms = [Arm("reference", 30, seed=seed) for seed in (1, 2, 3)] + [Arm("text-only", 30, seed=1)]
    for arm in arms:
        known_answer_arms.arm_root(corpus, arm).mkdir(parents=True)
    codes = {("reference:30:seed2", known_answer_arms.TRAINED): 3}  # the exit code of each failing command

    def command(config, corpus, root, arm, self_teacher, engine=None, per_type=None, to_stage=None):
        pause = 0.5 if to_stage else 0.0  # an early training outlasts a first arm that fails at once
        return [sys.executable, "-c", f"import sys, time; time.sleep({pause}); print({arm.label!r}, {to_stage!r}); "
                                      f"sys.exit({codes.get((arm.label, to_stage), 0)})"]

    monkeypatch.setattr(known_answer_arms, "prepare_arm", lambda *args: ran.append(("prepare", args[1].name)))
    monkeypatch.setattr(known_answer_arms, "arm_command", command)
    finished = []
    known_answer_arms.run_arms(Path("known.yaml"), corpus, arms, "m", "vllm", 2, [], on_done=finished.append)
    assert finished[0] == arms[0] and sorted(finished[1:]) == sorted(arms[1:])  # each arm once, the first first
    log = lambda arm: (known_answer_arms.arm_root(corpus, arm) / "bench.log").read_text()  # noqa: E731
    assert {arm.label: log(arm) for arm in arms[1:]} == {
        "reference:30:seed2": "reference:30:seed2 convert_peft\nreference:30:seed2 None\n",
        "reference:30:seed3": "reference:30:seed3 convert_peft\nreference:30:seed3 None\n",
        "text-only:30:seed1": "text-only:30:seed1 None\n"}  # two early trainings for --parallel 2
    at_once = lambda: [(known_answer_arms.arm_root(corpus, arm) / known_answer_arms.ARMS_AT_ONCE).read_text()  # noqa: E731
                       for arm in arms]
    assert at_once() == ["2\n"] * 4
    # an arm already finished is not said to have shared the card with a later run's arms
    state = layout.report_dir(known_answer_arms.arm_root(corpus, arms[3]) / layout.REPORTS.name,
                              known_answer_stats.RUN) / "run.json"
    state.parent.mkdir(parents=True)
    state.write_text(json.dumps({"stages": {"report": {"status": "ran", "seconds": 1.0}}}))
    known_answer_arms.run_arms(Path("known.yaml"), corpus, arms, "m", "vllm", 3, [])
    assert at_once() == ["3\n", "3\n", "3\n", "2\n"]
    codes[("reference:30:seed2", None)] = 4  # failing again, whole, and once more alone: the run ends with its code
    before = log(arms[1])
    with pytest.raises(SystemExit) as ended:
        known_answer_arms.run_arms(Path("known.yaml"), corpus, arms, "m", "vllm", 2, [])
    assert ended.value.code == 4
    assert log(arms[1])[len(before):] == ("reference:30:seed2 convert_peft\nreference:30:seed2 None\n"
                                          "reference:30:seed2 None\n")
    codes[("reference:30:seed1", None)] = 5  # the first arm failing: no other arm starts, the run ends
    before = {arm: log(arm) for arm in arms[2:]}
    with pytest.raises(SystemExit) as ended:
        known_answer_arms.run_arms(Path("known.yaml"), corpus, arms, "m", "vllm", 2, [], on_done=finished.append)
    assert ended.value.code == 5 and {arm: log(arm) for arm in arms[2:]} == before
    assert len(finished) == 4  # nothing more logged


def test_an_arm_that_fails_beside_others_runs_once_more_alone(tmp_path, monkeypatch, capsys):
    """vLLM's start fails when another process on the GPU frees memory while it measures (an arm's training or
    engine ending beside it): an arm that failed beside others runs once more, alone, after them, and is logged
    when it then succeeds; the first arm too, before any other arm answers. Alone, a failure is not retried."""
    corpus, Arm = tmp_path / "corpus", known_answer_arms.Arm
    arms = [Arm("reference", 30, seed=seed) for seed in (1, 2, 3)]
    for arm in arms:
        known_answer_arms.arm_root(corpus, arm).mkdir(parents=True)
    flaky = {"reference:30:seed1", "reference:30:seed3"}  # these fail on their first whole run only

    def command(config, corpus, root, arm, self_teacher, engine=None, per_type=None, to_stage=None):
        marker = root / "ran-once"
        fails = arm.label in flaky and to_stage is None
        return [sys.executable, "-c", "import pathlib, sys, time; marker = pathlib.Path(sys.argv[1]); "
                f"time.sleep({0.5 if to_stage else 0.2}); first = {fails} and not marker.exists(); "
                "marker.touch() if first else None; sys.exit(7 if first else 0)", str(marker)]

    monkeypatch.setattr(known_answer_arms, "prepare_arm", lambda *args: None)
    monkeypatch.setattr(known_answer_arms, "arm_command", command)
    finished = []
    known_answer_arms.run_arms(Path("known.yaml"), corpus, arms, "m", "vllm", 2, [], on_done=finished.append)
    assert finished == [arms[0], arms[1], arms[2]] or finished == [arms[0], arms[2], arms[1]]
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if "alone" in line or "failed" in line] == [
        "== arm reference:30:seed1: failed (exit code 7)",
        "== arm reference:30:seed1: failed beside other arms; once more, alone",
        "== arm reference:30:seed3: failed (exit code 7, see "
        f"{known_answer_arms.arm_root(corpus, arms[2]) / 'bench.log'})",
        "== arm reference:30:seed3: failed beside other arms; once more, alone"]
    for arm in arms:  # a fresh run: alone (--parallel 1), a failure ends the run at once
        (known_answer_arms.arm_root(corpus, arm) / "ran-once").unlink(missing_ok=True)
    with pytest.raises(SystemExit) as ended:
        known_answer_arms.run_arms(Path("known.yaml"), corpus, arms, "m", "vllm", 1, [])
    assert ended.value.code == 7 and "alone" not in capsys.readouterr().out


def test_an_arm_that_cannot_be_logged_ends_the_run_once_the_others_have_ended(tmp_path, capsys):
    sleeper = "import sys, time; time.sleep(float(sys.argv[1]))"
    commands = [(name, [sys.executable, "-c", sleeper, pause], tmp_path / f"{name}.log")
                for name, pause in (("quick", "0"), ("slow", "1.0"))]

    def unloggable(label: str) -> None:
        raise OSError(f"{label}: disk full")

    with pytest.raises(OSError, match="quick: disk full"):
        known_answer_arms.run_commands(commands, 2, on_done=unloggable)
    out = capsys.readouterr().out
    assert "== arm quick: finished, but could not be logged: quick: disk full" in out
    assert "== arm slow: done" in out  # the other arm ran to its end first


def test_the_grid_logs_each_arm_as_it_finishes_so_a_stopped_grid_keeps_them(tmp_path, monkeypatch):
    """Into a log of earlier records (the final split, --keep_earlier) each arm is written when it finishes, with
    the finished arms it is compared with (its format-only twin, the reference teacher's arm of its size and seed)
    and the first with the baselines: a grid stopped midway keeps what it finished. A results file written whole
    is written once, at the end."""
    written = []
    monkeypatch.setattr(known_answer, "write_corpus", lambda *args, **kwargs: None)
    monkeypatch.setattr(known_answer, "write_results", lambda target, corpus, config, arms, baselines, *rest, **keep:
                        written.append(([arm.label for arm in arms], list(baselines), keep)))

    def stopped_after_three(config, corpus, chosen, self_teacher, engine, parallel, baselines, on_done):
        for arm in (chosen[0], chosen[3], chosen[2]) if on_done else ():  # no callback: nothing to log midway
            on_done(arm)
        raise SystemExit(9)  # the machine went away

    monkeypatch.setattr(known_answer, "run_arms", stopped_after_three)
    grid = dict(corpus=str(tmp_path / "corpus"), arms="reference:30,reference:100,text-only:30,reference:30:permuted",
                seeds="1", output=str(tmp_path / "out.json"), baselines="rules")
    with pytest.raises(SystemExit) as ended:
        known_answer.main(**grid, keep_earlier=True)
    assert ended.value.code == 9
    assert written == [(["reference:30:seed1"], ["rules"], {"keep_earlier": True}),
                       (["reference:30:seed1", "reference:30:permuted:seed1"], ["rules"], {"keep_earlier": True}),
                       # with the reference teacher's arm of its size and seed, for their comparison
                       (["reference:30:seed1", "text-only:30:seed1"], ["rules"], {"keep_earlier": True})]
    written.clear()
    with pytest.raises(SystemExit):
        known_answer.main(**grid)
    assert written == []


@pytest.mark.parametrize("parallel, arms, share", [(1, 1, None), (2, 2, "0.30"), (3, 3, "0.20"), (4, 4, "0.15"),
                                                    (3, 1, None), (4, 2, "0.30")])
def test_arms_run_at_once_share_the_gpus_memory_between_their_vllm_engines(tmp_path, monkeypatch, parallel, arms,
                                                                           share):
    """Each engine's share is of the arms that can run at once: --parallel, or fewer where fewer arms are left."""
    monkeypatch.delenv(MEMORY_SHARE_VARIABLE, raising=False)
    shown = f"import os; print(os.environ.get({MEMORY_SHARE_VARIABLE!r}))"
    logs = [tmp_path / f"a{index}.log" for index in range(arms)]
    known_answer_arms.run_commands([(f"a{index}", [sys.executable, "-c", shown], log)
                                    for index, log in enumerate(logs)], parallel)
    assert [log.read_text() for log in logs] == [f"{share}\n"] * arms
    if share:  # what each engine then takes
        monkeypatch.setenv(MEMORY_SHARE_VARIABLE, share)
        assert memory_share() == float(share)


@pytest.mark.parametrize("value, share", [("", 0.9), (" 0.25 ", 0.25), ("1", 1.0)])
def test_a_vllm_engines_share_of_memory_is_read_from_the_environment(monkeypatch, value, share):
    monkeypatch.setenv(MEMORY_SHARE_VARIABLE, value)
    assert memory_share() == share


@pytest.mark.parametrize("value", ["0", "1.5", "-0.2", "half", "nan"])
def test_a_share_of_memory_outside_zero_to_one_is_refused_in_one_line(monkeypatch, value):
    monkeypatch.setenv(MEMORY_SHARE_VARIABLE, value)
    with pytest.raises(InputError, match=rf"^CLINICAL_DISTIL_VLLM_MEMORY must be a share of the GPU's memory in "
                                         rf"\(0, 1\], got '{value}'; unset it for 0.9$"):
        memory_share()


def summary_row(model: str, ba: float, low: float, high: float, **extra) -> dict:
    return {**extra, "model": f"{known_answer_stats.RUN}-{model}", "examples": 10, "balanced_accuracy": ba,
            "balanced_accuracy_ci_questions_low": low, "balanced_accuracy_ci_questions_high": high,
            "balanced_accuracy_ci_examples_low": low - 0.01, "balanced_accuracy_ci_examples_high": high + 0.01,
            "micro_f1": ba, "parse_failure_rate": 0.0}


def test_collect_and_tables(tmp_path):
    root = known_answer_arms.arm_root(tmp_path, known_answer_arms.Arm("reference", 5))
    write_csv(pd.DataFrame([summary_row("base", 0.5, 0.4, 0.6), summary_row("distilled", 0.8, 0.7, 0.9)]),
              layout.evaluation_dir(root, "apixaban", known_answer_stats.RUN) / "summary.csv")
    write_csv(pd.DataFrame([summary_row("base", 0.5, 0.4, 0.6, accuracy_yes_no=0.25),
                            summary_row("distilled", 0.55, 0.45, 0.7, accuracy_yes_no=0.75)]),
              layout.evaluation_dir(root, "annotated-synthetic", known_answer_stats.RUN) / "summary.csv")
    summary = layout.training_summary(root / layout.RESULTS.name / known_answer_stats.RUN)
    summary.parent.mkdir(parents=True)
    summary.write_text(json.dumps({"train_examples": 40}))
    write_csv(pd.DataFrame([{"question_type": "all", "items": 50, "verifiable": 1.0, "precision": 1.0,
                             "quote_in_note": 1.0}]),
              layout.teacher_truth_file(layout.report_dir(root / layout.REPORTS.name, known_answer_stats.RUN)))
    results = known_answer_results.collect(tmp_path, [known_answer_arms.Arm("reference", 5)])
    by_task = {(run["task"], run["model"]): run for run in results["runs"]}
    assert by_task[("apixaban", "distilled")] == {
        "teacher": "reference", "notes": 5, "filters": "none", "answers": "as written", "seed": None,
        "train_items": 40, "task": "apixaban",
        "model": "distilled",
        "examples": 10, "balanced_accuracy": 0.8, "ci_over": "questions", "ci_low": 0.7, "ci_high": 0.9,
        "micro_f1": 0.8, "n2c2_micro_f1": None, "parse_failure_rate": 0.0}
    assert by_task[("annotated-synthetic", "base")]["ci_over"] == "examples"
    assert by_task[("annotated-synthetic", "distilled")]["accuracy_yes_no"] == 0.75
    assert by_task[("annotated-synthetic", "base")]["ci_low"] == pytest.approx(0.39)
    assert results["arm_seconds"] == []  # no driver state in this tree
    state = layout.report_dir(root / layout.REPORTS.name, known_answer_stats.RUN) / "run.json"
    steps = {f"{model} {task}": {"command": f"eval-inference.py --model_id {model}", "seconds": 1.0}
             for model in ("base", "distilled") for task in known_answer_stats.TASKS}
    state.write_text(json.dumps({"stages": {"finetune": {"seconds": 200.5},
                                            "eval_inference": {"seconds": 90.25, "steps": steps},
                                            "verify": {"status": "not run", "seconds": None}}}))
    (root / known_answer_arms.ARMS_AT_ONCE).write_text("3\n")
    assert known_answer_results.collect(tmp_path, [known_answer_arms.Arm("reference", 5)])["arm_seconds"] == [
        {"teacher": "reference", "notes": 5, "filters": "none", "answers": "as written", "seed": None,
         "arms_at_once": 3, "engine_starts": 2, "seconds": 290.8,
         "stages": {"finetune": 200.5, "eval_inference": 90.25, "verify": None}}]
    assert results["teacher_precision"] == [{"teacher": "reference", "notes": 5, "filters": "none",
                                             "answers": "as written", "seed": None, "question_type": "all", "items": 50, "verifiable": 1.0,
                                             "precision": 1.0, "quote_in_note": 1.0}]
    table = known_answer_results.markdown(results).splitlines()
    assert table[2].startswith("| reference | 5 | 40 | annotated-synthetic | 0.500 [0.390, 0.610] | "
                               "0.550 [0.440, 0.710] | +0.050 | no |")
    assert "| +0.300 | yes | 0.500 -> 0.800 |" in table[3]
    assert known_answer_results.precision_markdown(results).splitlines()[2] == \
        "| reference | 5 | all | 50 | 1.000 | 1.000 | 1.000 |"
    # a filtered arm of the same teacher and notes: a row of its own, named by its filters
    twin = [{**run, "filters": known_answer_arms.Arm("reference", 5, True).filters, "train_items": 20}
            for run in results["runs"] if run["task"] == "apixaban"]
    table = known_answer_results.markdown({"runs": results["runs"] + twin}).splitlines()
    assert table[3].startswith("| reference | 5 | 40 | apixaban |")
    assert table[4].startswith("| reference, stage B filters | 5 | 20 | apixaban | 0.500 [0.400, 0.600] |")


def test_earlier_arms_are_kept_on_the_same_corpus_and_replaced_when_run_again(tmp_path):
    corpus = {"seed": 7, "patients": 12}
    record = lambda notes, ba: {"teacher": "reference", "notes": notes, "task": "i2b2", "model": "distilled",  # noqa: E731
                                "balanced_accuracy": ba}
    output = tmp_path / "known_answer.json"
    output.write_text(json.dumps({"date": "2026-11-01", "card": "H200", "corpus": corpus,
                                  "runs": [record(25, 0.6), record(60, 0.5)],
                                  "teacher_precision": [{"teacher": "reference", "notes": 25, "precision": 1.0}]}))
    now = {"corpus": corpus, "runs": [record(60, 0.7), record(300, 0.8)], "teacher_precision": [],
           "arm_seconds": [{"date": "2026-11-30", "card": "H100", "teacher": "reference", "notes": 300,
                            "seconds": 9.0}]}
    Arm = known_answer_arms.Arm
    merged = known_answer_results.keep_earlier_arms(now, output, [Arm("reference", 60), Arm("reference", 300)])
    assert [(run["notes"], run["balanced_accuracy"]) for run in merged["runs"]] == [(25, 0.6), (60, 0.7), (300, 0.8)]
    assert merged["teacher_precision"] == [{"teacher": "reference", "notes": 25, "precision": 1.0}]
    assert merged["arm_seconds"] == [
        {"date": "2026-11-01", "card": "H200", "teacher": "reference", "notes": 25, "seconds": None},
        {"date": "2026-11-30", "card": "H100", "teacher": "reference", "notes": 300, "seconds": 9.0}]
    assert "superseded" not in merged
    # a filtered arm of 60 notes adds its records beside the unfiltered one's (files without filters: unfiltered)
    output.write_text(json.dumps({**merged, "date": "2026-11-30", "card": "H100"}))
    filters = Arm("reference", 60, True).filters
    filtered = {"corpus": corpus, "runs": [{**record(60, 0.75), "filters": filters}], "teacher_precision": [],
                "arm_seconds": [{"teacher": "reference", "notes": 60, "filters": filters, "seconds": 5.0}]}
    both = known_answer_results.keep_earlier_arms(filtered, output, [Arm("reference", 60, True)])
    assert [(run["notes"], run.get("filters", "none"), run["balanced_accuracy"]) for run in both["runs"]] == [
        (25, "none", 0.6), (60, "none", 0.7), (300, "none", 0.8), (60, filters, 0.75)]
    assert [(arm["notes"], arm.get("filters", "none")) for arm in both["arm_seconds"]] == [
        (60, "none"), (25, "none"), (300, "none"), (60, filters)]


def test_results_of_another_corpus_or_reference_teacher_are_kept_whole_apart(tmp_path):
    output = tmp_path / "known_answer.json"
    first = {"date": "2026-11-01", "corpus": {"seed": 7}, "reference_teacher": "aaa",
             "runs": [{"teacher": "reference", "notes": 25, "balanced_accuracy": 0.6}]}
    output.write_text(json.dumps(first))
    now = lambda corpus, teacher: {"corpus": corpus, "reference_teacher": teacher, "arm_seconds": [],  # noqa: E731
                                   "runs": [{"teacher": "reference", "notes": 60, "balanced_accuracy": 0.7}],
                                   "teacher_precision": []}
    Arm = known_answer_arms.Arm
    by_teacher = known_answer_results.keep_earlier_arms(now({"seed": 7}, "bbb"), output, [Arm("reference", 60)])
    assert [run["notes"] for run in by_teacher["runs"]] == [60]
    assert by_teacher["superseded"] == [first]
    output.write_text(json.dumps(by_teacher))  # a third file: newest superseded first, the same-measure arms merge
    by_corpus = known_answer_results.keep_earlier_arms(now({"seed": 8}, "bbb"), output, [Arm("reference", 60)])
    assert [entry["corpus"] for entry in by_corpus["superseded"]] == [{"seed": 7}, {"seed": 7}]
    assert [entry["reference_teacher"] for entry in by_corpus["superseded"]] == ["bbb", "aaa"]
    assert "superseded" not in by_corpus["superseded"][0]
    alike = known_answer_results.keep_earlier_arms(now({"seed": 7}, "bbb"), output, [Arm("reference", 100)])
    assert alike["superseded"] == [first] and [run["notes"] for run in alike["runs"]] == [60, 60]
    output.write_text("{not json")
    with pytest.raises(InputError, match="is not a results JSON"):
        known_answer_results.keep_earlier_arms(now({"seed": 7}, "bbb"), output, [])


def test_every_lab_of_the_simulator_gets_numeric_items(corpus):
    """Labs drawn as whole numbers (platelets, glucose, WBC) get numeric items as the decimal ones do, each
    answered with the truth checker's value."""
    facts = read_facts(layout.facts_file(layout.corpus_notes(corpus)))
    asked = {lab: 0 for lab in reference_teacher.LAB_NAMES}
    for record in facts.values():
        for item in reference_teacher.numeric_items(record["sheet"], record["mentions"], random.Random(0)):
            expected = expected_answer(item.question, record["sheet"], vitals_of(record["mentions"]))
            assert float(item.answer) == float(expected.answer)
            for lab, name in reference_teacher.LAB_NAMES.items():
                asked[lab] += name in item.question
    assert all(count > 0 for count in asked.values()), asked
    assert {lab for lab, count in asked.items() if count >= 20} == set(reference_teacher.LAB_NAMES)


def test_the_reference_teacher_is_named_by_its_behaviour(monkeypatch):
    """The digest is of the teacher's replies, not its source: the same replies keep it (its value at the code
    versions of experiments/known_answer.json's arms), other replies change it."""
    digest = reference_teacher.behaviour_digest()
    assert re.fullmatch(r"[0-9a-f]{12}", digest) and reference_teacher.behaviour_digest() == digest
    # the recorded arms were written by the teacher before whole-number labs got numeric items: another teacher
    recorded = json.loads((layout.REPO_ROOT / "experiments" / "known_answer.json").read_text())["reference_teacher"]
    assert recorded == "072c9dec8f47" != digest
    assert not known_answer_results.measured_alike({"corpus": {}, "reference_teacher": recorded},
                                           {"corpus": {}, "reference_teacher": digest})
    replies = reference_teacher.reference_reply
    monkeypatch.setattr(reference_teacher, "reference_reply", lambda *args: [*replies(*args), {"question": "?"}])
    assert reference_teacher.behaviour_digest() != digest
    assert reference_teacher.behaviour_digest(seed=1) != digest


def test_known_answer_miniature_of_one_arm_with_every_baseline(tmp_path, tiny_model_dir):
    """The analysis plan end to end on a dev-split corpus (the tiny model as student): one reference arm of seed 1,
    its format-only twin (answers permuted) beside it, the rules and the few-shot base as baselines; the results
    JSON holds every paired comparison over patients, the per-criterion table, and a rerun resumes."""
    config = tmp_path / "known-answer.yaml"
    config.write_text(
        f"run: known-answer\nstudent: {tiny_model_dir}\nteacher: reference\nengine: transformers\nbatch_size: 16\n"
        "max_seq_length: 2048\nmin_difficulty: 1\nnum_gpus: 0\ncreate: {questions_per_type: 2}\n"
        "finetune: {load_in_4bit: false, per_device_train_batch_size: 4, gradient_accumulation_steps: 1, "
        "padding_free: true, gradient_checkpointing: false, max_steps: 2, logging_steps: 1}\n"
        "eval_inference: {max_output_tokens: 8}\nevaluate: {resamples: 20}\n")
    corpus, output = tmp_path / "corpus", tmp_path / "known_answer.json"
    args = ["--config", str(config), "--corpus", str(corpus), "--arms", "reference:4,reference:4:permuted",
            "--seeds", "1", "--baselines", "rules,few-shot", "--parallel", "2", "--patients", "12",
            "--annotated_notes", "2", "--n2c2_test", "2", "--apixaban_notes", "2", "--output", str(output),
            "--resamples", "200", "--n2c2_dir", str(layout.REPO_ROOT / "data/samples/n2c2-2018-track1/test")]
    done = run_script("experiments/known_answer.py", *args)
    assert done.returncode == 0, done.stderr[-3000:]
    Arm = known_answer_arms.Arm
    results = json.loads(output.read_text())
    assert results["split"] == "dev" and results["corpus"]["split"] == "dev"
    extra = "n2c2:n2c2-2018-track1-test"  # the samples' n2c2 folder as a labelled set of one's own
    assert sorted((run["answers"], run["task"], run["model"]) for run in results["runs"]) == sorted(
        (answers, task, model) for answers in ("as written", "permuted") for task in (*known_answer_stats.TASKS, extra)
        for model in ("base", "distilled"))
    from clinical_distil.metrics import n2c2_official
    stats = known_answer_stats
    extra_root = corpus / "n2c2-dirs" / "n2c2-2018-track1-test"
    for answers, name in (("as written", "reference-4-seed1"), ("permuted", "reference-4-permuted-seed1")):
        (run,) = [run for run in results["runs"] if run["task"] == extra and run["answers"] == answers
                  and run["model"] == "distilled"]
        assert run["examples"] == 6 * 13 and run["n2c2_micro_f1"] == pytest.approx(
            n2c2_official(stats.scored_answers(extra_root, "i2b2", name))["micro_f1"])
    assert {run["seed"] for run in results["runs"]} == {1}
    # the second arm trained beside the first (its answers waited for the base's)
    assert [(row["answers"], row["arms_at_once"]) for row in results["arm_seconds"]] == [
        ("as written", 2), ("permuted", 2)]
    comparisons = sorted((row["comparison"], row["task"]) for row in results["paired"])
    assert comparisons == sorted([(comparison, task) for task in known_answer_stats.TASKS for comparison in (
        "student - base", "student - base", "student - format-only student", "rules - base", "few-shot - base")]
        + [("student - base", extra)] * 2)
    scores = {(run["answers"], run["task"], run["model"]): run["balanced_accuracy"] for run in results["runs"]}
    patients = {"annotated-synthetic": 2, "i2b2": 2, "apixaban": 2, extra: 6}
    for row in results["paired"]:
        assert row["patients"] == patients[row["task"]] and row["ci_low"] <= row["difference"] <= row["ci_high"]
        assert row["date"] and row["code"] and row["split"] == "dev"
        if row["comparison"] == "student - base":  # the evaluation's own scores, paired
            # (the evaluation's summary keeps four decimals)
            assert row["first"] == pytest.approx(scores[(row["answers"], row["task"], "distilled")], abs=5e-5)
            assert row["second"] == pytest.approx(scores[(row["answers"], row["task"], "base")], abs=5e-5)
            assert row["difference"] == pytest.approx(row["first"] - row["second"])
        if row["comparison"] == "student - format-only student":
            assert row["second"] == pytest.approx(scores[("permuted", row["task"], "distilled")], abs=5e-5)
        if row["comparison"] == "rules - base":
            assert row["unparseable_first"] == 0.0  # the rules always answer in the answer's JSON
    over = {(row["answers"], row["comparison"], row["task"]): row for row in results["over_seeds"]}
    assert over[("as written", "student - base", "i2b2")]["seeds"] == 1
    criteria = [row for row in results["per_criterion"] if row["task"] == "i2b2" and row["answers"] == "as written"]
    assert len(criteria) == 13 and all(row["n"] == 2 == row["positives"] + row["negatives"] for row in criteria)
    apixaban = [row for row in results["per_criterion"] if row["task"] == "apixaban" and row["answers"] == "as written"]
    assert len(apixaban) == 23 and sum(row["n"] for row in apixaban) == 46
    first = known_answer_arms.arm_root(corpus, Arm("reference", 4, seed=1))
    shown = json.loads((layout.model_outputs(first, "apixaban", "known-answer-few-shot")
                        / "manifest_prompts.json").read_text())
    assert shown["worked_examples"].endswith("train_all_1.arrow") and shown["worked_examples_shown"] > 0
    permuted = layout.raw_dir(known_answer_arms.arm_root(corpus, Arm("reference", 4, permuted=True, seed=1)))
    assert layout.training_dataset(permuted, "train", "all_1_permuted").is_dir()
    assert "| reference, answers permuted, seed 1 | 4 |" in known_answer_results.markdown(results)
    assert "| rules |  | as written |  | i2b2 | rules - base |" in known_answer_results.paired_markdown(results)
    again = run_script("experiments/known_answer.py", *args)  # resumes: every step is done
    assert again.returncode == 0, again.stderr[-2000:]
    # the first arm's stages, and the baselines' and the n2c2 folder's answers (the second arm logs to its folder)
    assert again.stdout.count("skipped, outputs exist") == 9 and again.stdout.count("eval-inference: 0 answers") == 9
    assert json.loads(output.read_text())["paired"] == results["paired"]


@pytest.mark.parametrize("script, arguments, message", [
    ("experiments/known_answer.py", ["--arm", "reference:3"],
     "unknown flag --arm; did you mean --arms? (--help lists them)"),
    ("experiments/known_answer.py", ["--patients", "abc"], "--patients must be a whole number, got 'abc'"),
    ("experiments/known_answer.py", ["--parallel", "2.5"], "--parallel must be a whole number, got 2.5"),
    ("experiments/known_answer.py", ["extra"], "unexpected argument 'extra': every setting is given by name"),
    ("experiments/known_answer.py", ["--arms", "reference:50", "--patients", "10"], "an arm asks for more notes than"),
    ("experiments/known_answer.py", ["--engine", "tgi"], "--engine must be auto, vllm or transformers, got 'tgi'"),
    ("experiments/known_answer.py", ["--n2c2_dir", "/nowhere/n2c2"], "--n2c2_dir /nowhere/n2c2 holds no n2c2 XML"),
    ("experiments/known_answer.py", ["--n2c2_dir", "data/samples/n2c2-2018-track1/test", "--n2c2_dir",
                                     "data/samples/n2c2-2018-track1/test"], "--n2c2_dir names two folders of one"),
    ("experiments/known_answer.py", ["--grid", "10,20"], "--grid takes the three teacher note counts"),
    ("experiments/known_answer.py", ["--baselines", "zero-shot"], "--baselines takes rules, few-shot, each once; got"),
    ("experiments/known_answer.py", ["--split", "test"], "--split must be dev or final, got 'test'"),
    ("experiments/known_answer.py", ["--seeds", "1,b"], "--seeds must be whole numbers separated by commas"),
    ("experiments/known_answer.py", ["--seeds", "2,2"], "--seeds names a seed twice"),
    ("experiments/known_answer.py", ["--grid", "1,2,3", "--precision", "1.5"], "--precision must be in (0, 1], got 1.5"),
    ("experiments/known_answer.py", ["--baselines", "rules,rules"], "--baselines takes rules, few-shot, each once"),
    ("experiments/known_answer.py", ["--arms", "reference:4:permuted,reference:4", "--baselines", "few-shot"],
     "the few-shot baseline reads worked examples from the first arm's training set"),
    ("simulation/corpus.py", ["--patiens", "3"], "unknown flag --patiens; did you mean --patients?"),
    ("simulation/corpus.py", ["--patients", "0"], "--patients must be at least 1, got 0"),
    ("simulation/corpus.py", ["--seed", "x"], "--seed must be a whole number, got 'x'"),
])
def test_entry_points_refuse_bad_input_in_one_line_before_any_work(tmp_path, script, arguments, message):
    place = "--corpus" if script.startswith("experiments") else "--output_dir"
    done = run_script(script, *arguments, place, str(tmp_path / "out"))
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}")
    assert not (tmp_path / "out").exists()


def test_an_existing_corpus_is_kept_unless_asked(corpus):
    before = digest(corpus)
    done = run_script("simulation/corpus.py", "--output_dir", str(corpus), "--patients", "5")
    assert done.returncode == 2
    assert done.stderr.strip() == f"error: {corpus} already holds a corpus; pass --overwrite True to write it again"
    assert digest(corpus) == before


def test_filter_precision_separates_planted_wrong_items(facts):
    """experiments/filter_precision.py's table on reference items with every fifth answer flipped: the filter that flags
    exactly the flipped items keeps precision 1.0 and drops precision 0.0; one that flags nothing gains nothing."""
    import filter_precision

    items = items_of(facts, "yes_no", count=2).reset_index(drop=True)
    flipped = items.index % 5 == 0
    items.loc[flipped, "answer"] = items.loc[flipped, "answer"].map({"Yes": "No", "No": "Yes"})
    items = items.assign(source_match=["none" if flip else "exact" for flip in flipped], source_in_note=~flipped,
                         answer_type_ok=True, duplicate_question=False, near_duplicate_question=False,
                         verifier_agrees=~flipped)
    table = filter_precision.filter_table(items, facts).set_index("filter")
    whole = round(1 - flipped.mean(), 3)
    for name in ("require_source_in_note", "require_verified", "all filters"):
        assert table.loc[name, ["kept", "dropped", "precision_kept", "precision_dropped"]].tolist() == \
            [int((~flipped).sum()), int(flipped.sum()), 1.0, 0.0]
        assert table.loc[name, "gain"] == round(1.0 - whole, 3)
    assert table.loc["drop_duplicates", ["dropped", "precision_kept", "gain"]].tolist() == [0, whole, 0.0]


def test_twin_trains_on_as_many_items_when_the_filters_emptied_a_type(tmp_path):
    """The twin's per_type shares the filtered arm's items out over every type the run trains on: a filtered arm
    left with 4 yes_no, 4 na-bool and 4 na-numeric items (no numeric) gives its twin 3 per type, 12 in all."""
    from clinical_distil.prep_training import write_datasets

    config = tmp_path / "known.yaml"
    config.write_text("run: known\nstudent: m\nteacher: self\nmin_difficulty: 1\n")
    types = ["yes_no"] * 4 + ["na-bool"] * 4 + ["na-numeric"] * 4
    prompt = [{"role": "user", "content": "q"}]
    frame = pd.DataFrame({"id": [f"i{index}" for index in range(12)], "prompt": [prompt] * 12, "output": ["{}"] * 12,
                          "question_type": types, "subject_id": range(12),
                          "note_id": [str(index) for index in range(12)]})
    raw = layout.raw_dir(tmp_path)
    write_datasets(frame.iloc[:10], frame.iloc[10:], raw, layout.training_name("all", 1), overwrite=True)
    assert known_answer_arms.items_per_type(tmp_path, config) == 3
    config.write_text("run: known\nstudent: m\nteacher: self\nmin_difficulty: 1\ninput_file: bool\n")
    write_datasets(frame.iloc[:10], frame.iloc[10:], raw, layout.training_name("bool", 1), overwrite=True)
    assert known_answer_arms.items_per_type(tmp_path, config) == 12  # one type trained on: all of them


def test_the_held_out_sets_are_a_named_split_by_the_held_out_renderer(corpus, tmp_path):
    """corpus.json names the split (dev unless asked); the held-out notes are the second renderer's (its withheld
    terms in them, none in the training notes); an unknown split stops before anything is written."""
    from simulation.held_out import WITHHELD_TERMS

    summary = json.loads((corpus / CORPUS_FILE).read_text())
    assert (summary["split"], summary["held_out_renderer"]) == ("dev", "simulation/held_out.py")
    held_out = pd.concat([pd.read_csv(path) for path in sorted((corpus / "raw" / "apixaban").glob("*.csv"))])
    training = "\n".join(pd.read_csv(layout.corpus_notes(corpus))["TEXT"])
    held_out_text = "\n".join(held_out["text"].unique())
    assert any(term in held_out_text for term in WITHHELD_TERMS)
    assert not any(term in training for term in WITHHELD_TERMS)
    with pytest.raises(InputError, match="^--split 'test' is not a held-out split; choose dev or final$"):
        write_corpus(tmp_path / "other", patients=4, split="test")
    assert not (tmp_path / "other").exists()


def test_no_training_note_leaks_into_the_held_out_sets(corpus):
    """Stage C's leakage check of the training notes against the held-out sets: its report kept, no leak."""
    summary = json.loads((corpus / CORPUS_FILE).read_text())
    report = json.loads((corpus / "raw" / "held-out" / "leakage.json").read_text())
    assert summary["leakage"] == {"training_notes": 40, "evaluation_notes": report["evaluation_notes"], "leaks": 0}
    assert report["leaks"] == [] and report["evaluation_notes"] == 4 + 5 + 2  # annotated, n2c2 patients, apixaban


def test_the_final_split_log_keeps_every_run_and_logs_an_arm_once_per_answers():
    """On the final split nothing is replaced: the same answers collected again add nothing, other answers of the
    same arm (a rerun) are a new record beside the first; the mean over seeds reads each arm's latest record."""
    stats = known_answer_stats

    def paired(seed: int, difference: float, digest: str) -> dict:
        return {"teacher": "reference", "notes": 4, "filters": "none", "answers": "as written", "seed": seed,
                "task": "i2b2", "comparison": "student - base", "difference": difference, "ci_low": difference - 0.05,
                "ci_high": difference + 0.05, "answers_digest": digest}

    def results(*rows) -> dict:
        return {"corpus": {"split": "final"}, "runs": [{**row, "model": "distilled"} for row in rows],
                "teacher_precision": [], "arm_seconds": [], "paired": list(rows), "per_criterion": []}

    Arm = known_answer_arms.Arm
    arms = [Arm("reference", 4, seed=1), Arm("reference", 4, seed=2)]
    with tempfile.TemporaryDirectory() as folder:
        output = Path(folder) / "known_answer.json"
        first = known_answer_results.keep_earlier_arms(results(paired(1, 0.2, "a"), paired(2, 0.4, "b")), output, arms)
        output.write_text(json.dumps(first))
        same = known_answer_results.keep_earlier_arms(results(paired(1, 0.2, "a"), paired(2, 0.4, "b")), output, arms)
        assert same["paired"] == first["paired"] and len(same["runs"]) == 2
        output.write_text(json.dumps(same))
        rerun = known_answer_results.keep_earlier_arms(results(paired(1, 0.2, "a"), paired(2, 0.1, "c")), output, arms)
        output.write_text(json.dumps(rerun))
        # a task compared for the first time (an n2c2 folder added) is logged though the arm's other tasks are
        extra = known_answer_results.keep_earlier_arms(results(paired(1, 0.2, "a"), {**paired(1, 0.3, "z"),
                                                                                      "task": "n2c2:x"}), output, arms)
        assert [(row["task"], row["answers_digest"]) for row in extra["paired"][3:]] == [("n2c2:x", "z")]
        assert [(row["seed"], row["task"]) for row in extra["runs"][3:]] == [(1, "n2c2:x")]
        other = {**results(paired(1, 0.2, "a")), "corpus": {"split": "final", "patients": 8}}
        with pytest.raises(InputError, match="logs the final split of another corpus or reference teacher"):
            known_answer_results.keep_earlier_arms(other, output, arms)
    assert [(row["seed"], row["answers_digest"]) for row in rerun["paired"]] == [(1, "a"), (2, "b"), (2, "c")]
    assert [row["seed"] for row in rerun["runs"]] == [1, 2, 2]
    (over,) = rerun["over_seeds"]
    assert over["seeds"] == 2 and over["mean_difference"] == pytest.approx(0.15)
    assert (over["min_difference"], over["max_difference"]) == (0.1, 0.2) and over["every_interval_above_zero"]
    # two seeds 0.2 and 0.1: sd 0.0707, t(0.975, 1) = 12.706, half width 12.706 * 0.0707 / sqrt(2) = 0.6353
    assert (over["seeds_ci_low"], over["seeds_ci_high"]) == (pytest.approx(0.15 - 0.63531, abs=1e-5),
                                                             pytest.approx(0.15 + 0.63531, abs=1e-5))
    three = stats.mean_over_seeds([paired(1, 0.1, "a"), paired(2, 0.2, "b"), paired(3, 0.3, "c")])[0]
    # sd 0.1, t(0.975, 2) = 4.3027: 0.2 -/+ 4.3027 * 0.1 / sqrt(3) = 0.2 -/+ 0.24842
    assert (three["seeds_ci_low"], three["seeds_ci_high"]) == (pytest.approx(-0.04842, abs=1e-5),
                                                               pytest.approx(0.44842, abs=1e-5))
    assert stats.mean_over_seeds([]) == []
    baseline = {**paired(0, 0.3, "d"), "teacher": "rules", "notes": None, "seed": None, "comparison": "rules - base"}
    mixed = stats.mean_over_seeds([paired(1, 0.2, "a"), baseline])  # a column with gaps: counts stay whole numbers
    assert [(row["notes"], row["seeds"]) for row in mixed] == [(4, 1), (None, 1)] and type(mixed[0]["notes"]) is int
    # an arm of the config's seed is not averaged with seeded ones
    apart = stats.mean_over_seeds([paired(1, 0.2, "a"), paired(2, 0.4, "b"), {**paired(0, 0.9, "e"), "seed": None}])
    assert [(row["seeds"], round(row["mean_difference"], 3)) for row in apart] == [(2, 0.3), (1, 0.9)]
    assert (apart[1]["seeds_ci_low"], apart[1]["seeds_ci_high"]) == (None, None)


def test_the_final_split_log_written_arm_by_arm_is_the_log_written_at_once(tmp_path):
    """An arm logged as it finishes, then again beside its format-only twin (their comparison), then in the run's
    last write: its seconds and teacher precision are logged once, as one write at the end logs them."""
    tag = lambda answers: {"teacher": "reference", "notes": 4, "filters": "none", "answers": answers,  # noqa: E731
                           "seed": 1}
    run = {"date": "2026-12-06", "card": "H100", "command": "python experiments/known_answer.py", "code": "abc"}

    def paired(answers: str, comparison: str, digest: str) -> dict:
        return {**run, **tag(answers), "task": "i2b2", "comparison": comparison, "difference": 0.1,
                "ci_low": 0.0, "ci_high": 0.2, "answers_digest": digest}

    def results(*answers: str) -> dict:
        rows = [paired(kind, "student - base", kind[0]) for kind in answers]
        if len(answers) == 2:
            rows.append(paired("as written", "student - format-only student", "a/p"))
        return {"corpus": {"split": "final"}, "reference_teacher": "t", **run,
                "runs": [{**tag(kind), "task": "i2b2", "model": "distilled"} for kind in answers],
                "teacher_precision": [{**tag(kind), "question_type": "all", "precision": 1.0} for kind in answers],
                "arm_seconds": [{**run, **tag(kind), "seconds": 10.0 + len(kind)} for kind in answers],
                "paired": rows, "per_criterion": []}

    def logged(*writes) -> dict:
        output = tmp_path / f"log{len(writes)}.json"
        output.write_text(json.dumps({"corpus": {"split": "final"}, "reference_teacher": "t", "runs": [],
                                      "teacher_precision": [], "arm_seconds": [], "paired": [], "per_criterion": []}))
        for write in writes:
            output.write_text(json.dumps(known_answer_results.keep_earlier_arms(write, output, [])))
        return json.loads(output.read_text())

    by_arm = logged(results("as written"), results("as written", "permuted"), results("as written", "permuted"))
    at_once = logged(results("as written", "permuted"))
    for key in ("arm_seconds", "teacher_precision", "paired"):
        assert sorted(map(known_answer_results.measured, by_arm[key])) == sorted(
            map(known_answer_results.measured, at_once[key])), key
    assert [(row["answers"], row["seconds"]) for row in by_arm["arm_seconds"]] == [("as written", 20.0),
                                                                                  ("permuted", 18.0)]
    rerun = results("as written")  # the arm answered again (other answers, other seconds): logged again
    rerun["paired"][0]["answers_digest"], rerun["arm_seconds"][0]["seconds"] = "b", 30.0
    assert [row["seconds"] for row in logged(results("as written"), rerun)["arm_seconds"]] == [20.0, 30.0]


def test_baselines_compared_again_replace_their_records_on_the_dev_split(tmp_path):
    rules = lambda difference: {"teacher": "rules", "notes": None, "filters": "none", "answers": "as written",  # noqa: E731
                                "seed": None, "task": "i2b2", "comparison": "rules - base", "difference": difference,
                                "ci_low": 0.0, "ci_high": 0.5}
    output = tmp_path / "known_answer.json"
    output.write_text(json.dumps({"corpus": {"split": "dev"}, "runs": [], "teacher_precision": [], "arm_seconds": [],
                                  "paired": [rules(0.2)], "per_criterion": []}))
    now = {"corpus": {"split": "dev"}, "runs": [], "teacher_precision": [], "arm_seconds": [], "paired": [rules(0.3)],
           "per_criterion": []}
    merged = known_answer_results.keep_earlier_arms(now, output, [known_answer_arms.Arm("reference", 4, seed=1)])
    assert [row["difference"] for row in merged["paired"]] == [0.3]
    assert [(row["teacher"], row["seeds"], row["mean_difference"]) for row in merged["over_seeds"]] == [("rules", 1, 0.3)]


def test_a_corpus_written_before_splits_is_the_dev_split(tmp_path):
    (tmp_path / "corpus.json").write_text(json.dumps({"seed": 7, "patients": 12}))
    with pytest.raises(InputError, match="holds the dev split's held-out patients, not final's"):
        known_answer.main(corpus=str(tmp_path), split="final", arms="reference:4", patients=12)
    assert sorted(path.name for path in tmp_path.iterdir()) == ["corpus.json"]


def test_each_answer_row_belongs_to_its_patient_and_the_curves_are_drawn(tmp_path):
    stats = known_answer_stats

    assert stats.patient_of(pd.DataFrame({"id": ["120-ABDOMINAL"], "patient": ["0120"]}), "i2b2").tolist() == ["0120"]
    assert stats.patient_of(pd.DataFrame({"id": ["980001-DS-1-afib"], "note_id": ["980001-DS-1"]}),
                            "apixaban").tolist() == ["980001"]
    assert stats.patient_of(pd.DataFrame({"id": ["8000000-0", "8000000-11"]}), "annotated-synthetic").tolist() == [
        "8000000", "8000000"]
    assert [stats.precision_axis(name) for name in ("reference", "reference@0.8", "text-only", "self")] == [
        1.0, 0.8, None, None]
    rows = [{"teacher": teacher, "notes": notes, "filters": "none", "answers": "as written", "seed": seed,
             "task": task, "comparison": "student - base", "difference": 0.1 * seed}
            for task in known_answer_stats.TASKS for seed in (1, 2)
            for teacher, notes in (("reference", 300), ("reference@0.8", 300), ("text-only", 300), ("reference", 30),
                                   ("reference", 100))]
    written = stats.write_figures(rows, tmp_path, "grid")
    assert [path.name for path in written] == ["grid_precision.png", "grid_size.png"]
    assert all(path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for path in written)
    assert stats.write_figures([row for row in rows if row["notes"] == 30], tmp_path / "one", "grid") == []


def test_an_erring_teachers_student_is_compared_with_the_reference_teachers_of_its_size_and_seed():
    """Each student is compared over patients with its format-only twin and, for a teacher other than the
    reference, with the reference teacher's student of the same size and seed, where that arm is in the run."""
    Arm = known_answer_arms.Arm
    reference, permuted = Arm("reference", 300, seed=2), Arm("reference", 300, permuted=True, seed=2)
    erring, text_only = Arm("reference@0.8", 300, seed=2), Arm("text-only", 300, seed=2)
    other_seed, other_size = Arm("reference", 300, seed=3), Arm("reference", 100, seed=2)
    run = [reference, permuted, erring, text_only, other_seed, other_size]
    compared = known_answer_arms.compared_with
    assert compared(reference, run) == [(permuted, "student - format-only student")]
    assert compared(erring, run) == [(reference, "student - reference-teacher student")]
    assert compared(text_only, [text_only, other_seed, other_size]) == []  # no reference arm of its size and seed
    assert compared(permuted, run) == [] and compared(Arm("text-only", 300, filtered=True, seed=2), run) == []
    assert compared(Arm("text-only", 300, permuted=True, seed=2), run) == []
    partners = known_answer_arms.comparison_partners
    assert partners(reference, run) == [permuted, erring, text_only]
    assert partners(permuted, run) == [reference] and partners(text_only, run) == [reference]
    assert partners(other_seed, run) == [] and partners(reference, [reference]) == []


def test_collect_pairs_each_student_with_the_students_it_is_compared_with(tmp_path, monkeypatch):
    """collect's paired records: student - base for every arm, and each comparison of compared_with, the first
    model the arm's own student and the second its partner's (scoring faked: which answers meet is the point)."""
    Arm = known_answer_arms.Arm
    arms = [Arm("reference", 30, seed=2), Arm("reference", 30, permuted=True, seed=2),
            Arm("reference@0.8", 30, seed=2), Arm("text-only", 30, seed=3)]
    for arm in arms:
        root = known_answer_arms.arm_root(tmp_path, arm)
        write_csv(pd.DataFrame([summary_row("base", 0.5, 0.4, 0.6), summary_row("distilled", 0.8, 0.7, 0.9)]),
                  layout.evaluation_dir(root, "i2b2", known_answer_stats.RUN) / "summary.csv")
    stats = known_answer_results.stats
    monkeypatch.setattr(stats, "scored_answers", lambda root, task, model: pd.DataFrame({"who": [
        f"{root.name}/{model}"]}))
    monkeypatch.setattr(stats, "answers_digest", lambda root, task, *models: "d")
    monkeypatch.setattr(stats, "compare", lambda first, second, task, resamples, seed: {
        "difference": 0.1, "ci_low": 0.0, "ci_high": 0.2, "first_is": first["who"][0], "second_is": second["who"][0]})
    monkeypatch.setattr(stats, "criterion_rows", lambda student, base, task: [])
    paired = known_answer_results.collect(tmp_path, arms)["paired"]
    met = [(row["teacher"], row["answers"], row["comparison"], row["first_is"], row["second_is"]) for row in paired]
    assert met == [
        ("reference", "as written", "student - base", "reference-30-seed2/distilled", "reference-30-seed2/base"),
        ("reference", "as written", "student - format-only student", "reference-30-seed2/distilled",
         "reference-30-permuted-seed2/distilled"),
        ("reference", "permuted", "student - base", "reference-30-permuted-seed2/distilled",
         "reference-30-permuted-seed2/base"),
        ("reference@0.8", "as written", "student - base", "reference@0.8-30-seed2/distilled",
         "reference@0.8-30-seed2/base"),
        ("reference@0.8", "as written", "student - reference-teacher student", "reference@0.8-30-seed2/distilled",
         "reference-30-seed2/distilled"),
        ("text-only", "as written", "student - base", "text-only-30-seed3/distilled", "text-only-30-seed3/base")]
