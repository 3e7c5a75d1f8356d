"""The three evaluation sets as prompt tables: annotated synthetic, n2c2 2018 Track 1, apixaban.

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
from clinical_distil.postprocess import normalize_answer
from clinical_distil.prompts import PromptTemplates, answer_messages
from clinical_distil.tasks import APIXABAN_BOOLEAN, N2C2_CRITERIA

# n2c2 2018 Track 1 criteria as questions. Time windows are anchored to the patient's most recent
# record ({reference_date}); the default-answer guidance follows the published prompts.
N2C2_QUESTIONS = {
    "ABDOMINAL": "Has the patient ever had intra-abdominal surgery, a bowel resection or a small bowel "
                 "obstruction? Answer No unless one of these is mentioned.",
    "ADVANCED-CAD": "Does the patient have advanced coronary artery disease, meaning at least two of: taking two "
                    "or more medications for cardiovascular disease, any myocardial infarction, current or recent "
                    "angina, ischemia? Answer No unless at least two are documented.",
    "ALCOHOL-ABUSE": "Does the patient currently drink more alcohol than the weekly limit (more than 7 drinks a "
                     "week for women, more than 14 for men)? Answer No unless heavier drinking is stated.",
    "ASP-FOR-MI": "Does the patient take aspirin?",
    "CREATININE": "What is the highest serum creatinine value (mg/dL) reported for the patient? Answer NA if "
                  "none is reported.",
    "DIETSUPP-2MOS": "Has the patient taken a dietary supplement (vitamins, minerals, fish oil or similar) in the "
                     "2 months before {reference_date}?",
    "DRUG-ABUSE": "Has the patient ever used illicit drugs?",
    "ENGLISH": "Does the patient speak English? Answer Yes unless a translator or another language is "
               "documented.",
    "HBA1C": "What is the highest hemoglobin A1c (HbA1c, %) reported for the patient? Answer NA if none is "
             "reported.",
    "KETO-1YR": "Was the patient diagnosed with ketoacidosis in the year before {reference_date}?",
    "MAJOR-DIABETES": "Does the patient have a major complication of diabetes: amputation, kidney damage, skin "
                      "conditions, retinopathy, nephropathy, neuropathy, or several conditions together that imply "
                      "severe diabetes?",
    "MAKES-DECISIONS": "Can the patient make their own medical decisions? Answer Yes unless incapacity or a "
                       "decision-making proxy is documented.",
    "MI-6MOS": "Has the patient had a myocardial infarction in the 6 months before {reference_date}?",
}

APIXABAN_QUESTIONS = {
    "afib": "Does the patient have atrial fibrillation? Answer No when it was only secondary to a reversible "
            "cause.",
    "mdd": "Has the patient ever had depression or major depressive disorder?",
    "schizophrenia": "Does the patient have schizophrenia or schizoaffective disorder?",
    "bipolar": "Does the patient have bipolar disorder?",
    "hemorrhagic": "Does the patient have a bleeding tendency or a blood dyscrasia?",
    "recent_stroke": "Did the patient have a stroke during this admission or in the last 30 days? Answer Yes for a "
                     "recent stroke whose date is not given.",
    "peptic_ulcer_disease": "Does the patient have peptic ulcer disease?",
    "bleeding": "Has the patient had serious bleeding in the past 6 months?",
    "afib_ablation": "Has the patient had an atrial fibrillation ablation, or is one planned?",
    "surgical_valvular_disease": "Does the patient have a heart valve stenosis that needs surgery?",
    "heart_failure": "Does the patient have heart failure?",
    "t2d": "Does the patient have diabetes mellitus?",
    "arterial_hypertension": "Does the patient have arterial hypertension, treated or not?",
    "prior_stroke": "Has the patient ever had a stroke or a transient ischemic attack?",
    "med_decisions": "Is the patient unable to make their own medical decisions at discharge? Answer Yes for "
                     "dementia or death.",
    "lowest_platelets": "What is the patient's lowest platelet count (K/uL)? Answer NA if none is reported.",
    "highest_bilirubin": "What is the patient's highest total bilirubin (mg/dL)? Answer NA if none is reported.",
    "highest_ast": "What is the patient's highest AST (IU/L)? Answer NA if none is reported.",
    "highest_creatinine": "What is the patient's highest creatinine (mg/dL)? Answer NA if none is reported.",
    "lowest_hemoglobin": "What is the patient's lowest hemoglobin (g/dL)? Answer NA if none is reported.",
    "highest_chads2": "What is the patient's highest CHADS2 score? Answer NA if none is reported.",
    "lowest_lvef": "What is the patient's lowest left ventricular ejection fraction (%)? Answer 55 when it is "
                   "reported as 55% or more, NA if none is reported.",
    "highest_glucose": "What is the patient's highest blood glucose (mg/dL)? Answer NA if none is reported.",
}
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
