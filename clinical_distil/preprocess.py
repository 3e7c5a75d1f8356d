"""`preprocess`: the three evaluation sets as prompt tables: annotated synthetic, n2c2 2018 Track 1, apixaban.

Every table has one row per (note, question) with `id`, `question`, `label` and `prompt` (the
user message of the answer prompt the students were trained on; eval-inference.py adds the
system message and the chat template), plus task columns. Questions are asked exactly as in
training: the note, the question, the JSON answer format.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from clinical_distil import n2c2
from clinical_distil.files import InputError, read_csv
from clinical_distil.answers import normalize_answer
from clinical_distil.prompts import PromptTemplates, answer_messages
from clinical_distil.tasks import APIXABAN, APIXABAN_BOOLEAN, N2C2, N2C2_CRITERIA

# The criteria as questions, from the shipped criteria files (clinical_distil.tasks). n2c2's time windows
# are anchored to the patient's most recent record ({reference_date}); the default-answer guidance
# follows the published prompts.
N2C2_QUESTIONS = {criterion.id: criterion.question for criterion in N2C2}
APIXABAN_QUESTIONS = {criterion.id: criterion.question for criterion in APIXABAN}
ANNOTATED_TYPES = {"yes": "yes_no", "na-bool": "na-bool", "numeric": "numeric", "na-numeric": "na-numeric"}


def prompt_text(note: str, question: str, templates: PromptTemplates | None = None) -> str:
    """The user message a student answers (the system message is added at inference)."""
    return answer_messages(note, question, templates)[1]["content"]


def _csv_folder(folder: Path, required: list[str], what: str, hint: str) -> pd.DataFrame:
    files = sorted(folder.glob("*.csv")) + sorted(folder.glob("*.csv.gz"))
    if not files:
        raise InputError(f"no {what} CSV files in {folder}; {hint}")
    return pd.concat([read_csv(path, required=required, what=what, hint=hint, keep_default_na=False)
                      for path in files], ignore_index=True)


def annotated_synthetic_prompts(folder: str | Path, templates: PromptTemplates | None = None) -> pd.DataFrame:
    """Annotated CSVs (`question, answer, difficulty, type, text`) -> `id, question, label, difficulty,
    question_type, prompt` (label normalized: Yes / No / NA / a plain number)."""
    hint = "each row needs question, answer, difficulty, type (yes, na-bool, numeric, na-numeric) and text"
    rows = _csv_folder(Path(folder), ["question", "answer", "difficulty", "type", "text"], "annotated synthetic",
                       hint)
    unknown = sorted(set(rows["type"]) - set(ANNOTATED_TYPES))
    if unknown:
        raise InputError(f"unknown annotated question type(s) {', '.join(map(str, unknown))}; {hint}")
    identifiers = rows["note_id"].astype(str) if "note_id" in rows else pd.Series(range(len(rows))).astype(str)
    return pd.DataFrame({
        "id": [f"{note}-{index}" for index, note in enumerate(identifiers)],
        "question": rows["question"], "label": rows["answer"].map(normalize_answer),
        "difficulty": rows["difficulty"], "question_type": rows["type"].map(ANNOTATED_TYPES),
        "prompt": [prompt_text(text, question, templates) for text, question in zip(rows["text"], rows["question"])],
    })


def n2c2_prompts(folder: str | Path, templates: PromptTemplates | None = None) -> pd.DataFrame:
    """n2c2 XML folder -> one row per patient x criterion: `id, patient, question_label, question, label
    (1 met, 0 not met; empty for unlabelled files), last_record_date, prompt`."""
    rows = []
    for patient in n2c2.read_folder(folder):
        dates = patient.record_dates
        reference = dates[-1] if dates else "the most recent record"
        for criterion in N2C2_CRITERIA:
            question = N2C2_QUESTIONS[criterion].format(reference_date=reference)
            label = patient.tags.get(criterion)
            rows.append({"id": f"{patient.patient}-{criterion}", "patient": patient.patient,
                         "question_label": criterion, "question": question,
                         "label": None if label is None else int(label),
                         "last_record_date": dates[-1] if dates else "",
                         "prompt": prompt_text(patient.text.strip(), question, templates)})
    frame = pd.DataFrame(rows)
    frame["label"] = frame["label"].astype("Int64")
    return frame


def apixaban_prompts(folder: str | Path, templates: PromptTemplates | None = None) -> pd.DataFrame:
    """Apixaban CSVs (`criterion, answer, text`, a note id) -> `id, note_id, criterion, question_type,
    question, label, prompt`."""
    hint = "rows need criterion, answer and text (and note_id)"
    rows = _csv_folder(Path(folder), ["criterion", "answer", "text"], "apixaban", hint)
    unknown = sorted(set(rows["criterion"]) - set(APIXABAN_QUESTIONS))
    if unknown:
        raise InputError(f"unknown apixaban criterion {', '.join(map(str, unknown))}; known: "
                         f"{', '.join(APIXABAN_QUESTIONS)}")
    note_ids = rows["note_id"].astype(str) if "note_id" in rows else pd.Series(
        pd.factorize(rows["text"])[0]).astype(str)
    return pd.DataFrame({
        "id": note_ids + "-" + rows["criterion"], "note_id": note_ids, "criterion": rows["criterion"],
        "question_type": ["boolean" if name in APIXABAN_BOOLEAN else "numeric" for name in rows["criterion"]],
        "question": rows["criterion"].map(APIXABAN_QUESTIONS), "label": rows["answer"].map(normalize_answer),
        "prompt": [prompt_text(text, APIXABAN_QUESTIONS[name], templates)
                   for text, name in zip(rows["text"], rows["criterion"])],
    })


def check_eval_targets(paths: list[Path], overwrite: bool = False) -> None:
    """Refuse, before any work, to replace eval-data files unless asked."""
    for path in paths:
        if path.exists() and not overwrite:
            raise InputError(f"{path} exists; set overwrite=True (papermill: -p overwrite True) to rebuild it")


def write_eval_files(frames: dict[Path, pd.DataFrame], overwrite: bool = False) -> list[Path]:
    """Write eval-data files (the splits of a task) all together or none; existing ones are kept unless asked."""
    from clinical_distil.files import atomic_group, write_csv

    check_eval_targets(list(frames), overwrite)
    with atomic_group(list(frames)) as staged:
        for stage, frame in zip(staged, frames.values()):
            write_csv(frame, stage)
    return list(frames)
