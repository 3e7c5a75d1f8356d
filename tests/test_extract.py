"""extract.py: notes of every source, grounded quotes, patient and cohort tables, the review page, bad input."""

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SAMPLES, kill_when, run_script
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_distil import extract, n2c2
from clinical_distil.criteria import Criterion, parse_rule, read_criteria
from clinical_distil.files import InputError

N2C2_TEST = SAMPLES / "n2c2-2018-track1" / "test"
N2C2_CRITERIA_FILE = REPO / "criteria" / "n2c2-2018.yaml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def criterion(name, answer="yes/no", rule=""):
    return Criterion(name, f"Question {name}?", answer, parse_rule(rule, answer, name))


# --- notes -----------------------------------------------------------------------------------------

def test_notes_of_every_source(tmp_path):
    notes, kind = extract.read_notes(N2C2_TEST)
    assert kind == "n2c2-xml" and list(notes["patient"]) == sorted(path.stem for path in N2C2_TEST.glob("*.xml"))
    first = n2c2.read_patient_file(N2C2_TEST / "136.xml")
    assert notes.loc[0, "reference_date"] == first.record_dates[-1] and notes.loc[0, "text"] == first.text.strip()
    notes, kind = extract.read_notes(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz")
    assert kind == "mimic-iii" and (len(notes), notes.loc[0, "patient"], notes.loc[0, "reference_date"]) == \
        (33, "10001", "2144-03-09")  # one discharge summary per admission, dated
    notes, kind = extract.read_notes(SAMPLES / "mimic-iv-note" / "discharge.csv.gz", limit=5)
    assert kind == "mimic-iv" and len(notes) == 5 and notes.loc[0, "note_id"] == "20000001-DS-20"
    (tmp_path / "texts").mkdir()
    (tmp_path / "texts" / "b.txt").write_text("Note B")
    (tmp_path / "texts" / "a.txt").write_text("Note A")
    notes, kind = extract.read_notes(tmp_path / "texts")
    assert kind == "text-files" and notes[["patient", "note_id", "text"]].values.tolist() == [["a", "a", "Note A"],
                                                                                             ["b", "b", "Note B"]]
    pd.DataFrame({"subject_id": [7, 7, 8], "note_id": ["x", "y", "z"], "date": ["2020-01-02 10:00", "", ""],
                  "text": ["one", "two", "  "]}).to_csv(tmp_path / "notes.csv", index=False)
    notes, kind = extract.read_notes(tmp_path / "notes.csv")
    assert kind == "notes-csv" and notes.values.tolist() == [["7", "x", "2020-01-02", "one"], ["7", "y", "", "two"]]


def written(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


@pytest.mark.parametrize("make, message", [
    (lambda path: path / "none.csv", "notes not found"),
    (lambda path: (path / "empty").mkdir() or path / "empty", "holds no .xml (n2c2) or .txt notes"),
    (lambda path: written(path / "n.csv", "note,body\n1,x\n"), "has no text column"),
    (lambda path: written(path / "n.csv", "note_id,text\n1,x\n1,y\n"), "note id '1' appears twice"),
    (lambda path: written(path / "n.csv", "note_id,text\n1,\n"), "holds no note with text"),
])
def test_bad_notes_are_refused_in_one_line(tmp_path, make, message):
    with pytest.raises(InputError, match=re.escape(message)):
        extract.read_notes(make(tmp_path))


def test_prompts_ask_every_criterion_of_every_note_with_its_date():
    notes = pd.DataFrame({"patient": ["p"], "note_id": ["n1"], "reference_date": ["2020-05-01"], "text": ["Text."]})
    criteria = [criterion("a"), Criterion("b", "Since {reference_date}, in the {window}?", "yes/no", None, "year")]
    prompts = extract.prompt_table(notes, criteria)
    assert list(prompts["id"]) == ["n1::a", "n1::b"]
    assert prompts.loc[1, "question"] == "Since 2020-05-01, in the year?" and "Text." in prompts.loc[1, "prompt"]
    assert extract.prompts_digest(prompts) != extract.prompts_digest(prompts.iloc[::-1])


# --- quotes ----------------------------------------------------------------------------------------

words = st.lists(st.text(alphabet="abcdefgjkl", min_size=1, max_size=6), min_size=3, max_size=30)  # none of "History"


@settings(max_examples=60, deadline=None)
@given(words=words, data=st.data())
def test_a_quote_taken_from_the_note_is_found_at_its_offsets(words, data):
    note = "History:\n" + " ".join(words)
    start = data.draw(st.integers(0, len(words) - 1))
    end = data.draw(st.integers(start + 1, len(words)))
    quote = " ".join(words[start:end])
    located = extract.locate_quote(quote, note)
    assert located.how == "exact" and note[located.start:located.end] == quote
    spaced = extract.locate_quote("  " + "\n ".join(words[start:end]).upper() + " ", note)
    assert spaced.how in ("exact", "normalized")
    assert " ".join(note[spaced.start:spaced.end].split()).lower() == quote.lower()
    assert extract.heading_before(note, located.start) == "History"


def test_quotes_found_inexactly_or_not_at_all():
    note = "Past Medical History:\nHypertension, on lisinopril.\nLabs:\nCreatinine 1.4 mg/dL on admission."
    fuzzy = extract.locate_quote("Creatinine 1.4 mg/dl on admision", note)
    assert fuzzy.how == "fuzzy" and note[fuzzy.start:fuzzy.end].startswith("Creatinine 1.4") and fuzzy.score >= 90
    assert extract.heading_before(note, fuzzy.start) == "Labs"
    assert extract.locate_quote("Warfarin 5 mg daily", note).how == "none"
    for nothing in (None, "", "not found", "NA"):
        assert extract.locate_quote(nothing, note) == extract.Located("not_applicable")


@pytest.mark.parametrize("note, quote, span", [
    # str.lower turns each İ into two code points: offsets into note.lower() ran 8 characters late here
    ("İİİİİİİİ Clinic.\nLabs:\nCreatinine 1.4 mg/dL on admission. Potassium 4.0 today.",
     "Creatinine 1.4 mg/dl on admision", "Creatinine 1.4 mg/dL on admission"),
    ("Labs: WBC 12,500 on admission, Hgb 10.2 g/dL.", "wbc 12500 on admision, hgb 10.2",
     "WBC 12,500 on admission, Hgb 10.2"),  # the same numbers, written otherwise
    ("Labs:\nCreatinine 1.1 mg/dL on admission.", "Creatinine 1.10 mg/dL", "Creatinine 1.1 mg/dL"),
])
def test_fuzzy_quotes_are_placed_on_the_note_itself(note, quote, span):
    located = extract.locate_quote(quote, note)
    assert (located.how, note[located.start:located.end]) == ("fuzzy", span)


@pytest.mark.parametrize("note, quote, score", [
    ("Labs:\nCreatinine 1.1 mg/dL on admission.", "Creatinine 4.1 mg/dL", 95.0),
    ("Vitals: BP 120/80, HR 72.", "BP 120/80, HR 27", 93.8),
])
def test_a_quote_whose_numbers_differ_from_the_note_is_not_found(note, quote, score):
    assert extract.locate_quote(quote, note) == extract.Located("none", score=score)


def test_reply_fields():
    reply = ('```json\n{"question": "q", "type": "numeric", "answer": "1.40", "section": "Labs", '
             '"source": "Cr 1.4"}\n```')
    assert extract.reply_fields(reply) == {"answer": "1.4", "quote": "Cr 1.4", "section": "Labs"}
    assert extract.reply_fields("Yes, it is stated.") == {"answer": "Yes", "quote": None, "section": None}
    assert extract.reply_fields("") == {"answer": None, "quote": None, "section": None}


# --- tables ----------------------------------------------------------------------------------------

def reply(answer, source="NA"):
    return json.dumps({"question": "q", "type": "t", "answer": answer, "section": "S", "source": source})


def test_tables_apply_the_rules_and_name_their_evidence():
    notes = pd.DataFrame({"patient": ["p1", "p1", "p2"], "note_id": ["a", "b", "c"], "reference_date": "",
                          "text": ["Creat 1.1. On aspirin.", "Creat 2.0.", "Creat 0.9. No aspirin."]})
    criteria = [criterion("creat", "numeric", "> 1.3"), criterion("aspirin"), criterion("hgb", "numeric")]
    answered = pd.DataFrame([
        ("p1", "a", "creat", reply("1.1", "Creat 1.1")), ("p1", "a", "aspirin", reply("Yes", "On aspirin")),
        ("p1", "a", "hgb", reply("NA")),
        ("p1", "b", "creat", reply("2.0", "Creat 2.0")), ("p1", "b", "aspirin", reply("No", "Aspirin 81")),
        ("p1", "b", "hgb", reply("12.5", "Hgb 12.5")),
        ("p2", "c", "creat", reply("0.9", "creat 0.9")), ("p2", "c", "aspirin", "garbled"),
        ("p2", "c", "hgb", reply("11")),
    ], columns=["patient", "note_id", "criterion", "output"])
    answered["question"], answered["finish_reason"], answered["note_truncated"] = "q", "stop", False
    answers = extract.answer_table(answered, notes, criteria)
    assert list(answers["met"]) == ["not met", "met", "", "met", "not met", "", "not met", "not met", ""]
    assert list(answers["answer"]) == ["1.1", "Yes", "NA", "2", "No", "12.5", "0.9", "", "11"]
    assert list(answers["quote_in_note"]) == ["exact", "exact", "not_applicable", "exact", "none", "none",
                                              "normalized", "not_applicable", "not_applicable"]
    assert (answers.loc[3, "quote_start"], answers.loc[3, "quote_end"]) == (0, len("Creat 2.0"))
    patients = extract.patient_table(answers, criteria)
    assert patients[["patient", "criterion", "met", "answer", "evidence_note"]].values.tolist() == [
        ["p1", "creat", "met", "2", "b"], ["p1", "aspirin", "met", "Yes", "a"], ["p1", "hgb", "", "12.5", "b"],
        ["p2", "creat", "not met", "", ""], ["p2", "aspirin", "not met", "", ""], ["p2", "hgb", "", "11", "c"]]
    cohort = extract.cohort_table(patients, criteria)
    assert cohort[["criterion", "counts", "patients", "of"]].values.tolist() == [
        ["creat", "met", 1, 2], ["aspirin", "met", 1, 2], ["hgb", "reported", 2, 2],
        ["all criteria with a rule", "met", 1, 2]]


# --- the review page -------------------------------------------------------------------------------

# characters outside the Basic Multilingual Plane before the quotes: one code point each in Python, two UTF-16 units
# in JavaScript
PAGE_NOTE = "Labs \U0001fa7a:\nCreat 2.0 </script><b>bold</b> \U0001f48a\U0001f48a and aspirin daily."


def page_for(tmp_path, text=PAGE_NOTE):
    notes = pd.DataFrame({"patient": ["p1"], "note_id": ["a"], "reference_date": ["2020-01-01"], "text": [text]})
    # an id with a space; "afib" (rule no) is answered with a number: off-type, never met
    criteria = [criterion("creat", "numeric", "> 1.3"), criterion("on aspirin"), criterion("stroke"),
                criterion("afib", "yes/no", "no")]
    answered = pd.DataFrame([("p1", "a", "creat", reply("2.0", "Creat 2.0")),
                             ("p1", "a", "on aspirin", reply("Yes", "aspirin daily")),
                             ("p1", "a", "stroke", reply("Yes", "history of stroke")),
                             ("p1", "a", "afib", reply("2.5"))],
                            columns=["patient", "note_id", "criterion", "output"])
    answered["question"], answered["finish_reason"], answered["note_truncated"] = "q", "stop", False
    answers = extract.answer_table(answered, notes, criteria)
    patients = extract.patient_table(answers, criteria)
    page = extract.review_page(extract.review_data(answers, notes, criteria, "Review <test>", patients))
    path = tmp_path / "review.html"
    path.write_text(page)
    return path, page


def test_review_page_is_self_contained(tmp_path):
    _, page = page_for(tmp_path)
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page) and "@import" not in page
    assert page.count("</script>") == 2  # the note's own "</script>" is escaped inside the data
    assert "<title>Review &lt;test&gt;</title>" in page


def rendered(path: Path, fragment: str = "") -> str:
    result = subprocess.run([CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--dump-dom",
                             path.as_uri() + fragment], capture_output=True, text=True, encoding="utf-8", timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout


def marks_of(dom: str) -> list[tuple[list[str], bool, str]]:
    """Each highlighted stretch: the criteria it marks, whether it is dimmed, its text."""
    return [(json.loads(html.unescape(names)), 'class="dim"' in attributes, text)
            for names, attributes, text in re.findall(r'<mark data-criteria="([^"]*)"([^>]*)>([^<]*)</mark>', dom)]


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium is not installed (Debian: apt-get install chromium)")
def test_review_page_renders_highlights_and_filters_in_chromium(tmp_path):
    path, _ = page_for(tmp_path)
    dom = rendered(path)
    # highlighted at the quotes themselves, emoji or not before them (offsets count code points)
    assert marks_of(dom) == [(["creat"], False, "Creat 2.0"), (["on aspirin"], False, "aspirin daily")]
    assert "&lt;b&gt;bold&lt;/b&gt;" in dom and "<b>bold</b>" not in dom.split("<main")[1]  # text, not markup
    assert '<span id="shown">4 answers shown</span>' in dom
    assert re.search(r'<tr class="answer not-found" data-criterion="stroke"[^>]*>', dom)
    assert re.search(r'<tr class="answer" data-criterion="afib" data-answer="number" data-met="off-type"', dom)
    # stroke is met on a quote found in no note: counted, and said so
    assert '<p id="ungrounded">1 patient x criterion decisions rest on no quote found in a note: counted as met' in dom
    assert '<p class="flag ungrounded">on no quote found in a note: stroke (counted as met)</p>' in dom
    dom = rendered(path, "#criterion=on+aspirin")
    assert '<span id="shown">1 answers shown</span>' in dom
    assert re.search(r'<tr class="answer hidden" data-criterion="creat"', dom)
    assert [(names, dim) for names, dim, _ in marks_of(dom)] == [(["creat"], True), (["on aspirin"], False)]
    dom = rendered(path, "#notfound=1")
    assert '<span id="shown">1 answers shown</span>' in dom and 'data-criterion="stroke" data-answer="Yes"' in dom
    dom = rendered(path, "#answer=met")
    assert '<span id="shown">3 answers shown</span>' in dom  # creat 2.0 > 1.3, aspirin and stroke Yes; not afib
    dom = rendered(path, "#answer=off-type&criterion=creat")
    assert '<span id="shown">0 answers shown</span>' in dom and re.search(r'<section class="patient hidden"', dom)


# --- extract.py --------------------------------------------------------------------------------------

def model_that_must_not_load(folder: Path) -> Path:
    """A model folder whose weights fail if they are read: a run that loads the model cannot pass."""
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "architectures": ["LlamaForCausalLM"]}))
    (folder / "model.safetensors").write_bytes(b"not weights")
    return folder


@pytest.mark.parametrize("content", [bytes(range(256)) * 8, "id,question,answer\ncafé,Q?,yes/no\n".encode("latin-1")])
@pytest.mark.parametrize("suffix", [".yaml", ".csv"])
def test_a_binary_criteria_file_stops_extract_in_one_line(tmp_path, content, suffix):
    criteria = tmp_path / f"criteria{suffix}"
    criteria.write_bytes(content)
    result = run_script("extract.py", "--criteria", str(criteria), "--notes", str(N2C2_TEST), "--model_id",
                        str(model_that_must_not_load(tmp_path / "model")), "--output_dir", str(tmp_path / "run"))
    assert result.returncode == 2 and len(result.stderr.strip().splitlines()) == 1, result.stderr[-2000:]
    assert f"{criteria} is " in result.stderr and "a criteria file is YAML or CSV text, saved as UTF-8" in \
        result.stderr
    assert not (tmp_path / "run").exists()


# the answers of a grounding run: note text, and per criterion the reply the model gave
GROUNDING_NOTES = {
    "n1": "İİİİİİİİ Clinic \U0001f600\nLabs:\nCreatinine 1.4 mg/dL on admission. Potassium 4.0.\n"
          "Meds: aspirin 81 mg daily.",
    "n2": "Labs:\nCreatinine 1.1 mg/dL on admission.\nNo history of stroke.",
}
GROUNDING_CRITERIA = """criteria:
  - {id: creat, question: "Highest creatinine?", answer: numeric, rule: "> 1.3"}
  - {id: aspirin, question: "Does the patient take aspirin?", answer: yes/no}
  - {id: no stroke, question: "Has the patient had a stroke?", answer: yes/no, rule: "no"}
"""
GROUNDING_REPLIES = [
    ("n1", "creat", reply("1.4", "Creatinine 1.4 mg/dl on admision")),  # fuzzy, after eight İ
    ("n1", "aspirin", reply("Yes", "aspirin 81 mg daily")),  # exact, after an emoji
    ("n1", "no stroke", reply("4")),  # a number to a yes/no question: rule `no` counted it as met
    ("n2", "creat", reply("4.1", "Creatinine 4.1 mg/dL")),  # met on a quote found in no note (score 95)
    ("n2", "aspirin", reply("The patient takes aspirin and")),  # prose: off-type
    ("n2", "no stroke", reply("No", "No history of stroke.")),
]


def test_grounding_and_answer_types_in_every_output(tmp_path):
    """Offsets, numbers, off-type answers and ungrounded decisions, from the files extract.py writes; once every
    answer is on disk the tables are written again without loading the model, with or without
    --require_grounded_quote."""
    notes = tmp_path / "notes.csv"
    pd.DataFrame({"patient": ["p1", "p2"], "note_id": list(GROUNDING_NOTES),
                  "text": list(GROUNDING_NOTES.values())}).to_csv(notes, index=False)
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text(GROUNDING_CRITERIA)
    run = tmp_path / "run"
    run.mkdir()
    pd.DataFrame({"id": [f"{note}::{name}" for note, name, _ in GROUNDING_REPLIES],
                  "output": [output for _, _, output in GROUNDING_REPLIES], "finish_reason": "stop",
                  "note_truncated": False}).to_csv(run / "prompts_0_6_chunk_0.csv", index=False)
    model = model_that_must_not_load(tmp_path / "model")
    flags = ["--criteria", str(criteria), "--notes", str(notes), "--model_id", str(model), "--output_dir", str(run)]

    result = run_script("extract.py", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    answers = pd.read_csv(run / "answers.csv", keep_default_na=False, dtype=str)
    assert list(answers["met"]) == ["met", "met", "off-type", "met", "off-type", "met"]
    assert list(answers["quote_in_note"]) == ["fuzzy", "exact", "not_applicable", "none", "not_applicable", "exact"]
    note = GROUNDING_NOTES["n1"]  # offsets in code points, as Python slices the note
    assert note[int(answers.loc[0, "quote_start"]):int(answers.loc[0, "quote_end"])] == \
        "Creatinine 1.4 mg/dL on admission"
    assert (int(answers.loc[1, "quote_start"]), int(answers.loc[1, "quote_end"])) == \
        (note.index("aspirin 81"), note.index("aspirin 81") + len("aspirin 81 mg daily"))
    assert (answers.loc[3, "quote_start"], answers.loc[3, "quote_score"]) == ("", "95.0")
    patients = pd.read_csv(run / "patients.csv", keep_default_na=False, dtype=str)
    assert patients[["patient", "criterion", "met", "met_ungrounded"]].values.tolist() == [
        ["p1", "creat", "met", "False"], ["p1", "aspirin", "met", "False"], ["p1", "no stroke", "not met", "False"],
        ["p2", "creat", "met", "True"], ["p2", "aspirin", "not met", "False"], ["p2", "no stroke", "met", "False"]]
    summary = json.loads((run / "extraction.json").read_text())
    assert (summary["off_type_answers"], summary["met_ungrounded"], summary["require_grounded_quote"]) == (2, 1, False)
    assert summary["met_ungrounded_by_criterion"] == {"creat": 1, "aspirin": 0, "no stroke": 0}
    assert "2 off-type); 1 patient x criterion decisions rest on no quote found in a note (counted as met; " \
        "--require_grounded_quote leaves them out)" in result.stdout
    page = (run / "review.html").read_text()
    assert '"ungrounded_met": 1' in page and '"require_grounded": false' in page

    strict = run_script("extract.py", *flags, "--require_grounded_quote")  # the same answers, the tables again
    assert strict.returncode == 0, strict.stderr[-3000:]
    patients = pd.read_csv(run / "patients.csv", keep_default_na=False, dtype=str)
    assert patients.loc[3, ["met", "met_ungrounded", "evidence_note"]].tolist() == ["not met", "True", "n2"]
    assert list(patients["met"]) == ["met", "met", "not met", "not met", "not met", "met"]
    cohort = pd.read_csv(run / "cohort.csv", keep_default_na=False)
    assert cohort[["criterion", "patients"]].values.tolist() == [
        ["creat", 1], ["aspirin", 1], ["no stroke", 1], ["all criteria with a rule", 0]]
    summary = json.loads((run / "extraction.json").read_text())
    assert (summary["met_ungrounded"], summary["require_grounded_quote"]) == (1, True)
    assert "(not counted as met: --require_grounded_quote)" in strict.stdout
    assert '"require_grounded": true' in (run / "review.html").read_text()

def run_extract(tmp_path, model, *extra, output="run"):
    return run_script("extract.py", "--criteria", str(N2C2_CRITERIA_FILE), "--notes", str(N2C2_TEST),
                      "--model_id", str(model), "--output_dir", str(tmp_path / output), *extra)


@pytest.mark.parametrize("criteria_text, message", [
    ("criteria:\n  - {id: a, question: Q, answer: text}\n", "answer type 'text' is unknown"),
    ("criteria:\n  - {id: a, question: Q, answer: numeric, rule: '=> 2'}\n", "rule '=> 2' cannot be read"),
    ("criteria:\n  - {id: a, question: Q, answer: yes/no}\n  - {id: a, question: R, answer: yes/no}\n",
     "id 'a' is used twice"),
])
def test_bad_criteria_file_stops_extract_before_any_work(tmp_path, tiny_model_dir, criteria_text, message):
    criteria = tmp_path / "c.yaml"
    criteria.write_text(criteria_text)
    result = run_script("extract.py", "--criteria", str(criteria), "--notes", str(N2C2_TEST), "--model_id",
                        str(tiny_model_dir), "--output_dir", str(tmp_path / "run"))
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("flags, message", [
    (["--criteria", "criteria/n2c2-2018.yaml", "--model_id", "m"], "pass --notes"),
    (["--criteria", "criteria/none.yaml", "--notes", "data/samples/n2c2-2018-track1/test", "--model_id", "m"],
     "criteria file not found"),
    (["--criteria", "criteria/n2c2-2018.yaml", "--notes", "nowhere", "--model_id", "m"], "notes not found"),
    (["--criteria", "criteria/n2c2-2018.yaml", "--notes", "data/samples/n2c2-2018-track1/test", "--model_id", "m",
      "--num_notes", "0"], "--num_notes"),
])
def test_bad_flags_stop_extract_in_one_line(flags, message):
    result = run_script("extract.py", *flags)
    assert result.returncode == 2 and message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_extract_resumes_and_refuses_other_prompts_in_its_folder(tmp_path, tiny_model_dir):
    first = run_extract(tmp_path, tiny_model_dir, "--max_output_tokens", "4", "--num_notes", "2")
    assert first.returncode == 0, first.stderr[-3000:]
    run = tmp_path / "run"
    assert {"answers.csv", "patients.csv", "cohort.csv", "review.html", "extraction.json"} <= \
        {path.name for path in run.iterdir()}
    summary = json.loads((run / "extraction.json").read_text())
    assert (summary["note_count"], summary["answers"], summary["notes_kind"]) == (2, 26, "n2c2-xml")
    answers = pd.read_csv(run / "answers.csv", keep_default_na=False)
    chunks = {path: path.stat().st_mtime_ns for path in run.glob("prompts_*_chunk_*.csv")}
    (run / "answers.csv").unlink()
    again = run_extract(tmp_path, tiny_model_dir, "--max_output_tokens", "4", "--num_notes", "2")
    assert again.returncode == 0, again.stderr[-3000:]
    assert {path: path.stat().st_mtime_ns for path in run.glob("prompts_*_chunk_*.csv")} == chunks  # none redone
    manifest = json.loads((run / "manifest_prompts.json").read_text())
    assert [session["answered"] for session in manifest["sessions"]] == [26]
    pd.testing.assert_frame_equal(pd.read_csv(run / "answers.csv", keep_default_na=False), answers)
    other = run_extract(tmp_path, tiny_model_dir, "--max_output_tokens", "4", "--num_notes", "3")
    assert other.returncode == 2 and "holds the answers to other questions or notes" in other.stderr


def decision(criterion: Criterion, answer: str) -> str:
    """answers.csv's `met` for a criterion with a rule: off-type, met or not met ('' is an unparsed answer)."""
    if answer != "" and not criterion.fits(answer):
        return "off-type"
    return "met" if answer != "" and criterion.met(answer) else "not met"


def test_an_interrupted_extraction_keeps_its_finished_chunks(tmp_path, tiny_model_dir, monkeypatch):
    """With the default chunk size, a run killed after its first chunk keeps those answers and the rerun answers
    only the rest (a chunk of 10,000 rows kept nothing of any run smaller than that)."""
    monkeypatch.setenv("OMP_NUM_THREADS", "1")  # the tiny model's small operations: a third of the time on one thread
    notes = tmp_path / "notes.csv"
    pd.DataFrame({"patient": "p", "note_id": [f"n{index}" for index in range(1050)],
                  "text": "Aspirin 81 mg daily."}).to_csv(notes, index=False)
    criteria = tmp_path / "criteria.yaml"
    criteria.write_text('criteria:\n  - {id: aspirin, question: "Aspirin?", answer: yes/no}\n')
    run = tmp_path / "run"
    flags = ["--criteria", str(criteria), "--notes", str(notes), "--model_id", str(tiny_model_dir), "--output_dir",
             str(run), "--max_output_tokens", "1"]

    def first_chunk_recorded() -> bool:
        manifest = run / "manifest_prompts.json"
        try:
            sessions = json.loads(manifest.read_text())["sessions"] if manifest.exists() else []
        except (ValueError, KeyError, OSError):
            return False
        return any(session.get("answered") for session in sessions)

    assert kill_when("extract.py", *flags, ready=first_chunk_recorded)
    assert [path.name for path in run.glob("prompts_*_chunk_*.csv")] == ["prompts_0_1000_chunk_0.csv"]
    assert not (run / "answers.csv").exists()
    kept = (run / "prompts_0_1000_chunk_0.csv").stat().st_mtime_ns
    result = run_script("extract.py", *flags)
    assert result.returncode == 0, result.stderr[-3000:]
    assert sorted(path.name for path in run.glob("prompts_*_chunk_*.csv")) == [
        "prompts_0_1000_chunk_0.csv", "prompts_1000_50_chunk_1.csv"]
    assert (run / "prompts_0_1000_chunk_0.csv").stat().st_mtime_ns == kept
    manifest = json.loads((run / "manifest_prompts.json").read_text())
    assert [session["answered"] for session in manifest["sessions"]] == [1000, 50]
    assert len(pd.read_csv(run / "answers.csv")) == 1050


@pytest.fixture(scope="module")
def smollm2_run(tmp_path_factory, default_model_dir):
    """The embedded model's answers to the n2c2 criteria on two of the bundled n2c2 test patients."""
    root = tmp_path_factory.mktemp("extract")
    result = run_extract(root, default_model_dir, "--max_output_tokens", "64", "--num_notes", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    return root / "run"


@pytest.mark.slow
def test_patient_table_agrees_with_the_answers_and_the_rules(smollm2_run):
    criteria = {item.id: item for item in read_criteria(N2C2_CRITERIA_FILE)}
    answers = pd.read_csv(smollm2_run / "answers.csv", keep_default_na=False, dtype={"patient": str, "note_id": str})
    patients = pd.read_csv(smollm2_run / "patients.csv", keep_default_na=False, dtype={"patient": str,
                                                                                       "evidence_note": str})
    assert len(answers) == 2 * 13 and len(patients) == 2 * 13 and answers["patient"].nunique() == 2
    for row in answers.itertuples():  # every rule applied to the answer as written
        assert row.met == decision(criteria[row.criterion], row.answer)
    recomputed = answers.groupby(["patient", "criterion"])["met"].apply(lambda values: "met" if (values == "met").any()
                                                                        else "not met")
    assert patients.set_index(["patient", "criterion"])["met"].sort_index().equals(recomputed.sort_index())
    # against the samples' labels: the table's agreement is the answers' agreement, patient by patient
    gold = {(patient.patient, name): met for patient in n2c2.read_folder(N2C2_TEST)
            for name, met in patient.tags.items() if patient.patient in set(answers["patient"])}
    table = {(row.patient, row.criterion): row.met == "met" for row in patients.itertuples()}
    from_answers = {(row.patient, row.criterion): criteria[row.criterion].met(row.answer)
                    for row in answers.itertuples()}
    assert set(table) == set(gold) and table == from_answers
    agreement = sum(table[key] == gold[key] for key in gold) / len(gold)
    assert agreement == sum(from_answers[key] == gold[key] for key in gold) / len(gold)
    cohort = pd.read_csv(smollm2_run / "cohort.csv", keep_default_na=False)
    for row in cohort.itertuples():
        if row.criterion in criteria:
            assert row.patients == sum(value for (_, name), value in table.items() if name == row.criterion)
    summary = json.loads((smollm2_run / "extraction.json").read_text())
    assert summary["engine"] == "transformers" and summary["seconds_per_note"] > 0
    assert sum(summary["quotes"].values()) == 26


@pytest.mark.slow
def test_extract_on_the_mimic_sample_writes_the_tables_and_page(tmp_path, default_model_dir):
    result = run_script("extract.py", "--criteria", "criteria/n2c2-2018.yaml", "--notes",
                        "data/samples/mimic-iii/NOTEEVENTS.csv.gz", "--model_id", str(default_model_dir),
                        "--num_notes", "1", "--max_output_tokens", "64", "--output_dir", str(tmp_path / "mimic"))
    assert result.returncode == 0, result.stderr[-3000:]
    answers = pd.read_csv(tmp_path / "mimic" / "answers.csv", keep_default_na=False, dtype=str)
    patients = pd.read_csv(tmp_path / "mimic" / "patients.csv", keep_default_na=False, dtype=str)
    cohort = pd.read_csv(tmp_path / "mimic" / "cohort.csv", keep_default_na=False)
    assert len(answers) == 13 and list(cohort["criterion"])[-1] == "all criteria with a rule"
    criteria = {item.id: item for item in read_criteria(N2C2_CRITERIA_FILE)}
    for row in answers.itertuples():
        assert row.met == decision(criteria[row.criterion], row.answer)
    prompts = pd.read_csv(tmp_path / "mimic" / "prompts.csv", keep_default_na=False, dtype=str)
    mi = prompts[prompts["criterion"] == "MI-6MOS"]["question"].iloc[0]
    assert mi == "Has the patient had a myocardial infarction in the 6 months before 2144-03-09?"  # its chart date
    assert len(patients) == answers["patient"].nunique() * 13
    assert "review-data" in (tmp_path / "mimic" / "review.html").read_text()
    # apixaban's numeric criteria carry no rule: reported, not decided
    apixaban = {item.id: item for item in read_criteria(REPO / "criteria" / "apixaban.yaml")}
    assert apixaban["lowest_platelets"].met("90") is None and apixaban["t2d"].met("Yes") is True


def test_cost_per_note_patient_and_thousand_notes():
    from clinical_distil.eval_inference import cost

    assert cost(120.0, 6, 3, 2) == {"seconds_per_note": 20.0, "seconds_per_patient": 40.0,
                                    "seconds_per_1000_notes": 20000.0, "gpu_hours_per_1000_notes": 11.1111}
    assert cost(120.0, 6, 3, 0)["gpu_hours_per_1000_notes"] is None
    assert cost(None, 6, 3, 1) == {"seconds_per_note": None, "seconds_per_patient": None,
                                   "seconds_per_1000_notes": None, "gpu_hours_per_1000_notes": None}
