"""What each stage B/C filter is worth, on simulated notes whose truth is known.

    python experiments/filter_precision.py --data_dir /tmp/fp --dataset 24 --output /tmp/filter_precision.json

Reads stage B's items (synthetic-raw/synth_all_df.csv, written with no filter applied, so every item carries
its flags), the verifier's verdicts where synthetic-b2-verify.py was run (verification.csv), and the corpus's
fact sheets beside the notes (mimic/facts.jsonl.gz); checks every item against the truth
(simulation/teacher_check.py) and prints, per filter and for all of them together: the items it keeps and
drops, and the teacher's precision (right answers among the items the truth can check) in each part. A
filter is worth applying when the kept part is more precise than the whole.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pandas as pd

from clinical_distil import create, layout, post_process
from clinical_distil.cli import run
from clinical_distil.files import InputError, read_csv
from clinical_distil.provenance import provenance
from simulation.teacher_check import check_items, corpus_facts

VERIFIER = "require_verified"


def precision(items: pd.DataFrame, facts: dict) -> tuple[int, int, float | None]:
    """(items, verifiable items, share of verifiable items answered right)."""
    checked = check_items(items, facts)
    verifiable = checked[checked["verifiable"]]
    share = round(float(verifiable["answer_right"].mean()), 3) if len(verifiable) else None
    return len(items), len(verifiable), share


def filter_table(items: pd.DataFrame, facts: dict) -> pd.DataFrame:
    """Per filter (and all together): kept and dropped items with their precision against the truth."""
    flags = post_process.filter_flags(items)
    if "verifier_agrees" in items:
        flags[VERIFIER] = ~items["verifier_agrees"].fillna(False).astype(bool)
    flags["all filters"] = flags.any(axis=1)
    rows = []
    whole = precision(items, facts)
    for name in flags.columns:
        kept, dropped = precision(items[~flags[name]], facts), precision(items[flags[name]], facts)
        rows.append({"filter": name, "items": whole[0], "precision_all": whole[2], "kept": kept[0],
                     "kept_verifiable": kept[1], "precision_kept": kept[2], "dropped": dropped[0],
                     "dropped_verifiable": dropped[1], "precision_dropped": dropped[2],
                     "gain": None if kept[2] is None or whole[2] is None else round(kept[2] - whole[2], 3)})
    table = pd.DataFrame(rows)
    return table.astype(object).where(table.notna(), None)  # None, not NaN, in the JSON


def main(data_dir: str = "", dataset: str = "", output: str = "") -> None:
    """Measure every filter on one data root's stage B items (and verification, where present)."""
    if not data_dir or not dataset:
        raise InputError("pass --data_dir (a data root with stage B's items) and --dataset (its N of notes_{N})")
    started = time.time()
    root = layout.resolve(data_dir)
    raw = layout.raw_dir(root)
    items = read_csv(layout.items_file(raw), keep_default_na=False, dtype={"note_id": str},
                     what="stage B items", hint="run stage B with no filter applied first")
    facts = corpus_facts(create.notes_file(root, dataset))
    if facts is None:
        raise InputError(f"no facts beside {create.notes_file(root, dataset)}: this measures simulated notes only")
    for column in ("source_in_note", "answer_type_ok", "duplicate_question", "near_duplicate_question"):
        items[column] = items[column].astype(str).str.lower() == "true"
    verdicts = layout.verification_file(raw)
    if verdicts.exists():
        verified = read_csv(verdicts, keep_default_na=False, dtype={"note_id": str})
        verified["verifier_agrees"] = verified["verifier_agrees"].astype(str).str.lower() == "true"
        items = items.merge(verified[["note_id", "question_type", "item_index", "verifier_agrees", "verifier"]],
                            on=["note_id", "question_type", "item_index"], how="left")
    table = filter_table(items, facts)
    summary = json.loads(layout.stage_b_summary_file(raw).read_text()) if layout.stage_b_summary_file(raw).exists() \
        else {}
    teacher = summary.get("teacher", {}).get("model_id")
    verifier = str(items["verifier"].dropna().iloc[0]) if "verifier" in items and items["verifier"].notna().any() \
        else None
    # the checks run on the CPU whatever the machine holds
    results = {**provenance("experiments/filter_precision.py"), "card": f"CPU ({os.cpu_count()} cores)",
               "teacher": teacher, "verifier": verifier,
               "notes": int(items["note_id"].nunique()), "seconds": round(time.time() - started, 1),
               "filters": table.to_dict("records")}
    if output:
        Path(output).write_text(json.dumps(results, indent=1) + "\n")
    columns = list(table.columns)
    print(f"teacher {teacher}, {results['notes']} notes, {len(items)} items")
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join("" if pd.isna(value) else str(value) for value in row) + " |")


if __name__ == "__main__":
    run(main)
