"""A fine-tuning run's folder: its checkpoint-N folders (whole or cut off while being written), the one a run
resumes from, and the refusal to train over an earlier run unless asked."""

from __future__ import annotations

import logging
from pathlib import Path

from clinical_distil import layout
from clinical_distil.files import InputError

log = logging.getLogger(__name__)


def check_run_folder(output_dir: Path, resume_from_checkpoint: str | None, overwrite: bool) -> bool:
    """Whether the run folder must be emptied first; refuse to train over an earlier run unless asked."""
    earlier = [*output_dir.glob(layout.CHECKPOINT_GLOB), layout.final_adapter(output_dir),
               layout.training_summary(output_dir)]
    if resume_from_checkpoint or not any(path.exists() for path in earlier):
        return False
    if overwrite:
        return True
    raise InputError(f"{output_dir} already holds a run; pass --resume_from_checkpoint last to continue it, "
                     "--overwrite to start again, or another --output_dir")


def checkpoint_complete(folder: Path) -> bool:
    """Whether a checkpoint was written to its end: the run's totals come last (after the trainer's state)."""
    return (folder / layout.PROGRESS_FILE).exists()


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint-N folders, oldest first."""
    found = [path for path in run_dir.glob(layout.CHECKPOINT_GLOB)
             if path.is_dir() and path.name.split("-", 1)[1].isdigit()] if run_dir.is_dir() else []
    return sorted(found, key=lambda path: int(path.name.split("-", 1)[1]))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    return [path for path in checkpoints(run_dir) if checkpoint_complete(path)]


def resumed_checkpoint(output_dir: Path, resume_from_checkpoint: str | None, set_aside: bool = False) -> Path | None:
    """The checkpoint a run continues from: the given folder, or the newest complete one for "last"; None for
    a new run. A checkpoint cut off while it was written (the process killed during the save) is never
    picked; with `set_aside` it is renamed incomplete-checkpoint-N, out of the trainer's way."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint != "last":
        path = layout.resolve(resume_from_checkpoint)
        if not path.is_dir():
            raise InputError(f"--resume_from_checkpoint {path} is not a folder; give a checkpoint-N folder of "
                             "finetune.py, or last")
        if not checkpoint_complete(path):
            raise InputError(f"{path} was not written to its end (no {layout.PROGRESS_FILE} or trainer state); "
                             "give another checkpoint, or last")
        return path
    complete = complete_checkpoints(output_dir)
    newest = int(complete[-1].name.split("-")[1]) if complete else -1
    cut_off = [path for path in checkpoints(output_dir) if not checkpoint_complete(path)
               and int(path.name.split("-")[1]) > newest]
    for path in cut_off:
        log.warning("%s was not written to its end; not resumed from", path)
        if set_aside:
            path.rename(path.with_name(f"incomplete-{path.name}"))
    if not complete:
        raise InputError(f"--resume_from_checkpoint last: no complete checkpoint in {output_dir}"
                         f"{' (' + cut_off[0].name + ' was cut off while being written)' if cut_off else ''}; "
                         "pass --overwrite to start again")
    return complete[-1]
