"""Teacher quality against the truth: every stage B item on simulated notes checked against its fact sheet.

For each item: was its question readable for one fact (`verifiable`), is its answer the fact sheet's
(`answer_right`; for the "not in the note" types: is the fact truly absent from the note), and is
its quote in the note (`quote_in_note`, stage B's own source match). `teacher_precision` sums these
per question type; the paper's human review edited 12.8% of the teacher's items, and this is the
automatic analogue on simulated data. `yes_share_by_kind` shows how balanced the yes/no answers are
per kind of question (a student learns the answer a kind of question always gets).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from clinical_distil import layout as paths
from clinical_distil.files import read_csv, write_csv
from clinical_distil.layout import RunLayout
from clinical_distil.report_render import Block
from clinical_distil.tables import fmt
from simulation.truth import answer_matches, expected_answer, vitals_of

NOT_IN_NOTE_TYPES = ("na-numeric", "na-bool")


def check_items(items: pd.DataFrame, facts: dict[int, dict]) -> pd.DataFrame:
    """`items`: stage B's items (hadm_id, question_type, question, answer normalized, source_in_note).

    Items of admissions the facts do not hold are left out (a real note mixed into a run)."""
    rows = []
    for item in items.itertuples(index=False):
        record = facts.get(int(item.hadm_id)) if pd.notna(item.hadm_id) else None
        if record is None:
            continue
        expected = expected_answer(item.question, record["sheet"], vitals_of(record["mentions"]))
        answer = "NA" if str(item.answer).strip() in ("NA", "N/A", "") else item.answer
        verifiable = expected is not None
        right = verifiable and answer_matches(answer, expected.answer)
        rows.append({
            "hadm_id": item.hadm_id, "question_type": item.question_type, "question": item.question,
            "answer": answer, "expected": None if expected is None else expected.answer,
            "concept": None if expected is None else expected.concept, "verifiable": verifiable,
            "answer_right": bool(right),
            "quote_in_note": bool(getattr(item, "source_in_note", False)),
        })
    return pd.DataFrame(rows, columns=["hadm_id", "question_type", "question", "answer", "expected", "concept",
                                       "verifiable", "answer_right", "quote_in_note"])


def teacher_precision(checked: pd.DataFrame) -> pd.DataFrame:
    """Per question type (and all): items, share verifiable, precision (right among verifiable), quotes found."""
    def summarize(group: pd.DataFrame) -> dict:
        verifiable = group[group["verifiable"]]
        answerable = group[~group["question_type"].isin(NOT_IN_NOTE_TYPES)]
        return {"items": len(group), "verifiable": round(float(group["verifiable"].mean()), 3) if len(group) else None,
                "precision": round(float(verifiable["answer_right"].mean()), 3) if len(verifiable) else None,
                "quote_in_note": round(float(answerable["quote_in_note"].mean()), 3) if len(answerable) else None}
    rows = [{"question_type": kind, **summarize(group)}
            for kind, group in checked.groupby("question_type", sort=True)]
    rows.append({"question_type": "all", **summarize(checked)})
    return pd.DataFrame(rows, columns=["question_type", "items", "verifiable", "precision", "quote_in_note"])


def concept_kind(concept: str) -> str:
    """What a yes/no question asks about, from its concept: condition, event, event in a time window, drug, lab
    threshold, or social history and capacity."""
    name, _, detail = concept.partition(":")
    if not detail:
        return "social history and capacity"
    if name == "event":
        return "event in a time window" if " " in detail else "event"
    return {"condition": "condition", "drug": "drug", "lab": "lab threshold"}.get(name, name)


def yes_share_by_kind(checked: pd.DataFrame) -> pd.DataFrame:
    """Per kind of yes/no question: items, and the share the teacher answered Yes. A kind answered (almost) always
    Yes, or always No, teaches a student its answer from the wording instead of the note."""
    yes_no = checked[(checked["question_type"] == "yes_no") & checked["verifiable"]].copy()
    yes_no["kind"] = yes_no["concept"].map(concept_kind)
    yes_no["yes"] = yes_no["answer"].astype(str).str.strip().str.lower() == "yes"
    rows = [{"kind": kind, "items": len(group), "yes_share": round(float(group["yes"].mean()), 3)}
            for kind, group in yes_no.groupby("kind", sort=True)]
    return pd.DataFrame(rows, columns=["kind", "items", "yes_share"])


def corpus_facts(notes_file: Path) -> dict[int, dict] | None:
    """The facts of a simulated corpus beside its notes file, or None for real notes."""
    from clinical_distil import layout
    from simulation.corpus import read_facts

    path = layout.facts_file(Path(notes_file))
    return read_facts(path) if path.exists() else None


def report_section(layout: RunLayout) -> list[Block]:
    """The run report's section on a simulated corpus (its facts beside the notes): every kept item checked
    against the patient's truth. Installed as an entry point of clinical_distil.report_sections (pyproject.toml)."""
    facts_path = paths.facts_file(layout.notes_file)
    items_path = paths.items_file(layout.raw_dir)
    if not facts_path.exists() or not items_path.exists():
        return []
    items = read_csv(items_path, usecols=["hadm_id", "question_type", "question", "answer", "source_in_note"])
    from simulation.corpus import read_facts

    checked = check_items(items, read_facts(facts_path))
    table = teacher_precision(checked)
    write_csv(table, paths.teacher_truth_file(layout.report_dir))
    balance = yes_share_by_kind(checked)
    manifest = json.loads(layout.create_manifest.read_text()) if layout.create_manifest.exists() else {}
    return [("h2", "Teacher against the truth (simulated notes)"),
            ("p", f"The notes come from a simulated corpus whose facts are known ({facts_path}). Teacher: "
                  f"{manifest.get('teacher', layout.settings['create'].model_id)}. Each kept item's question is read "
                  "for the one fact it asks about and its answer compared with the patient's fact sheet; "
                  "'verifiable' is the share of items that could be read so, 'precision' the share of those answered "
                  "right (for the N/A types: the fact is truly not in the note), 'quote_in_note' the share of "
                  "answerable items whose quote stands in the note. The paper's physicians edited 12.8% of the "
                  "teacher's items; this is the automatic analogue."),
            ("table", table.map(fmt)),
            ("p", "The teacher's yes/no answers per kind of question (verifiable items): a kind answered nearly "
                  "always Yes, or always No, lets a student learn the answer from the wording instead of the note."),
            ("table", balance.map(fmt))]
