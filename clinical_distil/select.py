"""`select` (stage 0): one discharge summary per admission from MIMIC-III or MIMIC-IV.

Which note is kept for an admission:
- MIMIC-III NOTEEVENTS: rows with CATEGORY "Discharge summary" and no ISERROR flag. An
  admission's main summary has DESCRIPTION "Report"; addenda ("Addendum") only add a
  line or two, so the latest "Report" is kept (by CHARTDATE, then ROW_ID), and an
  addendum only when the admission has no report at all.
- MIMIC-IV-Note discharge: rows with note_type "DS" (addenda are "AD"); the latest note
  of the admission is kept (by note_seq, then storetime), since a later sequence number
  is a later version of the same summary.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Iterable

import pandas as pd

from clinical_distil.files import InputError, read_csv

log = logging.getLogger(__name__)

NOTE_COLUMNS = ["subject_id", "hadm_id", "note_id", "text"]
MIMIC_III_COLUMNS = ["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CATEGORY", "DESCRIPTION", "ISERROR", "TEXT"]
MIMIC_IV_COLUMNS = ["note_id", "subject_id", "hadm_id", "note_type", "note_seq", "storetime", "text"]
SELECT_COMMAND = "python a-generate-synthetic-training-data/synthetic-0-select-notes.py --source PATH --num_notes N"


def detect_format(columns: Iterable[str]) -> str:
    """'mimic-iii' or 'mimic-iv' from the header; InputError naming what is missing otherwise."""
    columns = set(columns)
    if {"ROW_ID", "CATEGORY", "TEXT"} <= columns:
        missing = [column for column in MIMIC_III_COLUMNS if column not in columns]
        if missing:
            raise InputError(f"looks like MIMIC-III NOTEEVENTS but lacks column(s) {', '.join(missing)}")
        return "mimic-iii"
    if {"note_id", "note_type", "text"} <= columns:
        missing = [column for column in MIMIC_IV_COLUMNS if column not in columns]
        if missing:
            raise InputError(f"looks like MIMIC-IV-Note discharge but lacks column(s) {', '.join(missing)}")
        return "mimic-iv"
    raise InputError("not a MIMIC-III NOTEEVENTS (ROW_ID, CATEGORY, TEXT, ...) or MIMIC-IV-Note discharge "
                     f"(note_id, note_type, text, ...) file; its columns are: {shown_columns(sorted(columns))}")


def check_note_ids(frame: pd.DataFrame, source: str | Path) -> None:
    """Every note has its own note_id where the table has the column: stage B joins each teacher reply to its
    note by note_id, so a repeated one would join replies to the wrong note (or to none)."""
    if "note_id" not in frame.columns:
        return
    ids = frame["note_id"][frame["note_id"].notna()].astype(str).str.strip()
    ids = ids[ids != ""]
    repeated = ids[ids.duplicated(keep=False)]
    if repeated.empty:
        return
    first = repeated.iloc[0]
    rows = [int(row) for row in repeated.index[repeated == first][:3]]
    count = repeated.nunique()
    raise InputError(f"{source} repeats note_id {first} (rows {', '.join(map(str, rows))}"
                     f"{f'; {count} note_ids repeat' if count > 1 else ''}): give every note its own note_id "
                     "(stage B joins the teacher's replies to their notes by it)")


def shown_columns(columns: Iterable[str], limit: int = 8) -> str:
    """A header's column names for a one-line message: control characters escaped, long names and long
    headers cut (a binary file read as CSV has a header of any bytes)."""
    names = []
    for name in list(columns)[:limit]:
        text = str(name).encode("unicode_escape").decode("ascii")
        names.append(text if len(text) <= 40 else text[:37] + "...")
    more = len(list(columns)) - limit
    return ", ".join(names) + (f" and {more} more" if more > 0 else "")


def discharge_notes(frame: pd.DataFrame) -> pd.DataFrame:
    """One discharge summary per admission, as `subject_id, hadm_id, note_id, text`."""
    source_format = detect_format(frame.columns)
    if source_format == "mimic-iii":
        notes = frame[(frame["CATEGORY"].str.strip().str.lower() == "discharge summary")
                      & ~(pd.to_numeric(frame["ISERROR"], errors="coerce").fillna(0) == 1)
                      & frame["HADM_ID"].notna()].copy()
        notes["is_report"] = notes["DESCRIPTION"].str.strip().str.lower() == "report"
        notes = notes.sort_values(["HADM_ID", "is_report", "CHARTDATE", "ROW_ID"])
        notes = notes.groupby("HADM_ID", sort=False).tail(1)
        notes = notes.rename(columns={"SUBJECT_ID": "subject_id", "HADM_ID": "hadm_id", "ROW_ID": "note_id",
                                      "TEXT": "text"})
    else:
        notes = frame[(frame["note_type"].str.strip().str.upper() == "DS") & frame["hadm_id"].notna()].copy()
        notes = notes.sort_values(["hadm_id", "note_seq", "storetime"])
        notes = notes.groupby("hadm_id", sort=False).tail(1)
    notes = notes[NOTE_COLUMNS].copy()
    notes["hadm_id"] = notes["hadm_id"].astype("int64")
    notes = notes[notes["text"].fillna("").astype(str).str.strip() != ""]
    log.debug("%s: %d discharge summaries from %d rows", source_format, len(notes), len(frame))
    return notes.sort_values(["subject_id", "hadm_id"]).reset_index(drop=True)


def read_subject_ids(path: str | Path) -> set[int]:
    """Subject ids to exclude: a CSV with a subject_id column, or one id per line."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"exclude file not found: {path}")
    if path.suffix in (".csv", ".gz"):
        frame = read_csv(path, required=["subject_id"], what="exclude")
        return set(frame["subject_id"].dropna().astype("int64"))
    lines = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    try:
        return {int(line) for line in lines}
    except ValueError as error:
        raise InputError(f"exclude file {path} must hold one integer subject id per line ({error})") from error


def check_source(source: str | Path) -> Path:
    """The notes source, after the checks its header allows (it exists, it is MIMIC-III or MIMIC-IV-Note)."""
    source = Path(source)
    if not source.exists():
        raise InputError(f"notes source not found: {source} (MIMIC-III NOTEEVENTS.csv(.gz) or "
                         "MIMIC-IV-Note discharge.csv(.gz))")
    detect_format(read_csv(source, nrows=0, what="notes source").columns)
    return source


def select_notes(source: str | Path, num_notes: int | None, seed: int = 42,
                 exclude_subjects: Iterable[int] = ()) -> pd.DataFrame:
    """Read a MIMIC notes file and return `num_notes` sampled discharge summaries (all if None)."""
    source = check_source(source)
    frame = read_csv(source, what="notes source", low_memory=False)
    notes = discharge_notes(frame)
    eligible = len(notes)
    excluded = set(exclude_subjects)
    if excluded:
        notes = notes[~notes["subject_id"].isin(excluded)]
    held_out = f" ({eligible - len(notes)} of {len(excluded)} held-out subjects left out)" if excluded else ""
    if num_notes is not None and num_notes > len(notes):
        raise InputError(f"asked for {num_notes} notes but {source} has only {len(notes)} eligible discharge "
                         f"summaries{held_out}; lower --num_notes")
    # logged after the checks: a refused run prints its one line only
    log.info("%d discharge summaries in %d rows of %s%s", len(notes), len(frame), source, held_out)
    if num_notes is None:
        return notes.reset_index(drop=True)
    if num_notes < 1:
        raise InputError(f"--num_notes must be a positive integer, got {num_notes}")
    return notes.sample(n=num_notes, random_state=seed).sort_values(["subject_id", "hadm_id"]).reset_index(drop=True)
