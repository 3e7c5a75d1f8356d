"""Stage 0: pick N discharge summaries (one per admission) from MIMIC-III or MIMIC-IV-Note.

    python a-generate-synthetic-training-data/synthetic-0-select-notes.py \
        --source data/mimic/NOTEEVENTS.csv.gz --num_notes 100000
writes data/mimic/notes_100000.csv.gz (subject_id, hadm_id, note_id, text).
"""

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clinical_distil import notes  # noqa: E402
from clinical_distil.cli import run  # noqa: E402
from clinical_distil.files import data_root, resolve, write_csv  # noqa: E402


def main(source: str = "data/mimic/NOTEEVENTS.csv.gz", num_notes: int = 100000, data_dir: str | None = None,
         output: str | None = None, seed: int = 42, exclude_subjects: str | None = None,
         overwrite: bool = False) -> None:
    """Select discharge summaries.

    Args:
        source: MIMIC-III NOTEEVENTS.csv(.gz) or MIMIC-IV-Note discharge.csv(.gz); the format is detected.
        num_notes: how many admissions to sample (seeded); the output is notes_{num_notes}.csv.gz.
        data_dir: data root (default data/ in the repository, or $CLINICAL_DISTIL_DATA).
        output: output file (default {data_dir}/mimic/notes_{num_notes}.csv.gz).
        seed: sampling seed.
        exclude_subjects: file of subject ids to leave out (held-out evaluation patients).
        overwrite: replace an existing output file.
    """
    started = time.time()
    target = resolve(output) if output else notes.notes_path(data_root(data_dir), num_notes)
    if target.exists() and not overwrite:
        print(f"{target} exists; nothing to do (pass --overwrite to select again)")
        return
    excluded = notes.read_subject_ids(resolve(exclude_subjects)) if exclude_subjects else set()
    selected = notes.select_notes(resolve(source), num_notes, seed=seed, exclude_subjects=excluded)
    write_csv(selected, target)
    print(f"wrote {len(selected)} notes from {selected['subject_id'].nunique()} patients to {target} "
          f"in {time.time() - started:.1f}s")


if __name__ == "__main__":
    run(main)
