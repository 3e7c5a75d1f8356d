"""`extract` (extract.py): criteria x notes -> prompts; answers -> grounded rows, patient and cohort tables.

Notes come from any of the sources the project reads (`read_notes`), one row per note with its patient and
a reference date (for questions about time windows). Every note is asked every criterion with the answer
prompt the students were trained on. An answer's quote (the reply's `source`) is looked for in the note:
exactly, then with case and spacing ignored, then fuzzily (rapidfuzz; a fuzzy match must state the quote's
numbers), and its character offsets (in code points, as Python counts) are kept so the review page can
highlight it. An answer of the wrong type for its criterion is off-type and meets no rule. A patient meets a
criterion with a rule when any of their notes does; a decision resting only on quotes found in no note is
counted as ungrounded (and, with `require_grounded`, not met).
"""

from __future__ import annotations

import hashlib
import html
import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import pandas as pd
from rapidfuzz import fuzz

from clinical_distil import n2c2
from clinical_distil import select as note_sources
from clinical_distil.criteria import Criterion
from clinical_distil.preprocess import prompt_text
from clinical_distil.files import InputError, read_csv
from clinical_distil.metrics import extract_answer
from clinical_distil.parsing import json_values
from clinical_distil.prompts import NOT_FOUND, PromptTemplates

NOTE_COLUMNS = ["patient", "note_id", "reference_date", "text"]
PROMPT_COLUMNS = ["id", "patient", "note_id", "criterion", "question", "prompt"]
ANSWER_COLUMNS = ["patient", "note_id", "criterion", "question", "answer", "met", "quote", "quote_in_note",
                  "quote_start", "quote_end", "quote_score", "section", "quote_section", "finish_reason",
                  "note_truncated", "output"]
# a section heading: a line that starts with a capitalised phrase and a colon ("Past Medical History:")
HEADING = re.compile(r"^[ \t]*([A-Z][A-Za-z0-9 /&(),'-]{1,60}):", re.MULTILINE)
ID_SEPARATOR = "::"
# a number as a quote states it: 1,200.5 (thousands separated), 1.4, .5, 12
NUMBER_IN_TEXT = re.compile(r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d*\.\d+|\d+")
GROUNDED = ("exact", "normalized", "fuzzy")  # quote_in_note outcomes of a quote found in its note
OFF_TYPE = "off-type"  # the `met` outcome of an answer of the wrong type for its criterion


# --- notes -----------------------------------------------------------------------------------------

def _from_frame(frame: pd.DataFrame, source: Path) -> tuple[pd.DataFrame, str]:
    """A notes CSV: MIMIC-III NOTEEVENTS / MIMIC-IV discharge (one discharge summary per admission), or a table
    with `text` and optionally `patient` or `subject_id`, `note_id`, `date`."""
    columns = set(frame.columns)
    if {"ROW_ID", "CATEGORY", "TEXT"} <= columns or {"note_id", "note_type", "text"} <= columns:
        kind = note_sources.detect_format(columns)
        chosen = note_sources.discharge_notes(frame)
        if kind == "mimic-iii":
            dates = frame.set_index("ROW_ID")["CHARTDATE"]
        else:
            dates = frame.set_index("note_id")["charttime"] if "charttime" in columns else pd.Series(dtype=str)
        return pd.DataFrame({"patient": chosen["subject_id"].astype(str), "note_id": chosen["note_id"].astype(str),
                             "reference_date": [str(dates.get(note, ""))[:10] for note in chosen["note_id"]],
                             "text": chosen["text"].astype(str)}), kind
    if "text" not in columns:
        raise InputError(f"{source} has no text column; a notes CSV needs text (and optionally patient or "
                         "subject_id, note_id, date), or give a MIMIC-III/IV notes file")
    patients = frame["patient"] if "patient" in columns else frame["subject_id"] if "subject_id" in columns else None
    note_ids = frame["note_id"].astype(str) if "note_id" in columns else pd.Series(
        [str(index) for index in range(len(frame))], index=frame.index)
    return pd.DataFrame({"patient": (patients if patients is not None else note_ids).astype(str),
                         "note_id": note_ids, "reference_date": frame["date"].astype(str).str[:10]
                         if "date" in columns else "", "text": frame["text"].astype(str)}), "notes-csv"


def read_notes(path: str | Path, limit: int | None = None) -> tuple[pd.DataFrame, str]:
    """The notes of a source as `patient, note_id, reference_date, text`, and the source's kind (n2c2-xml,
    text-files, mimic-iii, mimic-iv, notes-csv); one line for what cannot be read."""
    source = Path(path)
    if not source.exists():
        raise InputError(f"notes not found: {source}")
    if source.is_dir():
        if any(source.glob("*.xml")):
            rows = []
            for patient in n2c2.read_folder(source):
                dates = patient.record_dates
                rows.append({"patient": patient.patient, "note_id": patient.patient,
                             "reference_date": dates[-1] if dates else "", "text": patient.text.strip()})
            notes, kind = pd.DataFrame(rows, columns=NOTE_COLUMNS), "n2c2-xml"
        elif any(source.glob("*.txt")):
            files = sorted(source.glob("*.txt"))
            notes = pd.DataFrame({"patient": [path.stem for path in files], "note_id": [path.stem for path in files],
                                  "reference_date": "", "text": [path.read_text(errors="replace") for path in files]})
            kind = "text-files"
        else:
            raise InputError(f"{source} holds no .xml (n2c2) or .txt notes")
    else:
        frame = read_csv(source, what="notes", keep_default_na=False, dtype=str, low_memory=False)
        notes, kind = _from_frame(frame, source)
    notes = notes[notes["text"].str.strip() != ""].reset_index(drop=True)
    if notes.empty:
        raise InputError(f"{source} holds no note with text")
    duplicated = notes["note_id"][notes["note_id"].duplicated()]
    if not duplicated.empty:
        raise InputError(f"{source}: note id {duplicated.iloc[0]!r} appears twice; give every note its own note_id")
    return (notes.head(limit) if limit else notes).reset_index(drop=True), kind


# --- prompts ---------------------------------------------------------------------------------------

def prompt_table(notes: pd.DataFrame, criteria: Sequence[Criterion],
                 templates: PromptTemplates | None = None) -> pd.DataFrame:
    """One row per note x criterion, notes in order, criteria in the file's order."""
    rows = []
    for note in notes.itertuples(index=False):
        for criterion in criteria:
            question = criterion.ask(note.reference_date)
            rows.append({"id": f"{note.note_id}{ID_SEPARATOR}{criterion.id}", "patient": note.patient,
                         "note_id": note.note_id, "criterion": criterion.id, "question": question,
                         "prompt": prompt_text(note.text, question, templates)})
    return pd.DataFrame(rows, columns=PROMPT_COLUMNS)


def prompts_digest(prompts: pd.DataFrame) -> str:
    """What identifies a run's prompts (so that answers to other prompts are never mixed in)."""
    return hashlib.sha256("\n".join(prompts["id"] + "\t" + prompts["prompt"]).encode()).hexdigest()[:16]


# --- answers ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Located:
    how: str  # exact, normalized, fuzzy, none (quoted but not found), not_applicable (nothing quoted)
    start: int | None = None
    end: int | None = None
    score: float | None = None


def fold_case(text: str) -> str:
    """Lower case that keeps one character per character, so offsets into the fold are offsets into the text
    (str.lower turns 'İ' into two code points and would shift every offset after it)."""
    lowered = text.lower()
    return lowered if len(lowered) == len(text) else "".join(char.lower()[0] for char in text)


def numbers_in(text: str) -> list[float]:
    """The numbers a text states, in order ("1,200" is 1200)."""
    return [float(found.group().replace(",", "")) for found in NUMBER_IN_TEXT.finditer(text)]


def locate_quote(quote: Any, note: str, threshold: float = 90.0) -> Located:
    """Where a quote stands in the note, as character offsets [start, end) (code points).

    A fuzzy match must state the same numbers as the quote: a score counts a digit like a letter, so
    "Creatinine 4.1" would otherwise be found in "Creatinine 1.1".
    """
    if not isinstance(quote, str) or not quote.strip() or quote.strip().lower() in (NOT_FOUND, "na", "n/a", "none"):
        return Located("not_applicable")
    quote = quote.strip()
    start = note.find(quote)
    if start >= 0:
        return Located("exact", start, start + len(quote), 100.0)
    spaced = re.compile(r"\s+".join(map(re.escape, quote.split())), re.IGNORECASE)
    found = spaced.search(note)
    if found:
        return Located("normalized", found.start(), found.end(), 100.0)
    alignment = fuzz.partial_ratio_alignment(fold_case(quote), fold_case(note))
    if alignment is not None and alignment.score >= threshold:
        # the aligned window is as long as the quote and may cut a number or a word at either end: widen it
        start, end = alignment.dest_start, alignment.dest_end
        for number in NUMBER_IN_TEXT.finditer(note, max(0, start - 40), min(len(note), end + 40)):
            if number.start() < start < number.end():
                start = number.start()
            if number.start() < end < number.end():
                end = number.end()
        while start > 0 and note[start - 1].isalnum() and note[start].isalnum():
            start -= 1
        while end < len(note) and note[end - 1].isalnum() and note[end].isalnum():
            end += 1
        while start < end and note[start].isspace():
            start += 1
        while end > start and note[end - 1].isspace():
            end -= 1
        if numbers_in(note[start:end]) == numbers_in(quote):
            return Located("fuzzy", start, end, round(alignment.score, 1))
    return Located("none", score=None if alignment is None else round(alignment.score, 1))


def heading_before(note: str, offset: int | None) -> str:
    """The section heading above a character offset of the note ('' when none is)."""
    if offset is None:
        return ""
    headings = [match.group(1).strip() for match in HEADING.finditer(note, 0, offset + 1) if match.start() <= offset]
    return headings[-1] if headings else ""


def reply_fields(output: Any, finish_reason: Any = "stop") -> dict[str, Any]:
    """The answer (normalized as the metrics read it), the quoted source and the section of one reply."""
    fields = {"answer": extract_answer(output, finish_reason), "quote": None, "section": None}
    reason = str(finish_reason) if isinstance(finish_reason, str) else "stop"
    for value in json_values(output, reason) if isinstance(output, str) else []:
        for candidate in ([value] if isinstance(value, dict) else [item for item in value if isinstance(item, dict)]
                          if isinstance(value, list) else []):
            lowered = {str(key).strip().lower(): item for key, item in candidate.items()}
            if "answer" in lowered:
                fields["quote"] = None if lowered.get("source") is None else str(lowered["source"])
                fields["section"] = None if lowered.get("section") is None else str(lowered["section"])
                return fields
    return fields


def answer_table(answered: pd.DataFrame, notes: pd.DataFrame, criteria: Sequence[Criterion],
                 threshold: float = 90.0) -> pd.DataFrame:
    """One row per note x criterion: the answer, met / not met by the criterion's rule (off-type for an answer of
    the wrong type), the quote and where it stands in the note."""
    texts = dict(zip(notes["note_id"], notes["text"]))
    by_id = {criterion.id: criterion for criterion in criteria}
    rows = []
    for row in answered.to_dict("records"):
        note, criterion = texts[str(row["note_id"])], by_id[str(row["criterion"])]
        fields = reply_fields(row.get("output"), row.get("finish_reason"))
        located = locate_quote(fields["quote"], note, threshold)
        answer = fields["answer"]
        if answer is not None and not criterion.fits(answer):
            met = OFF_TYPE
        else:
            decided = criterion.met(answer) if answer is not None else (None if criterion.rule is None else False)
            met = "" if decided is None else ("met" if decided else "not met")
        rows.append({"patient": str(row["patient"]), "note_id": str(row["note_id"]), "criterion": criterion.id,
                     "question": row["question"], "answer": answer if answer is not None else "",
                     "met": met, "quote": fields["quote"] or "",
                     "quote_in_note": located.how, "quote_start": located.start, "quote_end": located.end,
                     "quote_score": located.score, "section": fields["section"] or "",
                     "quote_section": heading_before(note, located.start), "finish_reason": row.get("finish_reason"),
                     "note_truncated": row.get("note_truncated"), "output": row.get("output")})
    table = pd.DataFrame(rows, columns=ANSWER_COLUMNS)
    for column in ("quote_start", "quote_end"):
        table[column] = table[column].astype("Int64")
    return table


PATIENT_COLUMNS = ["patient", "criterion", "met", "met_ungrounded", "answer", "evidence_note", "quote",
                   "quote_in_note", "notes"]


def patient_table(answers: pd.DataFrame, criteria: Sequence[Criterion],
                  require_grounded: bool = False) -> pd.DataFrame:
    """One row per patient x criterion. With a rule: met when any note meets it (evidence: the first such note
    whose quote was found in it, else the first such note), else not met. `met_ungrounded` marks a decision that
    rests only on notes whose quote was not found in them (nothing quoted, or a quote found in no note): met
    all the same, or not met with `require_grounded`. Without a rule: the number the patient's last note
    reported (evidence: that note); off-type answers report nothing."""
    rows = []
    order = {criterion.id: index for index, criterion in enumerate(criteria)}
    for (patient, criterion_id), group in answers.groupby(["patient", "criterion"], sort=False):
        criterion = criteria[order[criterion_id]]
        ungrounded = False
        if criterion.rule is not None:
            meeting = group[group["met"] == "met"]
            grounded = meeting[meeting["quote_in_note"].isin(GROUNDED)]
            evidence = grounded.iloc[0] if len(grounded) else meeting.iloc[0] if len(meeting) else None
            ungrounded = evidence is not None and grounded.empty
            decision = "met" if evidence is not None and not (ungrounded and require_grounded) else "not met"
        else:
            reported = group[(group["answer"].astype(str).str.strip() != "") & (group["met"] != OFF_TYPE)]
            evidence = reported.iloc[-1] if len(reported) else None
            decision = ""
        rows.append({"patient": patient, "criterion": criterion_id, "met": decision, "met_ungrounded": ungrounded,
                     "answer": "" if evidence is None else evidence["answer"],
                     "evidence_note": "" if evidence is None else evidence["note_id"],
                     "quote": "" if evidence is None else evidence["quote"],
                     "quote_in_note": "" if evidence is None else evidence["quote_in_note"],
                     "notes": len(group)})
    return pd.DataFrame(rows, columns=PATIENT_COLUMNS)


def cohort_table(patients: pd.DataFrame, criteria: Sequence[Criterion]) -> pd.DataFrame:
    """Per criterion: patients meeting it (criteria with a rule) or reporting a value (without); then the
    patients meeting every criterion that has a rule."""
    total = patients["patient"].nunique()
    rows = []
    for criterion in criteria:
        own = patients[patients["criterion"] == criterion.id]
        counted = int((own["met"] == "met").sum()) if criterion.rule is not None else int(
            (own["answer"].astype(str).str.strip() != "").sum())
        rows.append({"criterion": criterion.id, "rule": "" if criterion.rule is None else str(criterion.rule),
                     "counts": "met" if criterion.rule is not None else "reported", "patients": counted,
                     "of": total, "share": round(counted / total, 4) if total else None})
    ruled = [criterion.id for criterion in criteria if criterion.rule is not None]
    if ruled:
        meeting = patients[patients["criterion"].isin(ruled)].groupby("patient")["met"].apply(
            lambda values: bool(len(values) == len(ruled) and (values == "met").all()))
        everyone = int(meeting.sum())
        rows.append({"criterion": "all criteria with a rule", "rule": f"{len(ruled)} criteria", "counts": "met",
                     "patients": everyone, "of": total, "share": round(everyone / total, 4) if total else None})
    return pd.DataFrame(rows, columns=["criterion", "rule", "counts", "patients", "of", "share"])


# --- review page -----------------------------------------------------------------------------------

REVIEW_TEMPLATE = Path(__file__).with_name("review_template.html")


def review_data(answers: pd.DataFrame, notes: pd.DataFrame, criteria: Sequence[Criterion], title: str,
                patients: pd.DataFrame | None = None, require_grounded: bool = False) -> dict[str, Any]:
    """What the review page shows: per patient and note the text and every criterion's answer and quote (offsets
    in code points, as answers.csv has them), and the decisions met on no quote found in a note."""
    by_note: dict[str, list[dict[str, Any]]] = {}
    for row in answers.to_dict("records"):
        by_note.setdefault(row["note_id"], []).append({
            "criterion": row["criterion"], "question": row["question"], "answer": row["answer"], "met": row["met"],
            "quote": row["quote"], "found": row["quote_in_note"],
            "start": None if pd.isna(row["quote_start"]) else int(row["quote_start"]),
            "end": None if pd.isna(row["quote_end"]) else int(row["quote_end"])})
    by_patient: dict[str, list[dict[str, Any]]] = {}
    for note in notes.itertuples(index=False):
        if note.note_id in by_note:
            by_patient.setdefault(note.patient, []).append({"note_id": note.note_id, "date": note.reference_date,
                                                            "text": note.text, "answers": by_note[note.note_id]})
    ungrounded: dict[str, list[str]] = {}
    if patients is not None:
        for row in patients[patients["met_ungrounded"].astype(bool)].itertuples(index=False):
            ungrounded.setdefault(str(row.patient), []).append(str(row.criterion))
    return {"title": title, "criteria": [{"id": criterion.id, "question": criterion.question,
                                          "rule": "" if criterion.rule is None else str(criterion.rule)}
                                         for criterion in criteria],
            "require_grounded": require_grounded,
            "ungrounded_met": sum(len(names) for names in ungrounded.values()),
            "patients": [{"patient": patient, "notes": notes_of, "ungrounded": ungrounded.get(patient, [])}
                         for patient, notes_of in by_patient.items()]}


def review_page(data: dict[str, Any]) -> str:
    """One self-contained HTML file: the data inline as JSON, the page's own script and style, no outside asset."""
    payload = json.dumps(data, ensure_ascii=False).replace("</", "<\\/").replace("<!--", "<\\!--")
    template = REVIEW_TEMPLATE.read_text()
    return template.replace("{{title}}", html.escape(data["title"])).replace("{{data}}", payload)
