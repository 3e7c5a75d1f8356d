"""Stages B and C library: normalization, quality checks, join, contract files, balance, split."""

import json

import pandas as pd
import pytest
from hypothesis import given
from hypothesis import strategies as st

from clinical_distil import answers, post_process, prep_training
from clinical_distil.files import InputError, read_csv
from clinical_distil.create import read_chunks

from conftest import make_stage_a_outputs


@pytest.mark.parametrize("raw, expected", [
    ("Yes", "Yes"), ("yes.", "Yes"), (" NO ", "No"), (True, "Yes"), ("N/A", "NA"), ("Not Available", "NA"),
    ("not in note", "NA"), ("Not mentioned", "NA"), (None, "NA"), ("", "NA"), ("1.40", "1.4"), ("1.4 mg/dL", "1.4"),
    ("98", "98"), (2.1, "2.1"), (7, "7"), ("55%", "55"), ("120 mmHg", "120"), ("3 units", "3"),
    ("Sinus rhythm", "Sinus rhythm"), ("1.2-1.4", "1.2-1.4"),
    # thousands separators, units, trailing punctuation, signs, scientific notation
    ("210,000", "210000"), ("1,234.50", "1234.5"), ("210,000/uL", "210000"), ("7.5 %.", "7.5"), ("-2.5", "-2.5"),
    ("+3", "3"), (".5", "0.5"), ("98.6 °F", "98.6"), ("45 mL/min/1.73m2", "45"), ("12 K/uL", "12"),
    ("1.4 mg/dL.", "1.4"), ("2.1)", "2.1"), ("1e3", "1000"), (1234567.0, "1234567"), ("nan", "NA"),
    # not one number: kept as written
    ("120/80", "120/80"), ("2 to 3", "2 to 3"), ("1,2", "1,2"), ("<0.01", "<0.01"), ("5 mg twice daily", "5 mg twice daily"),
])
def test_normalize_answer(raw, expected):
    assert answers.normalize_answer(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    (7, 7), ("7", 7), (7.0, 7), ("7/10", 7), (" 3 ", 3), (0, None), (11, None), ("hard", None), (None, None),
    (6.5, None), (True, None),
])
def test_normalize_difficulty(raw, expected):
    assert post_process.normalize_difficulty(raw) == expected


NOTE = "Pertinent Results:\n[**2150-3-4**] 06:40AM BLOOD Glucose-131 Creat-2.1\nPlt Ct-98"


@pytest.mark.parametrize("source, match", [
    ("Glucose-131 Creat-2.1", "exact"),
    ("glucose-131   creat-2.1", "normalized"),
    ("06:40AM BLOOD Glucose-131 Creat 2.1", "fuzzy"),
    ("Patient denies chest pain at rest", "none"),
    ("not found", "not_applicable"),
])
def test_source_in_note(source, match):
    assert post_process.source_match(source, NOTE)[0] == match


def test_answer_type_agreement():
    assert answers.answer_agrees_with_type("numeric", "2.1")
    assert not answers.answer_agrees_with_type("numeric", "Yes")
    assert not answers.answer_agrees_with_type("yes_no", "98")
    assert not answers.answer_agrees_with_type("na-bool", "No")
    assert answers.answer_agrees_with_type("na-numeric", "NA")


def test_join_by_note_id_with_two_notes_on_one_admission():
    notes = pd.DataFrame([{"subject_id": 1, "hadm_id": 10, "note_id": 100, "text": "first note"},
                          {"subject_id": 1, "hadm_id": 10, "note_id": 101, "text": "second note"}])
    items = pd.DataFrame([{"note_id": 101, "subject_id": 1, "hadm_id": 10, "question": "Q1"},
                          {"note_id": 100, "subject_id": 1, "hadm_id": 10, "question": "Q2"},
                          {"note_id": 999, "subject_id": 1, "hadm_id": 10, "question": "orphan"}])
    joined = post_process.join_notes(items, notes)
    assert joined[["question", "text"]].values.tolist() == [["Q1", "second note"], ["Q2", "first note"]]


@pytest.fixture(scope="module")
def stage_b(tmp_path_factory):
    root = tmp_path_factory.mktemp("b")
    notes_path, chunks_dir = make_stage_a_outputs(root)
    items, failures, replies = post_process.parse_chunks(read_chunks(chunks_dir))
    items = post_process.normalize_items(items)
    items = post_process.quality_checks(post_process.join_notes(items, read_csv(notes_path)))
    return root, items, failures, replies


def test_parse_keeps_items_and_lists_failures(stage_b):
    _, items, failures, _ = stage_b
    assert sorted(failures["reason"]) == ["empty", "no_json"] and set(failures["level"]) == {"reply"}
    # 12 notes x 5 questions = 60; lost: the empty yes/no reply (2), the refusal (1) and the
    # second item of the reply cut mid-list (1): the cut-off reply keeps its complete first item
    assert len(items) == 56
    assert items.groupby("question_type").size().to_dict() == {"na-bool": 11, "na-numeric": 12, "numeric": 12,
                                                               "yes_no": 21}
    assert set(items["question_type"]) == {"yes_no", "numeric", "na-numeric", "na-bool"}
    assert set(items.loc[items["question_type"].str.startswith("na-"), "answer"]) == {"NA"}
    assert items["answer_type_ok"].all()
    assert (items.loc[items["question_type"] == "numeric", "source_match"] != "not_applicable").all()


def test_reply_counts_per_type(stage_b):
    _, items, failures, replies = stage_b
    counts = post_process.reply_counts(replies, items, failures)
    zero = {"empty_lists": 0, "placeholder_items": 0, "reasoning": 0, "mend_limit": 0}
    assert counts.loc[["yes_no", "numeric", "na-bool"]].to_dict("index") == {
        "yes_no": {"replies": 12, "retried": 1, "cut_by_length": 1, "failed": 1, "items": 21, "repaired_items": 5,
                   **zero},
        "numeric": {"replies": 12, "retried": 1, "cut_by_length": 0, "failed": 0, "items": 12, "repaired_items": 3,
                    **zero},
        "na-bool": {"replies": 12, "retried": 0, "cut_by_length": 0, "failed": 1, "items": 11, "repaired_items": 3,
                    **zero}}


def test_every_outcome_is_counted_and_recorded():
    """Empty lists, placeholders, cut and broken blocks: each reply's outcome, the failure rows and the counts."""
    item = {"question": "Is the patient on aspirin?", "type": "boolean", "answer": "Yes", "section": "Discharge Medications",
            "source": "aspirin 81 mg", "difficulty": 2, "explanation": "Listed."}
    other = dict(item, question="Does the patient smoke?", answer="No")
    replies = [  # (question type, reply, finish reason, attempts)
        ("numeric", "[]", "stop", 1),
        ("numeric", "```json\n[]\n```", "stop", 2),
        ("yes_no", json.dumps([item, {"question": "...", "answer": "Yes"}, {"question": "<question>"}]), "stop", 1),
        ("yes_no", f"```json\n[{json.dumps(item)},]\n```\n```json\n[{json.dumps(other)}]\n```", "stop", 1),
        ("yes_no", json.dumps([{"question": "text>"}]), "stop", 3),
        ("na-bool", json.dumps([item])[:40], "length", 3),
        ("na-bool", '{"answer": "No"}', "stop", 1),
    ]
    chunks = pd.DataFrame([{"note_id": index, "subject_id": 1, "hadm_id": 2, "question_type": kind, "output": text,
                            "finish_reason": finish, "attempts": attempts}
                           for index, (kind, text, finish, attempts) in enumerate(replies)])
    items, failures, outcomes = post_process.parse_chunks(chunks)
    assert outcomes["outcome"].tolist() == ["empty_list", "empty_list", "items", "items", "placeholder", "truncated",
                                            "wrong_shape"]
    assert items["question"].tolist() == [item["question"], item["question"], other["question"]]
    assert items["repaired"].tolist() == [False, True, True]
    assert failures[["note_id", "level", "reason"]].values.tolist() == [
        [2, "item", "placeholder"], [2, "item", "placeholder"], [4, "reply", "placeholder"],
        [4, "item", "placeholder"], [5, "reply", "truncated"], [6, "reply", "wrong_shape"]]
    assert json.loads(failures["output"].iloc[1]) == {"question": "<question>"}
    counts = post_process.reply_counts(outcomes, items, failures)
    none = {"reasoning": 0, "mend_limit": 0}
    assert counts.to_dict("index") == {
        "na-bool": {"replies": 2, "retried": 1, "cut_by_length": 1, "failed": 2, "empty_lists": 0, "items": 0,
                    "repaired_items": 0, "placeholder_items": 0, **none},
        "numeric": {"replies": 2, "retried": 1, "cut_by_length": 0, "failed": 0, "empty_lists": 2, "items": 0,
                    "repaired_items": 0, "placeholder_items": 0, **none},
        "yes_no": {"replies": 3, "retried": 1, "cut_by_length": 0, "failed": 1, "empty_lists": 0, "items": 3,
                   "repaired_items": 2, "placeholder_items": 3, **none}}


def test_contract_files_and_combos(stage_b, tmp_path):
    _, items, failures, _ = stage_b
    written = post_process.write_stage_b(items, failures, tmp_path)
    names = {path.name for path in written}
    assert {"synth_all_df.csv", "parse_failures.csv", "synth_bool_1_df.csv.gz", "synth_bool_num_9_df.csv.gz"} <= names
    assert len(names) == 2 + 3 * 9
    all_1 = pd.read_csv(tmp_path / "synth_all_1_df.csv.gz")
    bool_1 = pd.read_csv(tmp_path / "synth_bool_1_df.csv.gz")
    all_6 = pd.read_csv(tmp_path / "synth_all_6_df.csv.gz")
    assert set(bool_1["question_type"]) == {"yes_no"} and len(all_1) == items["difficulty"].notna().sum()
    assert all_6["difficulty"].min() >= 6 and len(all_6) == (items["difficulty"] >= 6).sum()
    with pytest.raises(InputError, match="exists"):
        post_process.write_stage_b(items, failures, tmp_path)
    with pytest.raises(InputError, match="unknown combo"):
        post_process.combo_frame(items, "numeric_only", 1)


def test_balance_split_and_datasets(stage_b, tmp_path):
    _, items, _, _ = stage_b
    balanced = prep_training.balance(items, seed=1)
    counts = balanced["question_type"].value_counts()
    assert counts.nunique() == 1 and counts.iloc[0] == items["question_type"].value_counts().min()
    assert prep_training.balance(items, seed=1).equals(balanced)
    hardest = prep_training.balance(items, per_type=3, hardest=True)
    for question_type, group in hardest.groupby("question_type"):
        pool = items[items["question_type"] == question_type]["difficulty"].sort_values(ascending=False)
        assert sorted(group["difficulty"], reverse=True) == pool.head(3).tolist()
    examples = prep_training.format_examples(balanced)
    target = json.loads(examples["output"].iloc[0].removeprefix("```json\n").removesuffix("\n```"))
    assert list(target) == ["question", "type", "answer", "section", "source", "explanation"]
    assert examples["prompt"].iloc[0][1]["content"].count("Question: ") == 1
    no_support = prep_training.format_examples(balanced, support=False)
    assert list(json.loads(no_support["output"].iloc[0][8:-4])) == ["question", "type", "answer", "section"]
    train, test = prep_training.split(examples, seed=42)
    assert set(train["subject_id"]).isdisjoint(test["subject_id"]) and len(train) + len(test) == len(examples)
    again_train, _ = prep_training.split(examples, seed=42)
    assert again_train["id"].tolist() == train["id"].tolist()
    written = prep_training.write_datasets(train, test, tmp_path, "all_1")
    from datasets import load_from_disk

    loaded = load_from_disk(str(written["train"]))
    assert loaded.column_names == prep_training.DATASET_COLUMNS and len(loaded) == len(train)
    assert loaded[0]["prompt"][0]["role"] == "system"
    assert len(pd.read_csv(tmp_path / "test_all_1.csv.gz")) == len(test)


def test_bad_stage_b_input_says_what_to_run(tmp_path):
    with pytest.raises(InputError, match=r"no stage A chunk files .*synthetic-a-create.py"):
        read_chunks(tmp_path / "synthetic-output" / "5")
    chunks = tmp_path / "chunks"
    chunks.mkdir()
    pd.DataFrame({"note_id": [1], "output": ["[]"]}).to_csv(chunks / "df_yes_no_0_1.csv", index=False)
    with pytest.raises(InputError, match=r"df_yes_no_0_1.csv lacks column\(s\) subject_id"):
        read_chunks(chunks)
    empty = pd.DataFrame(columns=post_process.ITEM_COLUMNS)
    with pytest.raises(InputError, match="no item survived"):
        post_process.write_stage_b(empty, pd.DataFrame(), tmp_path / "raw")
    assert not (tmp_path / "raw").exists()


def test_near_duplicate_questions():
    questions = ["What was the highest creatinine?", "What was the lowest creatinine?",
                 "what was the HIGHEST creatinine", "Was the highest creatinine what?", "Is the patient on aspirin?",
                 "Is the patient on aspirin?"]
    assert post_process.near_duplicates(questions) == [False, False, True, True, False, True]
    assert post_process.near_duplicates(["Only one?"]) == [False] and post_process.near_duplicates([]) == []


@given(st.lists(st.text(alphabet="abcdefgh", min_size=2, max_size=8), min_size=2, max_size=8), st.randoms())
def test_a_reordered_question_is_always_a_near_duplicate(words, random):
    shuffled = list(words)
    random.shuffle(shuffled)
    assert post_process.near_duplicates([" ".join(words) + "?", " ".join(shuffled).upper()]) == [False, True]


def test_filter_summary_counts_what_each_filter_flags_and_removes():
    items = pd.DataFrame({
        "note_id": [1, 1, 1, 1, 2],
        "question_type": ["yes_no", "yes_no", "na-bool", "numeric", "numeric"],
        "question": ["Is he on aspirin?", "Is he on aspirin?", "Does he smoke?", "Highest creatinine?",
                     "Highest creatinine?"],
        "source_match": ["exact", "none", "not_applicable", "none", "fuzzy"],
        "source_in_note": [True, False, False, False, True],
        "answer_type_ok": [True, True, True, False, True],
        "duplicate_question": [False, True, False, False, False],
        "near_duplicate_question": [False, True, False, False, False],
    })
    summary = post_process.filter_summary(items, {"require_source_in_note": True, "drop_near_duplicates": True})
    rows = {row["filter"]: (row["applied"], row["flagged"], row["removed"], row["removed_only_by_it"])
            for row in summary.to_dict("records")}
    assert rows == {"require_source_in_note": (True, 2, 2, 1), "require_answer_type": (False, 1, 0, 0),
                    "drop_duplicates": (False, 1, 0, 0), "drop_near_duplicates": (True, 1, 1, 0),
                    "all applied": (True, 2, 2, 2)}
    kept = post_process.apply_filters(items, require_source_in_note=True, drop_near_duplicates=True)
    assert len(items) - len(kept) == rows["all applied"][2]
    assert post_process.filter_summary(items, {})["removed"].sum() == 0


def test_stage_b_summary_is_written_with_the_items_and_read_by_the_card(stage_b, tmp_path):
    _, items, failures, _ = stage_b
    kept = post_process.apply_filters(items, drop_duplicates=True)
    summary = post_process.stage_b_summary(items, kept, {"drop_duplicates": True}, {"model_id": "teacher-x"})
    written = post_process.write_stage_b(kept, failures, tmp_path, summary=summary)
    assert tmp_path / "stage_b.json" in written
    stored = prep_training.read_stage_b_summary(tmp_path)
    assert (stored["items_checked"], stored["items_kept"]) == (len(items), len(kept))
    removed = next(row for row in stored["filters"] if row["filter"] == "drop_duplicates")["removed"]
    assert removed == int(items["duplicate_question"].sum()) == len(items) - len(kept)
    assert stored["distinct_questions"] == items["question"].str.lower().str.split().str.join(" ").nunique()


def test_dataset_card_counts_are_the_datasets_counts(stage_b, tmp_path):
    import yaml

    _, items, failures, _ = stage_b
    summary = post_process.stage_b_summary(items, items, {}, {"model_id": "teacher-x", "engine": "vllm",
                                                             "questions_per_type": 5, "sampling": {"temperature": 0.7}})
    balanced = prep_training.balance(items, seed=1)
    train, test = prep_training.split(prep_training.format_examples(balanced), seed=42)
    overlap = {"checked": {"apixaban": "raw/apixaban"}, "evaluation_notes": 8, "training_notes": 12, "ngram": 13,
               "share": 0.6, "leaks": []}
    card = prep_training.dataset_card("all_1", train, test, balanced, summary, {"input_file": "all", "seed": 42},
                                      overlap, {"verified": 40, "agree": 31, "applied": True, "removed": 9})
    written = prep_training.write_datasets(train, test, tmp_path, "all_1", card=card)
    text = (tmp_path / "all_1_dataset_card.md").read_text()
    assert written["train"].exists() and text == card
    header = yaml.safe_load(text.split("---\n")[1])
    assert header["task_categories"] == ["question-answering"] and header["size_categories"] == ["n<1K"]
    assert f"{len(train)} training and {len(test)} test examples" in text
    for question_type in balanced["question_type"].unique():
        line = next(line for line in text.splitlines() if line.startswith(f"| {question_type} |"))
        assert line == (f"| {question_type} | {int((train['question_type'] == question_type).sum())} | "
                        f"{int((test['question_type'] == question_type).sum())} |")
    assert f"| all | {len(train)} | {len(test)} |" in text
    difficulty_rows = [line for line in text.split("Per teacher-rated difficulty")[1].split("## Teacher")[0]
                       .splitlines() if line.startswith("| ") and not line.startswith("| difficulty")]
    assert sum(int(line.split(" | ")[1]) for line in difficulty_rows) == len(train)
    assert "- teacher: teacher-x (vllm engine)" in text and "| drop_near_duplicates |" in text
    assert "## Protected health information" in text
    assert ("The 12 training notes were checked against 8 notes of apixaban (same patient, or at least 60% of the "
            "shorter note's 13-word sequences shared): none overlap.") in text
    assert ("the verifier gave the teacher's answer for 31 of 40 items; 9 items it disagreed with were removed "
            "(require_verified).") in text


ITEM = {"question": "Is the patient on aspirin?", "type": "boolean", "answer": "Yes", "section": "Discharge Medications",
        "source": "aspirin 81 mg", "difficulty": 2, "explanation": "Listed."}
DRAFT = dict(ITEM, question="Draft: is the patient on warfarin?", answer="Maybe")
JUNK = '{"note": "not a question",}'  # a block that needs mending and holds no question


def test_reasoning_replies_and_replies_read_in_part_are_counted():
    """A reasoning block is skipped and counted; a reply read only in part keeps its items and records the rest."""
    later = dict(ITEM, question="Is the patient on a statin?")
    replies = [  # (question type, reply, finish reason)
        ("yes_no", f"<think>\nA first draft: {json.dumps([DRAFT])}\nBetter:\n</think>\n{json.dumps([ITEM])}", "stop"),
        ("yes_no", f"<think>\nDrafting {json.dumps([DRAFT])[:-1]}", "length"),  # cut inside its reasoning
        ("numeric", f"{json.dumps([ITEM])}\n" + "\n".join([JUNK] * 33) + f"\n{json.dumps([later])}", "stop"),
        ("numeric", "\n".join([JUNK] * 33) + f"\n{json.dumps([later])}", "stop"),
        ("numeric", "[\n// the questions\n" + ",\n".join(repr(dict(ITEM, question=f"Was dose {index} given?"))
                                                        for index in range(40)) + "\n]", "stop"),
    ]
    chunks = pd.DataFrame([{"note_id": index, "subject_id": 1, "hadm_id": 2, "question_type": kind, "output": text,
                            "finish_reason": finish, "attempts": 1}
                           for index, (kind, text, finish) in enumerate(replies)])
    items, failures, outcomes = post_process.parse_chunks(chunks)
    assert outcomes[["outcome", "items", "reasoning", "incomplete"]].values.tolist() == [
        ["items", 1, True, ""], ["truncated", 0, True, ""], ["items", 1, False, "mend_limit"],
        ["mend_limit", 0, False, "mend_limit"], ["items", 40, False, ""]]
    assert items.groupby("note_id").size().to_dict() == {0: 1, 2: 1, 4: 40}
    assert not items["question"].str.startswith("Draft").any()
    assert failures[["note_id", "level", "reason"]].values.tolist() == [
        [1, "reply", "truncated"], [2, "item", "mend_limit"], [3, "reply", "mend_limit"]]
    assert failures["output"].iloc[1] == f"{JUNK}\n{json.dumps([later])}"  # the rest that was not read
    counts = post_process.reply_counts(outcomes, items, failures)
    assert counts[["replies", "reasoning", "failed", "mend_limit", "items"]].to_dict("index") == {
        "numeric": {"replies": 3, "reasoning": 0, "failed": 1, "mend_limit": 2, "items": 41},
        "yes_no": {"replies": 2, "reasoning": 2, "failed": 1, "mend_limit": 0, "items": 1}}


def test_stage_b_counts_reasoning_replies_in_its_files(tmp_path):
    """The stage B notebook on stage A files where one reply opens with a reasoning block full of drafts."""
    import papermill

    from clinical_distil.files import write_csv
    from conftest import REPO

    make_stage_a_outputs(tmp_path)
    chunk = next((tmp_path / "synthetic-output" / "12").glob("df_yes_no_*.csv"))
    frame = pd.read_csv(chunk)
    frame.loc[0, "output"] = (f"<think>\nDrafts: {json.dumps([DRAFT])}\nNo, the note supports these.\n</think>\n"
                              + frame.loc[0, "output"])
    write_csv(frame, chunk)
    folder = REPO / "a-generate-synthetic-training-data"
    name = "synthetic-b-post_process_join_notes.ipynb"
    papermill.execute_notebook(str(folder / name), str(tmp_path / name), parameters={"data_dir": str(tmp_path),
                               "dataset": "12"}, kernel_name="python3", cwd=str(folder), progress_bar=False)
    raw = tmp_path / "synthetic-raw"
    counts = pd.read_csv(raw / "replies_by_type.csv").set_index("question_type")
    assert counts["reasoning"].to_dict() == {"na-bool": 0, "na-numeric": 0, "numeric": 0, "yes_no": 1}
    assert counts.loc["yes_no", "items"] == 21  # as without the block: its drafts are not items
    kept = pd.read_csv(raw / "synth_all_df.csv")
    assert len(kept) == 56 and not kept["question"].str.startswith("Draft").any()
    assert sorted(pd.read_csv(raw / "parse_failures.csv")["reason"]) == ["empty", "no_json"]


def test_permuted_answers_keep_each_types_answers_and_nothing_else():
    """The format-only baseline: each type's answers shuffled among its items (seeded), every other column as it
    was, and its training set named apart ('permuted')."""
    items = pd.DataFrame({"question_type": ["yes_no"] * 6 + ["numeric"] * 4,
                          "question": [f"q{index}" for index in range(10)],
                          "answer": ["Yes", "Yes", "Yes", "No", "No", "No", "1.5", "7", "120", "0.9"],
                          "source": [f"s{index}" for index in range(10)]})
    permuted = prep_training.permute_answers(items, seed=5)
    assert permuted.drop(columns="answer").equals(items.drop(columns="answer"))
    for question_type, rows in items.groupby("question_type"):
        assert sorted(permuted.loc[rows.index, "answer"]) == sorted(rows["answer"])
    assert permuted["answer"].tolist() != items["answer"].tolist()
    assert prep_training.permute_answers(items, seed=5).equals(permuted)
    assert not prep_training.permute_answers(items, seed=6).equals(permuted)
    # over many seeds, a numeric item keeps its own answer about as often as chance (1 in 4)
    kept = sum(prep_training.permute_answers(items, seed=seed).loc[6, "answer"] == "1.5" for seed in range(400))
    assert 60 <= kept <= 140
    from clinical_distil import layout

    assert layout.variant_name(permute_answers=True) == "permuted"
    assert layout.variant_name(per_type=5, permute_answers=True) == "per5-permuted"
