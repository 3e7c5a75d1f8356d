"""Note selection (stage 0) on both MIMIC formats, and its bad-input errors."""

import gzip
import shutil

import pandas as pd
import pytest

from clinical_distil.files import InputError
from clinical_distil.select import NOTE_COLUMNS, detect_format, discharge_notes, select_notes

from conftest import SAMPLES, run_script

MIMIC_III = SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz"
MIMIC_IV = SAMPLES / "mimic-iv-note" / "discharge.csv.gz"
SCRIPT = "a-generate-synthetic-training-data/synthetic-0-select-notes.py"


def test_mimic_iii_keeps_one_valid_report_per_admission():
    raw = pd.read_csv(MIMIC_III)
    notes = discharge_notes(raw)
    assert list(notes.columns) == NOTE_COLUMNS
    assert notes["hadm_id"].is_unique
    summaries = raw[raw["CATEGORY"] == "Discharge summary"]
    assert len(notes) == summaries["HADM_ID"].nunique() == 33
    # the ISERROR row and the addendum are gone; the main report of that admission stays
    error_row = summaries[summaries["ISERROR"] == 1]["ROW_ID"].item()
    addendum = summaries[summaries["DESCRIPTION"] == "Addendum"].iloc[0]
    assert error_row not in set(notes["note_id"])
    assert addendum["ROW_ID"] not in set(notes["note_id"])
    kept = notes[notes["hadm_id"] == addendum["HADM_ID"]]["text"].item()
    assert kept.startswith("Admission Date:")
    # one patient has two admissions, both kept
    assert notes["subject_id"].value_counts().max() == 2


def test_mimic_iii_addendum_kept_when_it_is_the_only_note():
    raw = pd.read_csv(MIMIC_III)
    addendum = raw[raw["DESCRIPTION"] == "Addendum"].iloc[0]
    only_addendum = raw[~((raw["HADM_ID"] == addendum["HADM_ID"]) & (raw["DESCRIPTION"] == "Report"))]
    notes = discharge_notes(only_addendum)
    assert notes[notes["hadm_id"] == addendum["HADM_ID"]]["note_id"].item() == addendum["ROW_ID"]


def test_mimic_iv_keeps_latest_discharge_note_and_drops_addenda():
    raw = pd.read_csv(MIMIC_IV)
    notes = discharge_notes(raw)
    assert len(notes) == 24 and notes["hadm_id"].is_unique
    assert not notes["note_id"].str.contains("-AD-").any()
    draft_hadm = raw.groupby("hadm_id").size().idxmax()
    kept = notes[notes["hadm_id"] == draft_hadm]
    latest = raw[(raw["hadm_id"] == draft_hadm) & (raw["note_type"] == "DS")].sort_values("note_seq").iloc[-1]
    assert kept["note_id"].item() == latest["note_id"]
    assert "Brief Hospital Course" in kept["text"].item()


def test_sampling_is_seeded_and_excludes_subjects(tmp_path):
    first = select_notes(MIMIC_III, 10, seed=1)
    assert first.equals(select_notes(MIMIC_III, 10, seed=1))
    assert not first.equals(select_notes(MIMIC_III, 10, seed=2))
    excluded = set(first["subject_id"])
    rest = select_notes(MIMIC_III, None, exclude_subjects=excluded)
    assert excluded.isdisjoint(rest["subject_id"])
    assert len(rest) == 33 - len(first) - first["subject_id"].isin([10004]).sum()  # 10004 has two admissions


def test_plain_and_gzip_csv_give_the_same_notes(tmp_path):
    plain = tmp_path / "discharge.csv"
    with gzip.open(MIMIC_IV, "rb") as source, open(plain, "wb") as target:
        shutil.copyfileobj(source, target)
    assert select_notes(plain, 5, seed=3).equals(select_notes(MIMIC_IV, 5, seed=3))


def test_detect_format_names_missing_columns():
    with pytest.raises(InputError, match="lacks column.*ISERROR"):
        detect_format(["ROW_ID", "SUBJECT_ID", "HADM_ID", "CHARTDATE", "CATEGORY", "DESCRIPTION", "TEXT"])
    with pytest.raises(InputError, match="not a MIMIC-III"):
        detect_format(["id", "body"])


def test_cli_writes_contract_file_and_does_not_redo(tmp_path):
    result = run_script(SCRIPT, "--source", str(MIMIC_III), "--num_notes", "12", "--data_dir", str(tmp_path),
                        cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    output = tmp_path / "mimic" / "notes_12.csv.gz"
    notes = pd.read_csv(output)
    assert list(notes.columns) == NOTE_COLUMNS and len(notes) == 12
    mtime = output.stat().st_mtime_ns
    again = run_script(SCRIPT, "--source", str(MIMIC_III), "--num_notes", "12", "--data_dir", str(tmp_path))
    assert again.returncode == 0 and "exists" in again.stdout
    assert output.stat().st_mtime_ns == mtime


@pytest.mark.parametrize("case, message", [
    ("missing", "notes source not found"),
    ("columns", "not a MIMIC-III NOTEEVENTS"),
    ("too_many", "asked for 500 notes but"),
    ("not_csv", "cannot read notes source"),
])
def test_cli_bad_input_one_line_exit_2_nothing_written(tmp_path, case, message):
    source = tmp_path / "notes.csv"
    if case == "columns":
        source.write_text("id,body\n1,hello\n")
    elif case == "too_many":
        shutil.copy(MIMIC_III, tmp_path / "NOTEEVENTS.csv.gz")
        source = tmp_path / "NOTEEVENTS.csv.gz"
    elif case == "not_csv":
        source = tmp_path / "notes.csv.gz"
        source.write_bytes(b"\x1f\x8b this is not gzip")
    number = "500" if case == "too_many" else "5"
    result = run_script(SCRIPT, "--source", str(source), "--num_notes", number, "--data_dir", str(tmp_path / "out"))
    assert result.returncode == 2
    error_lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(error_lines) == 1 and message in error_lines[0]
    assert "Traceback" not in result.stderr
    assert not (tmp_path / "out").exists()
