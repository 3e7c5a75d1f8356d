"""Whether two runs of the pipeline wrote the same files: every data file, model and figure, field by field.

    python bench/compare_runs.py BEFORE AFTER [--rename old=new ...]

BEFORE and AFTER are the roots of two runs of the same job (`make demo` in two checkouts, or two
folders holding the run's `data/`, `results/`, `models/` and `reports/`). A refactoring that keeps
behaviour must leave every file the stages write identical, apart from the fields below, which differ
from run to run whatever the code does. `--rename` maps a name of BEFORE to its new name in AFTER (a
stage or file renamed), in file names, JSON and text alike. Where a root is a checkout, only the
folders a run writes are compared (RUN_FOLDERS; the bundled samples left out). Exits 0 when the runs
agree, 1 listing every difference.

Excluded, and why:
- JSON keys that time, date or place a run: EXCLUDED_KEYS (seconds, dates, host, package versions);
- the order of JSON lists that hold a set (UNORDERED_KEYS: PEFT writes its target modules from a set);
- absolute paths: each root's own path is replaced by ROOT before comparing, in every text file;
- the report's wall-time sections, its lines of seconds and tokens/s, its table columns of times
  (s/example), and the date it was written (report.md is compared; report.html is rendered from the
  same blocks and left out); the model cards' line of tokens/s;
- executed notebooks and logs (EXCLUDED_PARTS): records of a run, with progress bars and timings;
- the order of a model card's front matter (the trainer's tags, from a set);
- `training_args.bin` (a pickle of the trainer's arguments, which holds the run's absolute paths);
- lock files.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path
from typing import Any

from clinical_distil import layout

EXCLUDED_KEYS = {
    "seconds", "wall_seconds", "phase_seconds", "started", "updated", "host", "versions", "date", "written",
    "output_tokens_per_second", "seconds_per_example", "tokens_per_second", "train_runtime",
    "train_samples_per_second", "train_steps_per_second", "eval_runtime", "eval_samples_per_second",
    "eval_steps_per_second", "runtime", "peak_memory_gib", "steady_tokens_per_second", "timing", "stage_seconds",
    "session_seconds",
}
# JSON lists that hold a set, in an order that differs from process to process (PEFT's target modules)
UNORDERED_KEYS = {"target_modules"}
EXCLUDED_PARTS = ("notebooks", "logs", "samples")  # and data/samples: the bundled inputs, not written by a run
RUN_FOLDERS = ("data", layout.RESULTS.name, layout.MODELS.name, layout.REPORTS.name)
EXCLUDED_NAMES = ("training_args.bin", "report.html")
DATE = re.compile(r"\d{4}-\d{2}-\d{2}[ T]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?")
# report sections whose figures are wall times
TIMED_SECTIONS = ("Cost of answering", "Wall time per stage")
TIMED_LINE = re.compile(r"tokens/s|seconds|per second")
TIMED_COLUMN = re.compile(r"^(s/|seconds|tokens/s)")  # a table column of times (the evaluation's s/example)
TEXT_SUFFIXES = (".md", ".html", ".txt", ".yaml", ".jsonl")


def stripped(value: Any) -> Any:
    """A JSON value without the keys that time or place a run, at any depth (sets as sorted lists)."""
    if isinstance(value, dict):
        return {key: sorted(map(str, item)) if key in UNORDERED_KEYS and isinstance(item, list) else stripped(item)
                for key, item in value.items() if key not in EXCLUDED_KEYS}
    if isinstance(value, list):
        return [stripped(item) for item in value]
    return value


def without_timed_columns(lines: list[str]) -> list[str]:
    """Markdown tables less their columns of times (headed s/..., seconds, tokens/s)."""
    kept, timed = [], set()
    for index, line in enumerate(lines):
        if not line.startswith("|"):
            timed = set()
        elif index + 1 < len(lines) and lines[index + 1].startswith("|---"):  # a table's header row
            timed = {position for position, cell in enumerate(line.strip("|").split("|"))
                     if TIMED_COLUMN.match(cell.strip())}
        if timed and line.startswith("|"):
            line = "|".join(cell for position, cell in enumerate(line.strip("|").split("|")) if position not in timed)
        kept.append(line)
    return kept


def without_timed_sections(text: str) -> str:
    """The report's markdown less its timed sections (from their heading to the next one), timed lines and
    timed table columns."""
    for title in TIMED_SECTIONS:
        text = re.sub(rf"(?ms)^## {title}.*?(?=^## |\Z)", "", text)
    return "\n".join(line for line in without_timed_columns(text.splitlines()) if not TIMED_LINE.search(line))


def model_card(text: str) -> str:
    """A model card less its lines of tokens/s, its front matter's lists sorted (the trainer writes its tags from a
    set, in an order that differs from process to process)."""
    lines = [line for line in text.splitlines() if not TIMED_LINE.search(line)]
    if lines and lines[0] == "---" and "---" in lines[1:]:
        end = lines.index("---", 1)
        lines = [lines[0], *sorted(lines[1:end]), *lines[end:]]
    return "\n".join(lines)


def readable(path: Path, root: Path, renames: dict[str, str] | None = None) -> Any:
    """What is compared of one file: JSON less its excluded keys, text with dates and the root masked, else bytes;
    `renames` (BEFORE's names) applied to JSON and text."""
    if path.suffix in (".json",) or path.name.endswith(".json"):
        text = path.read_text().replace(str(root), "ROOT")
        # a tokenizer's vocabulary holds words, not the project's names: renames stay out of it
        return stripped(json.loads(text if path.name.startswith(("tokenizer", "vocab")) else
                                   renamed(text, renames or {})))
    if path.suffix in TEXT_SUFFIXES or path.suffix == ".csv":
        text = DATE.sub("DATE", path.read_text(errors="replace").replace(str(root), "ROOT"))
        if path.stem == "report":
            return without_timed_sections(text)
        return model_card(text) if path.name == "README.md" else text
    if path.name.endswith(".csv.gz"):
        import gzip

        return gzip.decompress(path.read_bytes()).decode(errors="replace").replace(str(root), "ROOT")
    return path.read_bytes()


def run_files(root: Path) -> dict[str, Path]:
    """Every file of a run under its root, by relative path, less the excluded ones: where the root is a checkout,
    only what the run wrote (RUN_FOLDERS); files reached through a link (a model linked in) are not the run's."""
    found = {}
    folders = [root / name for name in RUN_FOLDERS if (root / name).is_dir()] or [root]
    for path in sorted(path for folder in folders for path in folder.rglob("*")):
        relative = path.relative_to(root)
        if not path.resolve().is_relative_to(root.resolve()):
            continue
        if not path.is_file() or any(part in EXCLUDED_PARTS for part in relative.parts) \
                or path.name in EXCLUDED_NAMES or path.name.endswith(".lock") or path.name.startswith(".lock"):
            continue
        found[relative.as_posix()] = path
    return found


def renamed(name: str, renames: dict[str, str]) -> str:
    for old, new in renames.items():
        name = name.replace(old, new)
    return name


def differences(before: Path, after: Path, renames: dict[str, str] | None = None) -> list[str]:
    """Every file missing on one side or differing (after the exclusions), as lines to print."""
    renames = renames or {}
    old = {renamed(name, renames): path for name, path in run_files(before).items()}
    new = run_files(after)
    found = [f"only in {before}: {name}" for name in sorted(set(old) - set(new))]
    found += [f"only in {after}: {name}" for name in sorted(set(new) - set(old))]
    for name in sorted(set(old) & set(new)):
        first, second = readable(old[name], before, renames), readable(new[name], after)
        if isinstance(first, str) and isinstance(second, str):
            first = renamed(first, renames)
        if first != second:
            found.append(f"differs: {name}")
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("before", type=Path)
    parser.add_argument("after", type=Path)
    parser.add_argument("--rename", action="append", default=[], help="old=new: a name changed between the runs")
    args = parser.parse_args(argv)
    for root in (args.before, args.after):
        if not root.is_dir():
            print(f"error: {root} is not a folder; give the roots of two runs", file=sys.stderr)
            return 2
    bad = [pair for pair in args.rename if pair.count("=") != 1]
    if bad:
        print(f"error: --rename {bad[0]!r} is not old=new", file=sys.stderr)
        return 2
    renames = dict(pair.split("=") for pair in args.rename)
    found = differences(args.before, args.after, renames)
    compared = len(run_files(args.after))
    for line in found:
        print(line)
    print(f"{compared} files compared, {len(found)} differences")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
