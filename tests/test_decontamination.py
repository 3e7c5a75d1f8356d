"""Evaluation leakage: training notes and patients found in the evaluation sets (stage C's check)."""

import pandas as pd
import pytest

from clinical_distil import decontamination, extract, prep_training
from clinical_distil.files import InputError

from conftest import SAMPLES

SAMPLE_EVAL = {"annotated-synthetic": SAMPLES / "annotated-synthetic", "i2b2": SAMPLES / "n2c2-2018-track1",
               "apixaban": SAMPLES / "apixaban"}


def sample_training_notes() -> pd.DataFrame:
    notes, _ = extract.read_notes(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz")
    return notes.rename(columns={"patient": "subject_id"})[["note_id", "subject_id", "text"]]


def test_shingles():
    assert decontamination.shingles("") == set()
    assert len(decontamination.shingles("one two three")) == 1  # shorter than 13 words: one n-gram
    text = " ".join(f"w{index}" for index in range(20))
    assert len(decontamination.shingles(text)) == 8
    assert decontamination.shingles(text.upper() + "!") == decontamination.shingles(text)


def test_copies_excerpts_edits_and_patients_are_leaks_and_template_siblings_are_not():
    evaluation = decontamination.evaluation_notes(SAMPLE_EVAL)
    assert set(evaluation["task"]) == set(SAMPLE_EVAL) and len(evaluation) == 38
    training = sample_training_notes()
    assert decontamination.find_leaks(training, evaluation) == []  # one generator's notes, different patients
    source = evaluation[evaluation["task"] == "apixaban"].iloc[0]
    words = source["text"].split()
    edited = " ".join("EDITED" if index % 40 == 0 else word for index, word in enumerate(words))
    planted = pd.DataFrame({"note_id": ["copy", "excerpt", "edited", "inside", "twin"],
                            "subject_id": ["1", "2", "3", "4", "30001"],
                            "text": [source["text"], " ".join(words[: len(words) // 2]), edited,
                                     "Admission note.\n" + source["text"] + "\nAddendum: seen again.", "Unrelated."]})
    leaks = {leak.note_id: leak for leak in decontamination.find_leaks(pd.concat([training, planted]), evaluation)}
    assert set(leaks) == {"copy", "excerpt", "edited", "inside", "twin"}
    assert leaks["copy"].share == 1.0 and leaks["copy"].evaluation_note == source["note"]
    assert 0.6 <= leaks["edited"].share < 0.8 and leaks["inside"].share == 1.0
    assert (leaks["twin"].reason, leaks["twin"].task) == ("patient", "annotated-synthetic")


def test_stage_c_refuses_a_leaking_training_set_unless_asked(tmp_path):
    items = sample_training_notes()
    evaluation = decontamination.evaluation_notes(SAMPLE_EVAL)
    leaking = pd.concat([items, pd.DataFrame({"note_id": ["x"], "subject_id": ["9"],
                                              "text": [evaluation.loc[0, "text"]]})])
    folders = {task: str(folder) for task, folder in SAMPLE_EVAL.items()}
    clean = prep_training.evaluation_overlap(items, tmp_path, folders)
    assert (clean["training_notes"], clean["evaluation_notes"], clean["leaks"]) == (33, 38, [])
    with pytest.raises(InputError) as refused:
        prep_training.evaluation_overlap(leaking, tmp_path, folders)
    assert str(refused.value).startswith("1 training note(s) are in the evaluation sets (note x: 100% of its 13-grams")
    assert "allow_eval_overlap=True" in str(refused.value) and "\n" not in str(refused.value)
    allowed = prep_training.evaluation_overlap(leaking, tmp_path, folders, allow=True)
    assert [leak["note_id"] for leak in allowed["leaks"]] == ["x"]
    nothing = prep_training.evaluation_overlap(items, tmp_path)  # the tasks' own folders: none under tmp_path
    assert nothing["checked"] == {} and nothing["leaks"] == []
