"""Chunked runs' parts: rows and chunks, shards, rows no file holds, overlaps, the manifest, progress.

The runner (runner.py) puts them together for every stage that answers prompts in chunks. Every chunk
file names the rows it holds; shards split the planned chunks round-robin, so that together they cover
every chunk once. A manifest adds up every session of a run (requests, tokens, seconds) across resumes.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from tqdm.auto import tqdm

from clinical_distil.files import InputError, write_text

Rows = tuple[int, int]  # [start, end) of input rows


@dataclass(frozen=True)
class ChunkFile:
    path: Path
    start: int
    end: int


def row_span(rows: int) -> str:
    """The rows a table has, as a --start_row may name them: "its 6 rows are 0-5"."""
    if rows == 0:
        return "it has no rows"
    return "its one row is 0" if rows == 1 else f"its {rows:,} rows are 0-{rows - 1}"


def chunk_ranges(start: int, stop: int, chunk_size: int) -> list[Rows]:
    if chunk_size < 1:
        raise InputError(f"--chunk_size must be positive, got {chunk_size}")
    return [(low, min(low + chunk_size, stop)) for low in range(start, stop, chunk_size)]


def check_shard(num_shards: int, shard_index: int) -> None:
    if num_shards < 1:
        raise InputError(f"--num_shards must be at least 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise InputError(f"--shard_index must be in 0..{num_shards - 1}, got {shard_index}")


def shard_chunks(chunks: list, num_shards: int, shard_index: int) -> list:
    """Chunks of one shard: round-robin, so shards together cover every chunk exactly once."""
    check_shard(num_shards, shard_index)
    return [chunk for position, chunk in enumerate(chunks) if position % num_shards == shard_index]


def uncovered(low: int, high: int, covered: Iterable[Rows]) -> list[Rows]:
    """The pieces of rows [low, high) that no range in `covered` holds, in order."""
    pieces, position = [], low
    for start, end in sorted(covered):
        if end <= position or start >= high:
            continue
        if start > position:
            pieces.append((position, start))
        position = max(position, end)
        if position >= high:
            break
    if position < high:
        pieces.append((position, high))
    return pieces


def check_no_overlap(files: list[ChunkFile], what: str) -> None:
    """Two files holding the same row would put its answer in twice: refuse, naming them."""
    ordered = sorted(files, key=lambda item: (item.start, item.end))
    for first, second in zip(ordered, ordered[1:]):
        if second.start < first.end:
            raise InputError(f"{what} files {first.path.name} and {second.path.name} both hold rows "
                             f"{second.start}-{min(first.end, second.end) - 1}; remove one of them (or rerun with "
                             "--overwrite)")


def partial_overlaps(files: list[ChunkFile], low: int, high: int) -> list[ChunkFile]:
    """Files that hold some of rows [low, high) and some rows outside it."""
    return [item for item in files if item.start < high and item.end > low and (item.start < low or item.end > high)]


# --- manifests across resumes ---------------------------------------------------------------------

def add_into(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    for key, value in part.items():
        if isinstance(value, dict):
            total[key] = add_into(dict(total.get(key) or {}), value)
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            total[key] = total.get(key, 0) + value
    return total


def _rounded(value: Any) -> Any:
    if isinstance(value, dict):
        return {key: _rounded(item) for key, item in value.items()}
    if isinstance(value, float):
        return int(value) if value.is_integer() else round(value, 4)
    return value


class RunManifest:
    """The manifest of a whole run, kept up to date chunk by chunk.

    Each session (a first run, each resume) is one entry of "sessions" with its own additive totals
    (requests, tokens, seconds; nested dicts of them too); the manifest's figures of the same names
    are the sums over all sessions, so a run interrupted and resumed reports all of its work. The file
    is rewritten after every chunk with "complete": false, so a killed session loses nothing it
    finished; `finish` marks the run complete. `fresh` (an --overwrite run) starts the sums again.
    """

    def __init__(self, path: Path, fresh: bool):
        self.path = path
        earlier: dict[str, Any] = {}
        if path.exists() and not fresh:
            try:
                earlier = json.loads(path.read_text())
            except (OSError, ValueError):
                earlier = {}
        self.earlier = earlier
        self.sessions = list(earlier.get("sessions") or [])
        self.started = time.strftime("%Y-%m-%d %H:%M:%S")

    def merged(self, summary: dict[str, Any], totals: dict[str, Any], complete: bool) -> dict[str, Any]:
        sessions = self.sessions + [{"started": self.started, "updated": time.strftime("%Y-%m-%d %H:%M:%S"),
                                     "complete": complete, **totals}]
        summed: dict[str, Any] = {}
        for session in sessions:
            add_into(summed, {key: value for key, value in session.items() if key in totals})
        return {**summary, **_rounded(summed), "complete": complete, "sessions": _rounded(sessions)}

    def write(self, manifest: dict[str, Any]) -> dict[str, Any]:
        write_manifest(self.path, manifest)
        return manifest


def write_manifest(path: Path, manifest: dict[str, Any]) -> Path:
    return write_text(json.dumps(manifest, indent=2, default=str) + "\n", path)


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "vllm", "xgrammar"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found


class Throughput:
    """Counts requests and output tokens for a tqdm bar and the run summary."""

    def __init__(self, total: int, description: str, disable: bool = False):
        self.bar = tqdm(total=total, desc=description, unit="prompt", disable=disable)
        self.started = time.perf_counter()
        self.requests = 0
        self.output_tokens = 0

    def __call__(self, requests: int, output_tokens: int) -> None:
        self.requests += requests
        self.output_tokens += output_tokens
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(requests)
        self.bar.set_postfix(prompts_s=f"{self.requests / elapsed:.2f}",
                             out_tok_s=f"{self.output_tokens / elapsed:.1f}")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def close(self) -> None:
        self.bar.close()

