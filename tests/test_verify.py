"""Re-answer verification (synthetic-b2-verify.py) and stage C's filter on it."""

import json

import pandas as pd
import pytest

from clinical_distil import layout, post_process, verify
from clinical_distil.evaluate import read_model_outputs
from clinical_distil.files import InputError, read_csv
from clinical_distil.metrics import extract_answer, same_answer
from clinical_distil.create import read_chunks

from conftest import make_stage_a_outputs, run_script

SCRIPT = "a-generate-synthetic-training-data/synthetic-b2-verify.py"


def reply(answer):
    return json.dumps({"question": "q", "type": "t", "answer": answer, "section": "s", "source": "x"})


def test_judge_compares_answers_as_the_metrics_do():
    answered = pd.DataFrame({"id": list("abcde"), "note_id": "1", "question_type": "numeric",
                             "item_index": range(5), "question": "q",
                             "teacher_answer": ["1.4", "Yes", "NA", "No", "210000"],
                             "output": [reply("1.40 mg/dL"), reply("yes"), reply("NA"), "garbled", reply("210,000")],
                             "finish_reason": "stop"})
    judged = verify.judge(answered, "verifier-x")
    assert list(judged["verifier_answer"]) == ["1.4", "Yes", "NA", "", "210000"]
    assert list(judged["verifier_agrees"]) == [True, True, True, False, True]


def test_verifier_reasoning_and_empty_answers():
    """A reasoning verifier's drafts are not its answer; an answer cut to nothing agrees with nothing, not even
    the teacher's NA."""
    outputs = [f"<think>\nDraft: {reply('NA')}\nNo, it is listed.\n</think>\n{reply('Yes')}",
               f"<thinking>{reply('Yes')}</thinking>{reply('NA')}",
               f"<think>\nThe note says {reply('NA')}", '{"question": "q", "answer": "', reply(""), reply("\u00a0")]
    answered = pd.DataFrame({"id": list("abcdef"), "note_id": "1", "question_type": "na-bool", "item_index": range(6),
                             "question": "q", "teacher_answer": ["Yes", "NA", "NA", "NA", "NA", "NA"],
                             "output": outputs, "finish_reason": ["stop", "stop", "length", "stop", "stop", None]})
    judged = verify.judge(answered, "reasoning-verifier")
    assert list(judged["verifier_answer"]) == ["Yes", "NA", "", "", "", ""]
    assert list(judged["verifier_agrees"]) == [True, True, False, False, False, False]


@pytest.fixture()
def stage_b_root(tmp_path):
    notes_path, chunks = make_stage_a_outputs(tmp_path)
    items, failures, _ = post_process.parse_chunks(read_chunks(chunks))
    items = post_process.quality_checks(post_process.join_notes(post_process.normalize_items(items), read_csv(notes_path)))
    summary = post_process.stage_b_summary(items, items, {}, {"model_id": "reference"})
    post_process.write_stage_b(items, failures, layout.raw_dir(tmp_path), summary=summary)
    return tmp_path, items


def test_verifier_answers_every_item_and_stage_c_filters_on_it(stage_b_root, tiny_model_dir):
    root, items = stage_b_root
    raw = layout.raw_dir(root)
    refused = run_script(SCRIPT, "--data_dir", str(root))
    assert refused.returncode == 2 and "written by the reference teacher" in refused.stderr
    result = run_script(SCRIPT, "--data_dir", str(root), "--model_id", str(tiny_model_dir), "--max_output_tokens", "8",
                        "--num_items", "12")
    assert result.returncode == 0, result.stderr[-3000:]
    table = read_csv(layout.verification_file(raw), keep_default_na=False, dtype={"note_id": str})
    assert len(table) == 12 and list(table.columns) == verify.COLUMNS
    assert set(table["verifier"]) == {str(tiny_model_dir)}
    outputs = read_model_outputs(layout.verification_dir(raw, tiny_model_dir.name), layout.VERIFY_INPUT)
    expected = [extract_answer(output, reason) for output, reason in zip(outputs["output"], outputs["finish_reason"])]
    assert list(table["verifier_agrees"].astype(str) == "True") == [
        answer is not None and same_answer(answer, teacher) for answer, teacher in zip(expected, table["teacher_answer"])]
    again = run_script(SCRIPT, "--data_dir", str(root), "--model_id", str(tiny_model_dir), "--num_items", "12")
    assert again.returncode == 2 and "pass --overwrite True" in again.stderr

    # stage C: every verified item carries the verdict; with require_verified only agreed ones stay
    joined = verify.join_verification(items, raw)
    assert joined["verifier_agrees"].notna().sum() == 12
    with pytest.raises(InputError, match="no verdict for"):
        verify.join_verification(items, raw, required=True)  # 12 of the items were verified
    first = items.head(12)
    kept, summary = verify.apply_verification(first, raw, required=True)
    agreed = int((table["verifier_agrees"].astype(str) == "True").sum())
    assert summary == {"verified": 12, "agree": agreed, "applied": True, "removed": 12 - agreed} and len(kept) == agreed
    _, reported = verify.apply_verification(first, raw)
    assert reported["removed"] == 0 and not reported["applied"]


def test_stage_c_without_a_verification(tmp_path):
    items = pd.DataFrame({"note_id": [1], "question_type": ["yes_no"], "item_index": [0]})
    assert verify.apply_verification(items, tmp_path) == (items, None)
    with pytest.raises(InputError, match="run a-generate-synthetic-training-data/synthetic-b2-verify.py first"):
        verify.apply_verification(items, tmp_path, required=True)
