"""How stages hand files to each other: atomic writes, CSV reading with clear errors, model folders.

Writes are atomic (a temporary file in the same folder, then a rename), so an interrupted stage
never leaves a half-written file that a later run would mistake for finished output. Where the
files are is clinical_distil/layout.py's business.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import Iterator

import pandas as pd

from clinical_distil.layout import lock_name, resolve

log = logging.getLogger(__name__)

class InputError(Exception):
    """Bad input a researcher can fix: the CLI prints the message on one line and exits 2."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


# the mode a plainly created file gets: a temporary file is 0600, which a shared cluster's group could not read
FILE_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to `target`; rename it onto `target` only on success."""
    target = Path(target)
    if target.is_dir():
        raise InputError(f"{target} is a folder; give a file name")
    if target.parent.exists() and not target.parent.is_dir():
        raise InputError(f"{target.parent} is a file, not a folder; choose another output place")
    target.parent.mkdir(parents=True, exist_ok=True)
    handle, temp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(handle)
    temp_path = Path(temp_name)
    try:
        yield temp_path
        if temp_path.exists():
            os.chmod(temp_path, FILE_MODE)
        os.replace(temp_path, target)
    finally:
        if temp_path.exists():
            temp_path.unlink()


def check_output_folder(folder: Path, flag: str = "--output_dir") -> Path:
    """An output folder must be a folder (or not exist yet): refused in one line when a file has its name."""
    if folder.exists() and not folder.is_dir():
        raise InputError(f"{flag} {folder} is a file, not a folder; give a folder")
    for parent in folder.parents:
        if parent.exists():
            if not parent.is_dir():
                raise InputError(f"{flag} {folder} lies inside {parent}, which is a file")
            break
    return folder




def _alive_here(holder: str) -> bool:
    """Whether the lock file's "pid N on HOST" names a live process of this host (True when it cannot tell)."""
    words = holder.split()
    if len(words) != 4 or words[0] != "pid" or not words[1].isdigit() or words[3] != os.uname().nodename:
        return True
    try:
        os.kill(int(words[1]), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class FolderLock:
    """The lock of one output folder while a run writes into it; released by `release()` or the process's end.

    An OS file lock (flock): it ends with the process that held it, however that process ended, so a killed
    run never leaves a stale lock. The lock file is removed on release (and at exit), with the folder when
    the lock made them and nothing else came into them: a run refused after its lock leaves nothing behind.
    """

    def __init__(self, folder: Path, what: str = "the output", name: str = lock_name(), advice: str = "",
                 wait_seconds: float = 0.0):
        """`wait_seconds`: how long to wait, when the process that took the lock has died, for whatever still
        holds it to end before refusing (the driver waits out a stopping step of its killed predecessor, whose
        guard holds the lock until the step has stopped); a live holder is refused at once."""
        self.handle = None
        # under torchrun or accelerate the first process locks for all of them
        if os.environ.get("LOCAL_RANK", "0") != "0" or os.environ.get("RANK", "0") != "0":
            return
        import atexit
        import fcntl

        check_output_folder(folder)
        self.made_folders = []  # the folders the lock makes, the deepest first
        for path in (folder, *folder.parents):
            if path.exists():
                break
            self.made_folders.append(path)
        folder.mkdir(parents=True, exist_ok=True)
        self.path = folder / name
        deadline = time.monotonic() + wait_seconds
        while True:
            handle = open(self.path, "a+")
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                handle.close()
                if time.monotonic() < deadline and not _alive_here(holder):
                    if wait_seconds:
                        log.warning("waiting up to %.0fs for the holder of %s (%s) to end", wait_seconds, folder,
                                    holder)
                        wait_seconds = 0.0  # said once
                    time.sleep(0.2)
                    continue
                raise InputError(f"another run is writing to {folder} ({holder}); wait for it to end, or "
                                 f"{advice or f'write {what} elsewhere'}") from None
            # the holder before us may have removed the file between our open and our lock: lock the live file
            try:
                live = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
            except FileNotFoundError:
                live = False
            if live:
                break
            handle.close()
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()} on {os.uname().nodename}\n")
        handle.flush()
        self.handle = handle
        atexit.register(self.release)

    def release(self) -> None:
        if self.handle is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()  # before the unlock: a waiting run then finds the file gone and makes a new one
        self.handle.close()
        self.handle = None
        for path in self.made_folders:
            try:
                path.rmdir()  # only when nothing came into it
            except OSError:
                break


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


@contextlib.contextmanager
def atomic_group(targets: list[Path]) -> Iterator[list[Path]]:
    """Staging paths for several outputs (files or folders) that must appear together: the caller writes
    each into its staging path; on success all are renamed onto their targets in one go, on failure none.

    A staging path keeps its target's name after a `.partial.` prefix, so a writer that looks at the
    suffix (.csv.gz is gzipped) writes the right format.
    """
    import shutil

    staged = [target.with_name(f".partial.{target.name}") for target in targets]
    for target, stage in zip(targets, staged):
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(stage) if stage.is_dir() else stage.unlink(missing_ok=True)  # left by an interrupted group
    try:
        yield staged
        for stage in staged:
            if stage.is_file():
                os.chmod(stage, FILE_MODE)
        for target, stage in zip(targets, staged):
            if target.is_dir():
                shutil.rmtree(target)
            os.replace(stage, target)
    finally:
        for stage in staged:
            if stage.is_dir():
                shutil.rmtree(stage, ignore_errors=True)
            elif stage.exists():
                stage.unlink()


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
    """Where a model loads from: a folder that exists (a relative path read against the repository, as every
    path a stage is given), resolved; else the hub id unchanged."""
    local = resolve(model_id)
    return str(local) if local.exists() else model_id


ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")  # what PEFT saves, in its order of preference
ADAPTER_HINT = "give a checkpoint-N or final/ folder of finetune.py"


def safetensors_header(path: Path) -> dict | None:
    """The JSON header of a safetensors file (8 bytes of length, then the header), or None where the file is
    not one: read without the tensors, so a damaged or cut-off file is caught before a model loads."""
    import json
    import struct

    try:
        size = path.stat().st_size
        with open(path, "rb") as handle:
            prefix = handle.read(8)
            if len(prefix) < 8:
                return None
            length = struct.unpack("<Q", prefix)[0]
            if length > size - 8 or length > 100_000_000:
                return None
            header = json.loads(handle.read(length).decode("utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        return None
    return header if isinstance(header, dict) else None


def check_adapter_folder(folder: str | os.PathLike) -> dict:
    """A LoRA adapter folder as PEFT reads it: adapter_config.json holding a JSON object, and the adapter's
    weights beside it (a safetensors file with a readable header). Its config, read; one line naming what is
    wrong otherwise, before a model loads (PEFT finds these only after the base model is in memory)."""
    import json

    folder = Path(folder)
    if not folder.is_dir():
        raise InputError(f"adapter folder not found: {folder}; {ADAPTER_HINT}")
    config_path = folder / "adapter_config.json"
    if not config_path.is_file():
        raise InputError(f"adapter folder has no adapter_config.json: {folder}; {ADAPTER_HINT}")
    try:
        config = json.loads(config_path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as error:
        raise InputError(f"{config_path} is not JSON ({str(error).splitlines()[0]}); {ADAPTER_HINT}") from None
    if not isinstance(config, dict):
        raise InputError(f"{config_path} holds a JSON {type(config).__name__}, not the object of LoRA settings PEFT "
                         f"writes; {ADAPTER_HINT}")
    weights = next((folder / name for name in ADAPTER_WEIGHTS if (folder / name).is_file()), None)
    if weights is None:
        raise InputError(f"adapter folder {folder} has no adapter weights ({' or '.join(ADAPTER_WEIGHTS)}); "
                         f"{ADAPTER_HINT}")
    if weights.stat().st_size == 0:
        raise InputError(f"{weights} is empty; {ADAPTER_HINT}")
    if weights.suffix == ".safetensors" and safetensors_header(weights) is None:
        raise InputError(f"{weights} is not a readable safetensors file (damaged or cut off); {ADAPTER_HINT}")
    return config


def check_model(model_id: str, role: str = "--model_id") -> None:
    """A model a stage or run will load, checked before anything is written: a folder holding config.json (a
    relative path read against the repository, as model_location loads it) or a hub id, which with
    HF_HUB_OFFLINE set must be in the local hub cache; else one line naming `role` (the flag or setting that gave
    it) and what to give instead. A name that reads as a path (absolute, ~ or ., an existing folder, or not
    owner/name) is never taken for a hub id, so a mistyped folder is not sent to the hub."""
    local = resolve(model_id)
    if (local / "config.json").is_file():
        return
    if local.exists() or Path(model_id).expanduser().is_absolute() or model_id.startswith((".", "~")) \
            or model_id.count("/") != 1:
        raise InputError(f"{role} {model_id} is not a model folder (no config.json in {local}); give a folder "
                         "holding a model or a hub id")
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        from huggingface_hub import try_to_load_from_cache

        if not isinstance(try_to_load_from_cache(model_id, "config.json"), str):
            raise InputError(f"{role} {model_id} is neither a local folder ({local}) nor in the hub cache, and "
                             "HF_HUB_OFFLINE is set; download it first or give a local folder")
