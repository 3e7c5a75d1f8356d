"""The held-out renderers: lengths, facts stated for every label, hedges only of absent conditions, n2c2 files."""

import random
import re
from datetime import date, timedelta
from pathlib import Path

import pytest
from hypothesis import assume, given, settings, strategies as st

from clinical_distil.n2c2 import read_patient_file
from simulation.fact_sheets import CV_MEDICATIONS, FactSheet, apixaban_answers, make_sheets, n2c2_labels
from simulation.held_out import (WITHHELD_TERMS, HeldOutNote, HeldOutRecord, render_held_out_discharge,
                                 render_held_out_n2c2)

TOKENIZER_DIR = Path(__file__).resolve().parents[1] / "models" / "SmolLM2-135M-Instruct"
SHEETS = make_sheets(random.Random(2024), 40, 70000, 700000, 2100)
NOTES = [render_held_out_discharge(sheet, random.Random(index)) for index, sheet in enumerate(SHEETS)]
PATIENTS = [render_held_out_n2c2(sheet, random.Random(1000 + index)) for index, sheet in enumerate(SHEETS)]
HEDGE_MARKER = re.compile(r"possible|r/o|cannot exclude|concern for|ruled out", re.IGNORECASE)
US_DATE = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})")
SIMPLE_CONDITIONS = ("afib", "mdd", "schizophrenia", "bipolar", "hemorrhagic", "peptic_ulcer_disease",
                     "surgical_valvular_disease", "heart_failure", "t2d")
seeds = st.integers(min_value=0, max_value=2**32 - 1)


def one_sheet(seed: int) -> FactSheet:
    """A sheet of any scenario drawn from the seed."""
    rng = random.Random(seed)
    return make_sheets(rng, rng.randint(1, 8), 1, 10, 2100)[-1]


def us(day: date | str) -> str:
    day = date.fromisoformat(day) if isinstance(day, str) else day
    return f"{day.month}/{day.day}/{day.year}"


def event_date(phrase: str) -> date:
    month, day, year = map(int, US_DATE.search(phrase).groups())
    return date(year, month, day)


def within(stated: dict[str, str], key: str, reference: date, days: int) -> bool:
    return key in stated and (reference - event_date(stated[key])).days <= days


def labels_from_statements(sheet: FactSheet, stated: dict[str, str], reference: date) -> dict[str, bool]:
    """The n2c2 labels as read back from the stated phrases (lab values from the lab keys that are stated)."""
    def stated_values(name: str) -> list[float]:
        return [lab.value for lab in sheet.labs if lab.name == name and f"lab:{name}:{lab.day}" in stated]

    alcohol = re.search(r"~(\d+) drinks", stated["alcohol"])
    drinks = int(alcohol.group(1)) if alcohol else 0
    assert alcohol or "denies" in stated["alcohol"]
    male = re.search(r"\bM\b|\bman\b", stated["sex_age"]) is not None
    cv_medications = sum(f"med:{medication}" in stated for medication in CV_MEDICATIONS)
    creatinine, hba1c = stated_values("creatinine"), stated_values("hba1c")
    return {
        "ABDOMINAL": "abdominal_surgery" in stated,
        "ADVANCED-CAD": (cv_medications >= 2) + ("event:mi" in stated) + ("angina" in stated)
        + ("ischemia" in stated) >= 2,
        "ALCOHOL-ABUSE": drinks > (14 if male else 7),
        "ASP-FOR-MI": any(key.startswith("med:aspirin") for key in stated),
        "CREATININE": bool(creatinine) and max(creatinine) > 1.3,
        "DIETSUPP-2MOS": any(key.startswith("supplement:") for key in stated),
        "DRUG-ABUSE": "denies" not in stated["drugs"],
        "ENGLISH": "interpreter" not in stated["language"],
        "HBA1C": bool(hba1c) and 6.5 <= max(hba1c) <= 9.5,
        "KETO-1YR": within(stated, "event:keto", reference, 365),
        "MAJOR-DIABETES": any(key.startswith("complication:") for key in stated),
        "MAKES-DECISIONS": "Lacks capacity" not in stated["decisions"],
        "MI-6MOS": within(stated, "event:mi", reference, 183),
    }


def yes_no_from_statements(stated: dict[str, str], reference: date) -> dict[str, str]:
    """The apixaban yes/no answers as read back from the stated phrases."""
    answers = {name: "condition:" + name in stated for name in SIMPLE_CONDITIONS}
    answers.update(arterial_hypertension="condition:hypertension" in stated, afib_ablation="afib_ablation" in stated,
                   prior_stroke="event:stroke" in stated, recent_stroke=within(stated, "event:stroke", reference, 30),
                   bleeding=within(stated, "event:bleed", reference, 183),
                   med_decisions="Lacks capacity" in stated["decisions"])
    return {name: "Yes" if flag else "No" for name, flag in answers.items()}


def assert_facts_stated(sheet: FactSheet, text: str, stated: dict[str, str]) -> None:
    """Every stated phrase is in the text and says what the sheet says."""
    for key, phrase in stated.items():
        assert phrase in text, key
    for lab in sheet.labs:
        phrase = stated[f"lab:{lab.name}:{lab.day}"]
        assert f"{lab.value:g}" in phrase.split() and us(lab.day) in phrase, (lab, phrase)
    for medication in sheet.medications + sheet.supplements:
        key = ("med:" if medication in sheet.medications else "supplement:") + medication
        name, dose = re.match(r"(.+?) ([\d.]+ \w+)", medication).groups()
        assert name in stated[key] and dose in stated[key]
    assert sheet.language in stated["language"] and str(sheet.age) in stated["sex_age"]
    assert ("afib_reversible" in stated) == sheet.conditions["afib_reversible"]
    if sheet.chads2_documented:
        assert stated["chads2"].endswith(f" {sheet.chads2}")
    else:
        assert "chads2" not in stated and "CHADS2" not in text
    if sheet.lvef is not None:
        assert f"LVEF {sheet.lvef}%" in stated["lvef"]
    for complication in sheet.diabetes_complications:
        assert f"complication:{complication}" in stated
    if sheet.drug_use:
        assert sheet.drug_use.split()[0] in stated["drugs"]
    for key in stated:
        if key.startswith("condition:"):
            assert sheet.conditions[key.split(":")[1]], key


def assert_hedges_only_of_absent(sheet: FactSheet, text: str, stated: dict[str, str]) -> int:
    """Hedged conditions are absent from the sheet, and every hedge word sits inside a hedge phrase; the hedges."""
    hedges = {key.split(":")[1]: phrase for key, phrase in stated.items() if key.startswith("hedge:")}
    for condition in hedges:
        assert not sheet.conditions[condition] and f"condition:{condition}" not in stated
    spans = [(match.start(), match.end()) for phrase in hedges.values()
             for match in re.finditer(re.escape(phrase), text)]
    for marker in HEDGE_MARKER.finditer(text):
        assert any(start <= marker.start() < end for start, end in spans), text[marker.start() - 60: marker.end() + 60]
    return len(hedges)


def assert_discharge_note(sheet: FactSheet, note: HeldOutNote) -> None:
    stated, discharge = note.stated, date.fromisoformat(sheet.discharge)
    assert_facts_stated(sheet, note.text, stated)
    assert assert_hedges_only_of_absent(sheet, note.text, stated) >= 1
    assert labels_from_statements(sheet, stated, discharge) == n2c2_labels(sheet)
    answers, read_back = apixaban_answers(sheet), yes_no_from_statements(stated, discharge)
    assert read_back == {key: answers[key] for key in read_back}
    for kind, days in (("mi", sheet.mi_days_ago), ("keto", sheet.keto_days_ago), ("bleed", sheet.bleed_days_ago),
                       ("stroke", sheet.stroke_days_ago)):
        assert (days is None) == (f"event:{kind}" not in stated)
        if days is not None:
            assert event_date(stated[f"event:{kind}"]) == discharge - timedelta(days=days)
    assert stated["discharge_date"] == us(discharge) and stated["admit_date"] == us(sheet.admit)
    for name in ("platelets", "hemoglobin", "creatinine", "glucose", "bilirubin", "ast"):
        assert (answers[f"{'lowest' if name in ('platelets', 'hemoglobin') else 'highest'}_{name}"] == "NA") == (
            not sheet.lab_values(name))


@pytest.fixture(scope="module")
def token_count():
    if not TOKENIZER_DIR.is_dir():
        pytest.skip("the SmolLM2 tokenizer is not in models/")
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"])


def test_discharge_notes_are_1000_to_2500_tokens(token_count):
    lengths = [token_count(note.text) for note in NOTES]
    assert 1000 <= min(lengths) and max(lengths) <= 2500, (min(lengths), max(lengths))


def test_n2c2_patients_have_2_to_5_dated_records_within_8192_tokens(token_count):
    for sheet, (_, records) in zip(SHEETS, PATIENTS):
        assert 2 <= len(records) <= 5
        assert sum(token_count(record.text) for record in records) <= 8192
        days = [record.date for record in records]
        assert days == sorted(set(days)) and days[-1] == sheet.discharge
        for record in records:
            assert record.text.startswith(f"Record date: {record.date}\n")
    assert {len(records) for _, records in PATIENTS} >= {2, 3, 4}


def test_discharge_notes_state_every_label_fact():
    for sheet, note in zip(SHEETS, NOTES):
        assert_discharge_note(sheet, note)


def test_discharge_notes_hold_and_resume_a_drug_and_carry_an_old_problem_list():
    held = 0
    for sheet, note in zip(SHEETS, NOTES):
        stated = note.stated
        block = stated["carried_forward"]
        assert "forward" in block.splitlines()[0] and len(re.findall(r"^  - ", block, re.MULTILINE)) >= 2
        holdable = [medication for medication in sheet.medications if not medication.startswith("atorvastatin")]
        drugs = [key.split(":", 1)[1] for key in stated if key.startswith("held:")]
        assert len(drugs) == (1 if holdable else 0)
        for drug in drugs:
            assert drug in sheet.medications and "held on admission" in stated[f"held:{drug}"]
            assert "RESUMED" in stated[f"resumed:{drug}"] and stated[f"resumed:{drug}"] == stated[f"med:{drug}"]
            held += 1
    assert held >= 30


def test_notes_vary_their_sections_and_lab_layouts():
    headings = set()
    for note in NOTES:
        lines = note.text.splitlines()
        headings.add(tuple(line for before, line in zip(lines, lines[1:]) if not before))
    assert len(headings) >= 30
    layouts = {re.compile(r"^Cr \(mg/dL\): ", re.MULTILINE), re.compile(r"^\d+/\d+/\d{4} >> ", re.MULTILINE),
               re.compile(r"^units +K/uL", re.MULTILINE)}
    for layout in layouts:
        assert any(layout.search(note.text) for note in NOTES), layout.pattern


def test_n2c2_records_state_every_label_fact_and_spread_the_dated_events():
    spread = 0
    for sheet, (_, records) in zip(SHEETS, PATIENTS):
        stated: dict[str, str] = {}
        assert sum(assert_hedges_only_of_absent(sheet, record.text, record.stated) for record in records) >= 1
        for record in records:
            for key, phrase in record.stated.items():
                assert phrase in record.text, key
                stated.setdefault(key, phrase)
        assert_facts_stated(sheet, "\n".join(record.text for record in records), stated)
        assert labels_from_statements(sheet, stated, date.fromisoformat(records[-1].date)) == n2c2_labels(sheet)
        first_day = min(lab.day for lab in sheet.labs)
        assert not any(key.startswith(("event:", f"lab:wbc:{first_day}")) for key in records[-1].stated)
        earlier = {key for record in records[:-1] for key in record.stated}
        spread += any(key.startswith("event:") for key in earlier) and any(
            record.date < sheet.admit for record in records)
    assert spread >= 5


def test_n2c2_xml_round_trips_through_the_reader(tmp_path):
    for sheet, (xml, records) in zip(SHEETS, PATIENTS):
        path = tmp_path / f"{sheet.subject_id}.xml"
        path.write_text(xml)
        patient = read_patient_file(path)
        assert patient.tags == n2c2_labels(sheet)
        assert patient.records == [record.text for record in records]
        assert patient.record_dates == [record.date for record in records]


def test_withheld_terms_appear_in_held_out_notes():
    assert len(WITHHELD_TERMS) >= 15 and len(set(WITHHELD_TERMS)) == len(WITHHELD_TERMS)
    missing = [term for term in WITHHELD_TERMS if not any(term in note.text for note in NOTES)]
    assert missing == []


def masked_lines(text: str) -> list[str]:
    """A note's non-empty lines with every number masked (a line that differs only in its values is the same)."""
    return [re.sub(r"\d+(?:\.\d+)?", "#", line.strip()) for line in text.splitlines() if line.strip()]


@pytest.fixture(scope="module")
def training_text(tmp_path_factory) -> str:
    """Every note of a training corpus (discharge summaries and the notes around them) and the bundled samples."""
    import pandas as pd

    from clinical_distil import layout
    from simulation.corpus import write_corpus

    folder = tmp_path_factory.mktemp("training-corpus")
    write_corpus(folder, patients=200, seed=7, annotated_notes=1, n2c2_train=1, n2c2_test=1, apixaban_notes=1)
    samples = Path(__file__).resolve().parents[1] / "data" / "samples" / "mimic-iii" / "NOTEEVENTS.csv.gz"
    return "\n".join(pd.concat([pd.read_csv(layout.corpus_notes(folder))["TEXT"], pd.read_csv(samples)["TEXT"]]))


def test_held_out_notes_share_few_lines_and_no_withheld_term_with_training_notes(training_text):
    """At most 20% of held-out lines (numbers masked) stand verbatim in training notes; no withheld term is written
    by the training renderer."""
    training = set(masked_lines(training_text))
    lines = [line for note in NOTES for line in masked_lines(note.text)]
    shared = sum(line in training for line in lines) / len(lines)
    assert shared <= 0.20, shared
    assert [term for term in WITHHELD_TERMS if re.search(rf"(?<!\w){re.escape(term)}(?!\w)", training_text)] == []


@settings(max_examples=40)
@given(seeds, seeds)
def test_any_sheet_states_its_labels(sheet_seed, note_seed):
    sheet = one_sheet(sheet_seed)
    assert_discharge_note(sheet, render_held_out_discharge(sheet, random.Random(note_seed)))
    xml, records = render_held_out_n2c2(sheet, random.Random(note_seed))
    assert isinstance(records[0], HeldOutRecord) and records[-1].date == sheet.discharge
    assert f"<MI-6MOS met=\"{'met' if n2c2_labels(sheet)['MI-6MOS'] else 'not met'}\" />" in xml


@settings(max_examples=25)
@given(seeds, seeds, seeds)
def test_same_seed_same_text_other_seed_other_text(sheet_seed, seed, other):
    assume(seed != other)
    sheet = one_sheet(sheet_seed)
    first, again = (render_held_out_discharge(sheet, random.Random(seed)) for _ in range(2))
    assert first == again
    assert render_held_out_n2c2(sheet, random.Random(seed)) == render_held_out_n2c2(sheet, random.Random(seed))
    assert render_held_out_discharge(sheet, random.Random(other)).text != first.text
    assert render_held_out_n2c2(sheet, random.Random(other))[0] != render_held_out_n2c2(sheet, random.Random(seed))[0]


# --- questions about held-out notes -----------------------------------------------------------------------

def question_tokens(question: str) -> set[str]:
    return set(re.findall(r"\w+", question.lower()))


def test_held_out_answers_are_what_the_notes_state():
    """Each question's answer is the note's: a condition Yes exactly where the note states it, a result's value
    among the note's, Yes for a procedure the note reports and N/A where it is silent."""
    from simulation.held_out_questions import held_out_questions

    seen_types = set()
    for index, (sheet, note) in enumerate(zip(SHEETS, NOTES)):
        assert ("lvef" in note.stated) == (sheet.lvef is not None)
        assert ("chads2" in note.stated) == sheet.chads2_documented
        for condition in ("afib", "t2d", "hypertension", "heart_failure", "cad", "mdd"):
            assert (f"condition:{condition}" in note.stated) == sheet.conditions[condition], (index, condition)
        for row in held_out_questions(sheet, random.Random(index)):
            seen_types.add(row["type"])
            if row["type"] == "numeric":
                assert row["answer"] in note.text
            assert (row["answer"] == "N/A") == row["type"].startswith("na-")
    assert seen_types == {"yes", "numeric", "na-numeric", "na-bool"}


@pytest.fixture(scope="module")
def teacher_questions(training_text) -> set[str]:
    """Every question the reference teacher writes about a training corpus, and the training corpus's own
    annotated questions."""
    import tempfile

    from clinical_distil import layout
    from simulation.corpus import read_facts, write_corpus
    from simulation.fact_sheets import annotated_questions
    from simulation.reference_teacher import reference_reply

    with tempfile.TemporaryDirectory() as folder:
        write_corpus(folder, patients=60, seed=7, annotated_notes=20, n2c2_train=1, n2c2_test=1, apixaban_notes=1)
        facts = read_facts(layout.facts_file(layout.corpus_notes(Path(folder))))
    questions = {item["question"] for record in facts.values()
                 for kind in ("yes_no", "numeric", "na-numeric", "na-bool")
                 for seed in range(3) for item in reference_reply(record, kind, 10, 10, seed)}
    questions |= {row["question"] for sheet in SHEETS for row in annotated_questions(sheet, random.Random(0))}
    return questions


def test_held_out_questions_are_worded_apart_from_the_teachers(teacher_questions):
    """No held-out question is a teacher's, and none shares more than half its words with one (token Jaccard);
    questions that some notes answer and others do not are asked in the same words of both."""
    from simulation.held_out_questions import held_out_questions

    rows = [row for seed in range(5) for index, sheet in enumerate(SHEETS)
            for row in held_out_questions(sheet, random.Random(seed * 100 + index))]
    held_out = {row["question"] for row in rows}
    assert not held_out & teacher_questions and len(teacher_questions) > 200
    teacher_tokens = [question_tokens(question) for question in teacher_questions]
    largest = max(len(mine & theirs) / len(mine | theirs)
                  for mine in map(question_tokens, held_out) for theirs in teacher_tokens)
    assert largest <= 0.5, largest
    answered_both_ways = {row["question"] for row in rows if row["type"].startswith("na-")} & \
        {row["question"] for row in rows if not row["type"].startswith("na-")}
    assert len(answered_both_ways) >= 4
