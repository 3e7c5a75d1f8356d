"""`post_process` (stage B): teacher replies -> clean, checked question items joined to their notes.

The quality checks (quote found in the note, answer agrees with the question type,
duplicate questions) are measured for every item and available as filters; they are off
by default so that the paper's numbers stay reproducible.
"""

from __future__ import annotations

import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd
from rapidfuzz import fuzz

from clinical_distil import layout
from clinical_distil.answers import answer_agrees_with_type, normalize_answer
from clinical_distil.files import InputError, atomic_group, read_csv, write_csv, write_text
from clinical_distil.parsing import parse_reply
from clinical_distil.prompts import ANSWER_TYPES, COMBOS, ITEM_KEYS, NOT_FOUND

log = logging.getLogger(__name__)

DIFFICULTIES = range(1, 10)
ITEM_COLUMNS = ["note_id", "subject_id", "hadm_id", "question_type", "item_index", *ITEM_KEYS]


def normalize_difficulty(value: Any) -> int | None:
    """An integer 1-10, else None (excluded from difficulty filters)."""
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, (int, float)) and not pd.isna(value):
        number = float(value)
    else:
        match = re.match(r"^\s*(\d+(?:\.\d+)?)\s*(?:/\s*10)?\s*$", str(value))
        if not match:
            return None
        number = float(match.group(1))
    return int(number) if number.is_integer() and 1 <= number <= 10 else None


def _squash(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def source_match(source: Any, note: str, threshold: float = 90.0) -> tuple[str, float]:
    """How the quoted source is found in the note: exact, normalized, fuzzy, none or not_applicable."""
    if not isinstance(source, str) or not source.strip() or source.strip().lower() in (NOT_FOUND, "na", "n/a"):
        return "not_applicable", float("nan")
    if source in note:
        return "exact", 100.0
    squashed_source, squashed_note = _squash(source), _squash(note)
    if squashed_source in squashed_note:
        return "normalized", 100.0
    score = fuzz.partial_ratio(squashed_source, squashed_note)
    return ("fuzzy" if score >= threshold else "none"), float(score)


FAILURE_COLUMNS = ["note_id", "subject_id", "hadm_id", "question_type", "level", "reason", "item_index",
                   "finish_reason", "output"]


REPLY_COLUMNS = ["note_id", "question_type", "finish_reason", "attempts", "outcome", "items", "dropped_items",
                 "reasoning", "incomplete"]


def parse_chunks(chunks: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Items (one row per question), failures and replies (one row per reply).

    Failures: one row per reply that yielded no item (level "reply") and one per item left out, such
    as a template placeholder (level "item", the item as JSON in `output`). A reply that gave items but
    whose rest went unread at the parser's mending bound adds one row at level "item" with reason
    "mend_limit" and that unread rest in `output`: the items it may hold were left out, never in silence
    (with no item read, the reply's own row has reason "mend_limit"). Replies: what each reply came to
    (`outcome`: "items", "empty_list" or its failure reason), how many items it gave, whether it had
    a reasoning block (`reasoning`) and whether part of it went unread (`incomplete`: "mend_limit" or
    ""); an empty list is a valid reply, not a failure (the request had nothing to ask).
    """
    items, failures, replies = [], [], []
    for row in chunks.itertuples(index=False):
        parsed = parse_reply(row.output, row.finish_reason)
        base = {"note_id": row.note_id, "subject_id": row.subject_id, "hadm_id": row.hadm_id,
                "question_type": row.question_type}
        outcome = parsed.failure or ("empty_list" if parsed.empty_list else "items")
        replies.append({"note_id": row.note_id, "question_type": row.question_type,
                        "finish_reason": row.finish_reason, "attempts": getattr(row, "attempts", 1),
                        "outcome": outcome, "items": len(parsed.items), "dropped_items": len(parsed.dropped),
                        "reasoning": parsed.reasoning, "incomplete": parsed.incomplete or ""})
        if parsed.failure:
            failures.append({**base, "level": "reply", "reason": parsed.failure, "item_index": None,
                             "finish_reason": row.finish_reason, "output": row.output})
        elif parsed.incomplete:
            failures.append({**base, "level": "item", "reason": parsed.incomplete, "item_index": None,
                             "finish_reason": row.finish_reason, "output": parsed.unread})
        for index, (item, reason) in enumerate(parsed.dropped):
            failures.append({**base, "level": "item", "reason": reason, "item_index": index,
                             "finish_reason": row.finish_reason,
                             "output": json.dumps(item, ensure_ascii=False, default=str)})
        for index, item in enumerate(parsed.items):
            items.append({**base, "item_index": index, **{key: item.get(key) for key in ITEM_KEYS},
                          "repaired": parsed.repaired})
    item_frame = pd.DataFrame(items, columns=ITEM_COLUMNS + ["repaired"])
    failure_frame = pd.DataFrame(failures, columns=FAILURE_COLUMNS).astype({"item_index": "Int64"})
    return item_frame, failure_frame, pd.DataFrame(replies, columns=REPLY_COLUMNS)


def reply_counts(replies: pd.DataFrame, items: pd.DataFrame, failures: pd.DataFrame) -> pd.DataFrame:
    """Per question type: replies, replies stage A generated again, replies cut at the token limit, replies
    that had a reasoning block (skipped before reading), replies that yielded no item, replies read
    only in part (the parser's mending bound; with or without items), replies that were an empty list,
    items parsed, items repaired, items left out as template placeholders."""
    by_type = "question_type"
    dropped = failures[failures["level"] == "item"]
    counts = pd.DataFrame({
        "replies": replies.groupby(by_type).size(),
        "retried": replies[replies["attempts"].fillna(1).astype(int) > 1].groupby(by_type).size(),
        "cut_by_length": replies[replies["finish_reason"] == "length"].groupby(by_type).size(),
        "reasoning": replies[replies["reasoning"].astype(bool)].groupby(by_type).size(),
        "failed": replies[~replies["outcome"].isin(["items", "empty_list"])].groupby(by_type).size(),
        "mend_limit": replies[replies["incomplete"] == "mend_limit"].groupby(by_type).size(),
        "empty_lists": replies[replies["outcome"] == "empty_list"].groupby(by_type).size(),
        "items": items.groupby(by_type).size(),
        "repaired_items": items[items["repaired"].astype(bool)].groupby(by_type).size(),
        "placeholder_items": dropped[dropped["reason"] == "placeholder"].groupby(by_type).size(),
    })
    return counts.fillna(0).astype(int).rename_axis(by_type)


def normalize_items(items: pd.DataFrame) -> pd.DataFrame:
    items = items.copy()
    items["answer_raw"] = items["answer"]
    items["answer"] = items["answer"].map(normalize_answer)
    items["difficulty"] = items["difficulty"].map(normalize_difficulty).astype("Int64")
    items["type"] = items["question_type"].map(ANSWER_TYPES)  # the type follows the request, not the reply
    items["question"] = items["question"].fillna("").astype(str).str.strip()
    return items[items["question"] != ""].reset_index(drop=True)


def read_notes(path: Path) -> pd.DataFrame:
    """The notes table stage B joins its items to: it must exist, be readable and hold at least one note."""
    notes = read_csv(path, required=["note_id", "text"], what="notes",
                     hint="pass --notes_file with the notes stage A asked about")
    if not len(notes):
        raise InputError(f"notes file {path} has no note to join the items to; pass --notes_file with the notes "
                         "stage A asked about")
    return notes


def join_notes(items: pd.DataFrame, notes: pd.DataFrame) -> pd.DataFrame:
    """Attach each item's note text by note_id (one admission can have several notes)."""
    if "note_id" not in notes.columns or "text" not in notes.columns:
        raise InputError("the notes table needs note_id and text columns to join items to their notes")
    lookup = notes.drop_duplicates("note_id").set_index("note_id")["text"]
    joined = items.copy()
    joined["text"] = joined["note_id"].map(lookup)
    missing = joined["text"].isna().sum()
    if missing:
        log.warning("%d items have no note with their note_id and are dropped", missing)
    return joined[joined["text"].notna()].reset_index(drop=True)


# Two questions about one note are near-duplicates when rapidfuzz's token_sort_ratio of their lowercased,
# punctuation-free text is at least 95: rewordings that only reorder words or change punctuation and case
# score 100, while a one-word change that changes the answer ("highest" for "lowest" creatinine in a
# 40-character question) scores 88-92 and stays apart.
NEAR_DUPLICATE_SCORE = 95.0


def near_duplicates(questions: list[str], threshold: float = NEAR_DUPLICATE_SCORE) -> list[bool]:
    """For each question, whether an earlier one of the list is its near-duplicate (exact repeats included)."""
    from rapidfuzz import process, utils

    texts = [_squash(question) for question in questions]
    if len(texts) < 2:
        return [False] * len(texts)
    # default_process: lowercase, punctuation to spaces, so "Smoker?" and "smoker" compare equal
    scores = process.cdist(texts, texts, scorer=fuzz.token_sort_ratio, processor=utils.default_process,
                           score_cutoff=threshold)
    return [bool((scores[index, :index] >= threshold).any()) for index in range(len(texts))]


def quality_checks(items: pd.DataFrame, fuzzy_threshold: float = 90.0) -> pd.DataFrame:
    items = items.copy()
    matches = [source_match(source, text, fuzzy_threshold) for source, text in zip(items["source"], items["text"])]
    items["source_match"] = [match for match, _ in matches]
    items["source_score"] = [score for _, score in matches]
    items["source_in_note"] = items["source_match"].isin(["exact", "normalized", "fuzzy"])
    items["answer_type_ok"] = [answer_agrees_with_type(kind, answer)
                               for kind, answer in zip(items["question_type"], items["answer"])]
    squashed = items["question"].map(_squash)
    items["duplicate_question"] = squashed.groupby(items["note_id"]).transform(lambda group: group.duplicated())
    items["near_duplicate_question"] = False
    for _, group in items.groupby("note_id", sort=False):
        items.loc[group.index, "near_duplicate_question"] = near_duplicates(list(group["question"]))
    items["near_duplicate_question"] = items["near_duplicate_question"].astype(bool)
    # across the corpus: in how many notes the same question (squashed) was asked; a question asked of many
    # notes is a template, which is fine for a note-specific answer but says how varied the questions are
    items["question_notes"] = items.assign(squashed=squashed).groupby("squashed")["note_id"].transform("nunique")
    return items


FILTERS = {  # stage B's filters: the setting that applies each, and what it flags
    "require_source_in_note": "the quote of an answerable item is not in the note",
    "require_answer_type": "the answer does not fit the question type",
    "drop_duplicates": "a note's repeated question (same text)",
    "drop_near_duplicates": f"a note's near-duplicate question (token_sort_ratio >= {NEAR_DUPLICATE_SCORE:g})",
}


def filter_flags(items: pd.DataFrame) -> pd.DataFrame:
    """One boolean column per filter of FILTERS: the items it would remove. N/A questions quote nothing by
    design, so the quote check applies to answerable ones."""
    not_applicable = (items["source_match"] == "not_applicable") & items["question_type"].str.startswith("na-")
    return pd.DataFrame({"require_source_in_note": ~(items["source_in_note"] | not_applicable),
                         "require_answer_type": ~items["answer_type_ok"].astype(bool),
                         "drop_duplicates": items["duplicate_question"].astype(bool),
                         "drop_near_duplicates": items["near_duplicate_question"].astype(bool)}, index=items.index)


def filter_summary(items: pd.DataFrame, applied: dict[str, bool]) -> pd.DataFrame:
    """Per filter: whether it was applied, the items it flags, those it removed (flagged and applied) and those
    only it removed; then all filters together."""
    flags = filter_flags(items)
    on = [name for name in FILTERS if applied.get(name)]
    removed_by = flags[on].any(axis=1) if on else pd.Series(False, index=items.index)
    rows = []
    for name, meaning in FILTERS.items():
        others = [other for other in on if other != name]
        alone = flags[name] & ~flags[others].any(axis=1) if others else flags[name]
        rows.append({"filter": name, "flags": meaning, "applied": bool(applied.get(name)),
                     "flagged": int(flags[name].sum()), "removed": int((flags[name] & (name in on)).sum()),
                     "removed_only_by_it": int((alone & (name in on)).sum())})
    rows.append({"filter": "all applied", "flags": "what any applied filter flags", "applied": bool(on),
                 "flagged": int(removed_by.sum()), "removed": int(removed_by.sum()),
                 "removed_only_by_it": int(removed_by.sum())})
    return pd.DataFrame(rows)


def apply_filters(items: pd.DataFrame, require_source_in_note: bool = False, require_answer_type: bool = False,
                  drop_duplicates: bool = False, drop_near_duplicates: bool = False) -> pd.DataFrame:
    """The items no applied filter flags (filter_flags says what each flags)."""
    asked = {"require_source_in_note": require_source_in_note, "require_answer_type": require_answer_type,
             "drop_duplicates": drop_duplicates, "drop_near_duplicates": drop_near_duplicates}
    on = [name for name, wanted in asked.items() if wanted]
    if not on:
        return items.reset_index(drop=True)
    return items[~filter_flags(items)[on].any(axis=1)].reset_index(drop=True)


def combo_frame(items: pd.DataFrame, combo: str, min_difficulty: int) -> pd.DataFrame:
    if combo not in COMBOS:
        raise InputError(f"unknown combo {combo!r}; choose from {', '.join(COMBOS)}")
    chosen = items[items["question_type"].isin(COMBOS[combo])]
    return chosen[chosen["difficulty"].notna() & (chosen["difficulty"] >= min_difficulty)].reset_index(drop=True)


def stage_b_paths(output_dir: Path) -> list[Path]:
    """Every file stage B writes (the reply counts included)."""
    return ([layout.items_file(output_dir), layout.failures_file(output_dir), layout.reply_counts_file(output_dir),
             layout.stage_b_summary_file(output_dir)]
            + [layout.combo_file(output_dir, combo, difficulty) for combo in COMBOS for difficulty in DIFFICULTIES])


def check_stage_b_target(output_dir: Path, overwrite: bool = False) -> None:
    """Refuse, before any work, to replace stage B's files unless asked."""
    existing = [path for path in stage_b_paths(output_dir) if path.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} exists; set overwrite=True (papermill: -p overwrite True) to replace stage "
                         "B's output")


def teacher_of(chunks_dir: Path) -> dict[str, Any]:
    """Who wrote stage A's replies and how, from its manifest(s) (the first shard's where there are several)."""
    manifests = sorted(chunks_dir.glob("manifest*.json"))
    if not manifests:
        return {}
    manifest = json.loads(manifests[0].read_text())
    return {key: manifest.get(key) for key in ("model_id", "teacher", "engine", "question_types", "questions_per_type",
                                                "sampling", "structured_output", "retries") if key in manifest}


def stage_b_summary(items: pd.DataFrame, kept: pd.DataFrame, applied: dict[str, bool],
                    teacher: dict[str, Any]) -> dict[str, Any]:
    """What stage B's dataset card needs: the teacher, the items before and after the filters, each filter's
    flags and removals, how varied the questions are."""
    return {"teacher": teacher, "notes": int(items["note_id"].nunique()), "items_checked": len(items),
            "items_kept": len(kept), "filters": filter_summary(items, applied).to_dict("records"),
            "distinct_questions": int(items["question"].map(_squash).nunique()),
            "near_duplicate_score": NEAR_DUPLICATE_SCORE}


def write_stage_b(items: pd.DataFrame, failures: pd.DataFrame, output_dir: Path, overwrite: bool = False,
                  counts: pd.DataFrame | None = None, summary: dict[str, Any] | None = None) -> list[Path]:
    """The contract files: synth_{combo}_{d}_df.csv.gz, synth_all_df.csv, the failures table and, when given,
    the reply counts per question type (replies_by_type.csv, read by the pipeline report) and the summary the
    dataset card reads (stage_b.json)."""
    if items.empty:
        raise InputError("no item survived parsing and filtering; nothing written (look at the failures table)")
    targets = {layout.items_file(output_dir): items, layout.failures_file(output_dir): failures}
    if counts is not None:
        targets[layout.reply_counts_file(output_dir)] = counts.reset_index()
    for combo in COMBOS:
        for difficulty in DIFFICULTIES:
            targets[layout.combo_file(output_dir, combo, difficulty)] = combo_frame(items, combo, difficulty)
    paths = list(targets) + ([layout.stage_b_summary_file(output_dir)] if summary is not None else [])
    existing = [path for path in paths if path.exists()]
    if existing and not overwrite:
        raise InputError(f"{existing[0]} exists; pass overwrite=True to replace stage B's output")
    with atomic_group(paths) as staged:  # all of stage B's files or none
        for stage, frame in zip(staged, targets.values()):
            write_csv(frame, stage)
        if summary is not None:
            write_text(json.dumps(summary, indent=1, default=str) + "\n", staged[-1])
    return paths
