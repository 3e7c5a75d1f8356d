"""Stage 0: pick N discharge summaries (one per admission) from MIMIC-III or MIMIC-IV-Note.

    python a-generate-synthetic-training-data/synthetic-0-select-notes.py \\
        --source data/mimic/NOTEEVENTS.csv.gz --num_notes 100000
writes data/mimic/notes_100000.csv.gz (subject_id, hadm_id, note_id, text). --help lists every flag.
"""

import time

from clinical_distil import layout, select
from clinical_distil.cli import run_stage
from clinical_distil.files import FolderLock, InputError, check_output_folder, write_csv
from clinical_distil.stages import SelectSettings


def main(settings: SelectSettings) -> None:
    started = time.time()
    target = layout.resolve(settings.output) if settings.output else layout.notes_file(
        layout.data_root(settings.data_dir), settings.num_notes)
    check_output_folder(target.parent, "--output")
    if target.is_dir():
        raise InputError(f"--output {target} is a folder; give a file name such as notes_{settings.num_notes}.csv.gz")
    if target.exists() and not settings.overwrite:
        print(f"{target} exists; nothing to do (pass --overwrite to select again)")
        return
    source = select.check_source(layout.resolve(settings.source))
    excluded = select.read_subject_ids(layout.resolve(settings.exclude_subjects)) if settings.exclude_subjects else set()
    lock = FolderLock(target.parent, "the notes", name=layout.lock_name(target.name))  # noqa: F841 (held to the end)
    selected = select.select_notes(source, settings.num_notes, seed=settings.seed,
                                  exclude_subjects=excluded)
    write_csv(selected, target)
    print(f"wrote {len(selected)} notes from {selected['subject_id'].nunique()} patients to {target} "
          f"in {time.time() - started:.1f}s")


if __name__ == "__main__":
    run_stage(SelectSettings, main)
