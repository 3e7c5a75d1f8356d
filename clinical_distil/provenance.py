"""What a benchmark's or experiment's record says of its run (date, card, command, code), and appending a run to a
file of records (bench/results.py reads them)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from clinical_distil.files import InputError, write_text
from clinical_distil.layout import REPO_ROOT


def code_version() -> str:
    """The commit measured, `-dirty` when the working tree differs from it (`git describe`); in a copy of the tree
    without git (a GPU node's copy), the commit the copy was made from as CLINICAL_DISTIL_CODE names it, else
    unknown."""
    try:
        done = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=7"], cwd=REPO_ROOT,
                              capture_output=True, text=True)
    except OSError:  # no git on the machine
        done = None
    if done is not None and done.returncode == 0 and done.stdout.strip():
        return done.stdout.strip()
    if "CLINICAL_DISTIL_CODE" in os.environ:
        return os.environ["CLINICAL_DISTIL_CODE"] + " (copy without git)"
    return "unknown"


def card() -> str:
    """The accelerator, in words: GPU 0's name with the number of GPUs visible, or the CPU with its core count."""
    import torch

    if not torch.cuda.is_available():
        return f"CPU ({os.cpu_count()} cores)"
    count = torch.cuda.device_count()
    return f"{torch.cuda.get_device_name(0)} ({count} GPU{'s' if count > 1 else ''} visible)"


def provenance(script: str) -> dict:
    """date, card, command (`script` as typed from the repository root, with this process's arguments) and code: the
    fields every run record starts with."""
    return {"date": time.strftime("%Y-%m-%d"), "card": card(), "command": " ".join(["python", script, *sys.argv[1:]]),
            "code": code_version()}


def runs_of(path: Path) -> list[dict]:
    """The runs a file of records holds ({"runs": [...]}; none when it is missing)."""
    if not path.exists():
        return []
    try:
        runs = json.loads(path.read_text()).get("runs")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        runs = None
    if not isinstance(runs, list):
        raise InputError(f"{path} is not a file of runs (a JSON object with a list under \"runs\"); give another file")
    return runs


def append_run(path: Path, record: dict) -> Path:
    """Add one run to a file of runs (made when missing), keeping the earlier ones."""
    return write_text(json.dumps({"runs": [*runs_of(path), record]}, indent=1) + "\n", path)
