"""The text-only teacher (teachers/): sections, NegEx/ConText status, items in stage A's format, the answerer, and
that it reads nothing but the note text."""

import ast
import json
from pathlib import Path

import jsonschema
import pandas as pd
import pytest

from clinical_distil.default_model import DEFAULT_MODEL_DIR
from clinical_distil.engines import Sampling
from clinical_distil.prompts import ITEM_KEYS, QUESTION_TYPES, item_schema, max_questions
from conftest import REPO, SAMPLES, run_script
from teachers import lexicon
from teachers.context import assess
from teachers.questions import items_for
from teachers.reading import read_note, sections_of, sentences_of
from teachers.text_only import TEACHER_KIND, TextOnlyTeacher, answer_question, load_teacher

NOTE = """Admission Date:  [**2150-1-1**]              Discharge Date:   [**2150-1-5**]

Allergies: Penicillins

Chief Complaint:
Chest pain

History of Present Illness:
72 year old man with a history of hypertension and atrial fibrillation who presents with chest pain. He denies \
fever or shortness of breath. Possible pneumonia on outside imaging.

Past Medical History:
- Hypertension
- Atrial fibrillation
- Type 2 diabetes mellitus
- Stroke 3 years ago

Social History:
Former smoker, quit 5 years ago. Denies alcohol use.

Family History:
Mother had breast cancer.

Physical Exam:
VS: T 99.1 BP 145/90 HR 102 RR 20 O2 sat 94% RA
Lungs: clear
Ext: no edema

HOSPITAL COURSE
Troponin peaked at 0.5. Creatinine 1.4 on admission and creatinine 1.1 at discharge. Cardiac catheterization showed
no significant stenosis. Started on apixaban. If chest pain returns, call your doctor.

Pertinent Labs:
[**2150-1-1**] 06:40AM BLOOD WBC-11.2 Hgb-12.5 Plt Ct-210
[**2150-1-3**] 06:40AM BLOOD WBC-9.0 Hgb-11.9 Plt Ct-190

Discharge Medications:
1. apixaban 5 mg PO BID
2. metoprolol succinate 50 mg PO daily
3. lisinopril 20 mg PO daily
4. metformin 500 mg PO BID
"""


def discharge_summaries() -> pd.DataFrame:
    """The bundled MIMIC-III sample's discharge summaries, with stage A's note columns."""
    frame = pd.read_csv(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz")
    frame = frame[frame["CATEGORY"] == "Discharge summary"]
    return pd.DataFrame({"subject_id": frame["SUBJECT_ID"], "hadm_id": frame["HADM_ID"], "note_id": frame["ROW_ID"],
                         "text": frame["TEXT"]}).reset_index(drop=True)


@pytest.fixture(scope="module")
def teacher() -> TextOnlyTeacher:
    if not DEFAULT_MODEL_DIR.is_dir():
        pytest.skip(f"{DEFAULT_MODEL_DIR} missing (python -m clinical_distil.default_model)")
    return load_teacher(Path("notes.csv"), pd.DataFrame({"text": [NOTE]}), seed=0)


def check_items(items: list[dict], question_type: str, count: int, note: str) -> None:
    """Valid against the reply schema of the teacher prompt, every quote from the note."""
    jsonschema.validate(items, item_schema(question_type, count))
    for item in items:
        assert tuple(item) == ITEM_KEYS
        assert item["type"] == ("numeric" if "numeric" in question_type else "boolean")
        if question_type.startswith("na-"):
            assert (item["answer"], item["section"], item["source"]) == ("N/A", "not found", "not found")
        else:
            assert item["source"] in note and item["section"]
        if question_type == "numeric":
            assert item["answer"] in note and float(item["answer"]) >= 0


# --- sections and sentences ---

def test_sections_are_read_from_headings():
    found = [(section.name, NOTE[section.start:section.end].strip().splitlines()[0]) for section in sections_of(NOTE)]
    assert found == [
        ("Admission Date", "[**2150-1-1**]              Discharge Date:   [**2150-1-5**]"),
        ("Allergies", "Penicillins"), ("Chief Complaint", "Chest pain"),
        ("History of Present Illness", "72 year old man with a history of hypertension and atrial fibrillation who "
                                       "presents with chest pain. He denies fever or shortness of breath. Possible "
                                       "pneumonia on outside imaging."),
        ("Past Medical History", "- Hypertension"),
        ("Social History", "Former smoker, quit 5 years ago. Denies alcohol use."),
        ("Family History", "Mother had breast cancer."),
        ("Physical Exam", "VS: T 99.1 BP 145/90 HR 102 RR 20 O2 sat 94% RA"),
        ("Hospital Course", "Troponin peaked at 0.5. Creatinine 1.4 on admission and creatinine 1.1 at discharge. "
                            "Cardiac catheterization showed"),
        ("Pertinent Labs", "[**2150-1-1**] 06:40AM BLOOD WBC-11.2 Hgb-12.5 Plt Ct-210"),
        ("Discharge Medications", "1. apixaban 5 mg PO BID"),
    ]


def test_text_before_the_first_heading_is_the_header_and_sublabels_are_no_headings():
    text = "Name: ___\nPMH:\nCOPD\nLungs: wheezes\nPlan: home"
    assert [(section.name, text[section.start:section.end].strip()) for section in sections_of(text)] == [
        ("", "Name: ___"), ("PMH", "COPD\nLungs: wheezes"), ("Plan", "home")]


def test_sentences_split_at_stops_semicolons_and_list_lines_but_not_wrapped_lines():
    text = ("- Atrial fibrillation; not anticoagulated\n2. aspirin 81 mg daily\nCardiac catheterization on day two "
            "showed a tight lesion in\nthe LAD. Dr. Smith saw him.\nmetoprolol 25 mg")
    assert [text[start:end] for start, end in sentences_of(text, 0, len(text))] == [
        "Atrial fibrillation", "not anticoagulated", "aspirin 81 mg daily",
        "Cardiac catheterization on day two showed a tight lesion in\nthe LAD.", "Dr.", "Smith saw him.",
        "metoprolol 25 mg"]


# --- NegEx / ConText ---

FLAGS = ("negated", "possible", "hypothetical", "historical", "resolved", "family")
CONTEXT_CASES = [
    ("He denies chest pain.", "chest pain", {"negated"}),
    ("No evidence of pneumonia.", "pneumonia", {"negated"}),
    ("Negative for deep vein thrombosis.", "deep vein thrombosis", {"negated"}),
    ("The patient was ruled out for myocardial infarction.", "myocardial infarction", {"negated"}),
    ("Pulmonary embolism was ruled out.", "Pulmonary embolism", {"negated"}),
    ("Not a candidate for thrombolysis given time from onset.", "thrombolysis", {"negated"}),
    ("Abdomen soft without tenderness.", "tenderness", {"negated"}),
    ("No fever, but reports a productive cough.", "cough", set()),
    ("No fever, but reports a productive cough.", "fever", {"negated"}),
    ("No change in lower extremity edema.", "edema", set()),
    ("Possible pneumonia in the right lower lobe.", "pneumonia", {"possible"}),
    ("Admitted to r/o sepsis.", "sepsis", {"possible"}),
    ("Cannot exclude pulmonary embolism.", "pulmonary embolism", {"possible"}),
    ("Concern for cellulitis of the left leg.", "cellulitis", {"possible"}),
    ("Return to the ED if you develop chest pain.", "chest pain", {"hypothetical"}),
    ("Anticoagulation continued given elevated stroke risk.", "stroke", {"hypothetical"}),
    ("Anticoagulation continued given elevated stroke risk.", "Anticoagulation", set()),
    ("Referred to cardiac surgery for aortic valve replacement.", "aortic valve replacement", {"hypothetical"}),
    ("History of heroin use.", "heroin", {"historical"}),
    ("s/p pulmonary vein isolation", "pulmonary vein isolation", {"historical"}),
    ("NSTEMI 4 years ago, medically managed.", "NSTEMI", {"historical"}),
    ("Fever 3 days ago.", "Fever", set()),
    ("Upper GI bleed 6 weeks ago requiring transfusion.", "transfusion", {"historical"}),
    ("Transient atrial fibrillation in sepsis, resolved with antibiotics.", "atrial fibrillation",
     {"historical", "resolved"}),
    ("Mother had breast cancer.", "breast cancer", {"family"}),
    ("Family history of colon cancer.", "colon cancer", {"family"}),
    ("History of hypertension who presents with palpitations.", "palpitations", set()),
]


@pytest.mark.parametrize("sentence,target,expected", CONTEXT_CASES, ids=[f"{case[1]}:{case[0][:30]}"
                                                                          for case in CONTEXT_CASES])
def test_context_of_a_mention(sentence, target, expected):
    start = sentence.index(target)
    context = assess(sentence, start, start + len(target))
    assert {flag for flag in FLAGS if getattr(context, flag)} == expected


def test_section_headings_are_triggers_and_relatives_are_not_the_patient():
    assert assess("Hypertension", 0, 12, "historical").historical
    assert assess("Hypertension", 0, 12, "family").family
    assert not assess("Mother had breast cancer.", 11, 24).affirmed
    assert assess("Presented in atrial fibrillation.", 13, 32).affirmed


def test_mentions_of_the_note_carry_their_context():
    reading = read_note(NOTE)
    status = {(NOTE[mention.start:mention.end], mention.section.name): {flag for flag in FLAGS
                                                                        if getattr(mention.context, flag)}
              for mention in reading.mentions}
    assert status[("fever", "History of Present Illness")] == {"negated"}
    assert status[("pneumonia", "History of Present Illness")] == {"possible"}
    assert status[("Stroke", "Past Medical History")] == {"historical"}
    assert status[("breast cancer", "Family History")] == {"family"}
    assert status[("edema", "Physical Exam")] == {"negated"}
    assert status[("Cardiac catheterization", "Hospital Course")] == set()
    assert [(value.attribute, value.value) for value in reading.values if value.kind == "lab"] == [
        ("troponin", "0.5"), ("creatinine", "1.4"), ("creatinine", "1.1"), ("wbc", "11.2"), ("hemoglobin", "12.5"),
        ("platelets", "210"), ("wbc", "9.0"), ("hemoglobin", "11.9"), ("platelets", "190")]


def test_every_name_of_the_vocabularies_means_one_concept():
    owners: dict[str, set[str]] = {}
    for concept in lexicon.ALL_CONCEPTS:
        for alias in concept.aliases:
            owners.setdefault(alias.lower(), set()).add(concept.key)
    assert {alias: keys for alias, keys in owners.items() if len(keys) > 1} == {}


# --- items ---

def test_items_of_a_hand_written_note():
    counts = {question_type: len(items_for(NOTE, question_type, 2)) for question_type in QUESTION_TYPES}
    assert counts == {"yes_no": 4, "numeric": 4, "na-numeric": 2, "na-bool": 2}
    for question_type in QUESTION_TYPES:
        check_items(items_for(NOTE, question_type, 2), question_type, 2, NOTE)
    yes_no = items_for(NOTE, "yes_no", 2)
    assert sorted(item["answer"] for item in yes_no) == ["No", "No", "Yes", "Yes"]


def test_items_are_the_same_for_the_same_seed_note_and_type():
    assert items_for(NOTE, "yes_no", 5, seed=3) == items_for(NOTE, "yes_no", 5, seed=3)
    seeds = {json.dumps(items_for(NOTE, "numeric", 5, seed=seed)) for seed in range(6)}
    assert len(seeds) > 1


def test_fewer_items_rather_than_guesses():
    short = "Chief Complaint:\nCough\n\nHistory of Present Illness:\nCough for two days."
    assert [item["answer"] for item in items_for(short, "yes_no", 5)] == ["Yes"]
    assert items_for(short, "numeric", 5) == []
    assert items_for("", "yes_no", 5) == [] and items_for("", "numeric", 5) == []


def test_silence_is_a_no_only_for_a_complete_medication_list_or_a_past_history():
    note = "Past Medical History:\n- Hypertension\n\nDischarge Medications:\n1. lisinopril 10 mg daily\n"
    items = items_for(note, "yes_no", 5)
    assert [item["answer"] for item in items].count("Yes") == 2
    silent = [item for item in items if item["answer"] == "No"]
    assert len(silent) == 5  # serious chronic diagnoses the past medical history lacks; one drug is no full list
    assert {item["source"] for item in silent} == {"- Hypertension"}
    assert all(item["question"].startswith("Does the patient have ") for item in silent)
    listed = note + "2. aspirin 81 mg daily\n3. atorvastatin 40 mg daily\n"
    assert {item["question"] for item in items_for(listed, "yes_no", 2) if item["answer"] == "No"} == {
        "Does the patient have HIV infection?", "Is omeprazole among the patient's discharge medications?"}


# --- the engine, over the bundled sample notes ---

def test_engine_interface(teacher):
    assert (teacher.name, teacher.needs_requests, teacher.max_model_len) == ("text-only", True, 1_000_000)
    assert teacher.manifest == {"teacher": TEACHER_KIND}
    with pytest.raises(ValueError):
        teacher.generate([[{"role": "user", "content": NOTE}]], Sampling())


def test_plugged_under_the_engine_entry_points():
    from clinical_distil.backends import plugged_engine

    assert plugged_engine("text-only") is load_teacher


def test_sample_discharge_summaries_through_generate(teacher):
    from clinical_distil.create import build_requests
    from clinical_distil.parsing import parse_reply

    notes = discharge_summaries()
    count = 5
    records, fitted = build_requests(notes, list(QUESTION_TYPES), count, None, teacher.tokenizer,
                                     teacher.max_model_len - 4096)
    requests = [{**row, "questions_per_type": count} for row in records]
    results = teacher.generate([item.messages for item in fitted], Sampling(), prompt_ids=[item.prompt_ids
                                                                                          for item in fitted],
                               requests=requests)
    assert len(results) == len(notes) * len(QUESTION_TYPES) == 140
    totals = dict.fromkeys(QUESTION_TYPES, 0)
    for request, result in zip(requests, results):
        assert result.finish_reason == "stop" and result.prompt_tokens > 0
        items = json.loads(result.text)
        parsed = parse_reply(result.text, result.finish_reason)
        assert parsed.failure is None and len(parsed.items) == len(items)
        question_type = request["question_type"]
        check_items(items, question_type, count, request["text"])
        answers = [item["answer"] for item in items]
        if question_type == "yes_no":
            assert answers.count("Yes") <= count and answers.count("No") <= count
        assert len(items) <= max_questions(question_type, count)
        for item in items:  # the answerer reads the note as the teacher does
            assert answer_question(item["question"], request["text"]) == item["answer"]
        totals[question_type] += len(items)
    assert totals == {"yes_no": 330, "numeric": 330, "na-numeric": 175, "na-bool": 175}
    again = teacher.generate([item.messages for item in fitted[:8]], Sampling(), requests=requests[:8])
    assert [result.text for result in again] == [result.text for result in results[:8]]


# --- the answerer ---

ANSWERS = [
    ("Does the patient have atrial fibrillation?", "Yes"),
    ("Does the patient have diabetes?", "Yes"),
    ("Does the patient have COPD?", "No"),  # serious, chronic, not in the past medical history
    ("Does the patient have pneumonia?", "N/A"),  # possible only
    ("Does the patient have fever?", "No"),
    ("Does the patient have edema?", "No"),
    ("Has the patient had a prior stroke?", "Yes"),
    ("Did the patient have a stroke during this admission?", "No"),
    ("Does the patient have breast cancer?", "N/A"),  # the mother's
    ("Is there a family history of breast cancer?", "Yes"),
    ("Has the patient taken aspirin?", "No"),  # a complete discharge list without it
    ("Is the patient taking apixaban?", "Yes"),
    ("Is the patient discharged on Eliquis?", "Yes"),
    ("Is the patient on an anticoagulant?", "Yes"),
    ("Is the patient on a statin?", "No"),
    ("Did the patient undergo cardiac catheterization?", "Yes"),
    ("Has the patient had a colonoscopy?", "N/A"),
    ("Does the patient currently smoke?", "No"),
    ("Has the patient ever smoked?", "Yes"),
    ("Does the patient drink alcohol?", "No"),
    ("Is the patient allergic to penicillin?", "Yes"),
    ("Is the patient allergic to sulfa?", "No"),
    ("Did the patient present with chest pain?", "Yes"),
    ("What is the patient's most recent creatinine?", "1.1"),
    ("What was the creatinine on admission?", "1.4"),
    ("What was the highest WBC?", "11.2"),
    ("What was the lowest hemoglobin?", "11.9"),
    ("What was the patient's troponin?", "0.5"),
    ("What was the patient's heart rate?", "102"),
    ("What was the systolic blood pressure?", "145"),
    ("What was the patient's hemoglobin A1c?", "N/A"),
    ("What dose of metoprolol succinate is the patient discharged on?", "50"),
    ("How many years ago did the patient quit smoking?", "5"),
    ("Is the heart rate above 100?", "Yes"),
    ("Was the creatinine ever above 2?", "No"),
    ("Has the patient received an influenza vaccine this season?", "N/A"),
]


@pytest.mark.parametrize("question,expected", ANSWERS, ids=[question for question, _ in ANSWERS])
def test_answer_question(question, expected):
    assert answer_question(question, NOTE) == expected


def test_answer_question_on_short_notes():
    assert answer_question("Has the patient taken aspirin?", "Home meds: aspirin 81 mg daily.") == "Yes"
    assert answer_question("Has the patient taken aspirin?", "Patient not on aspirin.") == "No"
    assert answer_question("Has the patient taken aspirin?", "Hypertension.") == "N/A"
    assert answer_question("Does the patient have atrial fibrillation?", "No history of atrial fibrillation.") == "No"
    assert answer_question("Does the patient have atrial fibrillation?", "r/o atrial fibrillation") == "N/A"
    assert answer_question("What is the patient's most recent creatinine?", "Creatinine 2.1, then creatinine "
                                                                          "1.8 today.") == "1.8"
    assert answer_question("What is the patient's most recent creatinine?", "No labs drawn.") == "N/A"


# --- independence ---

def test_teachers_import_nothing_from_simulation():
    imported = set()
    for path in sorted((REPO / "teachers").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
            if isinstance(node, ast.Import):
                imported |= {alias.name.split(".")[0] for alias in node.names}
            elif isinstance(node, ast.ImportFrom):
                imported.add((node.module or "").split(".")[0])
    assert "simulation" not in imported and "teachers" in imported


# --- stage A end to end ---

@pytest.mark.slow
def test_stage_a_with_the_text_only_teacher(tmp_path):
    from clinical_distil.create import read_chunks
    from clinical_distil.parsing import parse_reply

    notes = discharge_summaries().head(5)
    notes_file = tmp_path / "notes.csv"
    notes.to_csv(notes_file, index=False)
    finished = run_script("a-generate-synthetic-training-data/synthetic-a-create.py", "--model_id", "text-only",
                          "--notes_file", str(notes_file), "--output_dir", str(tmp_path / "out"), "--chunk_size", "2",
                          env={"HF_HUB_OFFLINE": "1"})
    assert finished.returncode == 0, finished.stderr[-2000:]
    files = sorted(path.name for path in (tmp_path / "out").glob("df_*.csv"))
    assert files == sorted(f"df_{kind}_{start}_{end}.csv" for kind in QUESTION_TYPES
                           for start, end in ((0, 2), (2, 4), (4, 5)))
    rows = read_chunks(tmp_path / "out")
    assert len(rows) == 20 and set(rows["finish_reason"]) == {"stop"}
    for output in rows["output"]:
        assert parse_reply(output, "stop").failure is None and isinstance(json.loads(output), list)
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["teacher"] == TEACHER_KIND and manifest["engine"] == "text-only"


def test_the_rules_answer_an_eval_file_through_eval_inference(tmp_path):
    """The rules as a classifier (the known-answer baseline): eval-inference.py --model_id text-only answers every
    apixaban sample prompt with an answer object the metrics read, and scores them as a model's; no adapter."""
    from clinical_distil import layout, preprocess
    from clinical_distil.evaluate import evaluate_models

    target = layout.eval_file(tmp_path, "apixaban", "prompts")
    target.parent.mkdir(parents=True)
    preprocess.apixaban_prompts(SAMPLES / "apixaban").to_csv(target, index=False)
    args = ["--model_id", "text-only", "--dataset_name", "apixaban", "--input_file", "prompts",
            "--data_dir", str(tmp_path), "--model_name", "rules"]
    answered = run_script("eval-inference.py", *args)
    assert answered.returncode == 0, answered.stderr[-2000:]
    assert "eval-inference: 184 answers" in answered.stdout
    summary = evaluate_models(layout.task_outputs(tmp_path, "apixaban"), "prompts", "apixaban")["summaries"]["rules"]
    assert (summary["examples"], summary["questions"], summary["parse_failures"]) == (184, 23, 0)
    refused = run_script("eval-inference.py", *args, "--adapter", str(tmp_path))
    assert refused.returncode == 2 and refused.stderr.strip().splitlines() == [
        "error: --model_id text-only is no model: it takes no --adapter or --base_model_name"]
