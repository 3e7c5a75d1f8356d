"""How stages hand files to each other: atomic writes, CSV reading with clear errors, model folders.

Writes are atomic (a temporary file in the same folder, then a rename), so an interrupted stage
never leaves a half-written file that a later run would mistake for finished output. Where the
files are is clinical_distil/layout.py's business.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import os
import tempfile
from pathlib import Path
from typing import Iterator

import pandas as pd

from clinical_distil.layout import resolve

class InputError(Exception):
    """Bad input a researcher can fix: the CLI prints the message on one line and exits 2."""


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only on success."""
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        yield temp_path
        os.replace(temp_path, target)
    finally:
        if temp_path.exists():
            temp_path.unlink()


def write_csv(frame: pd.DataFrame, target: str | os.PathLike, **kwargs) -> Path:
    """Write a CSV (gzip when the name ends in .gz) atomically; gzip output is byte-reproducible."""
    target = Path(target)
    with atomic_path(target) as temp_path:
        if target.name.endswith(".gz"):
            # no file name and no time in the gzip header: the same rows give the same bytes
            with open(temp_path, "wb") as raw, gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as packed, \
                    io.TextIOWrapper(packed, encoding="utf-8", newline="") as text:
                frame.to_csv(text, index=False, **kwargs)
        else:
            frame.to_csv(temp_path, index=False, **kwargs)
    return target


def write_text(text: str, target: str | os.PathLike) -> Path:
    target = Path(target)
    with atomic_path(target) as temp_path:
        temp_path.write_text(text, encoding="utf-8")
    return target


def read_csv(path: str | os.PathLike, required: list[str] | tuple[str, ...] = (), what: str = "",
             hint: str = "", **kwargs) -> pd.DataFrame:
    """Read a plain or gzip CSV, failing with an InputError that names the file and the fix.

    Only an empty field is missing: pandas' default would read the answer "NA" (and "N/A", "null",
    "None") as missing, so a "not in the note" answer written by one stage would reach the next as NaN.
    """
    path = Path(path)
    if "keep_default_na" not in kwargs:
        kwargs.update(keep_default_na=False, na_values=[""])
    label = f"{what} " if what else ""
    fix = f"; {hint}" if hint else ""
    if not path.exists():
        raise InputError(f"{label}file not found: {path}{fix}")
    try:
        frame = pd.read_csv(path, **kwargs)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError, OSError, EOFError) as error:
        raise InputError(f"cannot read {label}file {path}: {str(error).splitlines()[0]}{fix}") from error
    missing = [column for column in required if column not in frame.columns]
    if missing:
        raise InputError(f"{label}file {path} lacks column(s) {', '.join(missing)}{fix}")
    return frame


def find_existing(candidates: list[Path]) -> Path | None:
    """The first of `candidates` that exists (used for `name.csv` or `name.csv.gz`)."""
    return next((path for path in candidates if path.exists()), None)


def model_location(model_id: str) -> str:
    """A model that exists as a local folder, resolved against the repository; a hub id unchanged."""
    return str(resolve(model_id)) if Path(model_id).expanduser().exists() else model_id


def check_model_folder(model_id: str) -> None:
    """A model given as a path must be a folder with config.json; hub ids pass through unchecked."""
    local = Path(model_id).expanduser()
    looks_local = local.is_absolute() or model_id.startswith((".", "~")) or local.exists()
    if looks_local and not (local / "config.json").exists():
        raise InputError(f"model folder not found or has no config.json: {model_id}")
