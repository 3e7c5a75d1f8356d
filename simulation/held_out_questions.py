"""Questions about held-out notes (simulation/held_out.py), worded apart from every teacher's, answered from the sheet.

The held-out renderer states every true condition, event, medication and result of a sheet, and no false one
(its tests read each label back from the stated text), so the sheet's answer is the note's. The questions
use other words than the reference teacher's bank and the training corpus's annotated questions (a test
holds the largest token Jaccard between them at 0.5 and allows no verbatim match), and "not in the note"
is never given away by the wording: a question about a result or a procedure some notes report and others
do not is asked in the same words of both, typed by its answer (a value, or N/A).
"""

from __future__ import annotations

import random

from simulation.fact_sheets import FactSheet

# (condition key, how the question names it): abbreviations and synonyms the teacher bank does not use
CONDITION_WORDING = {
    "afib": "AF", "t2d": "T2DM", "hypertension": "HTN", "heart_failure": "a reduced-EF cardiomyopathy (HFrEF)",
    "cad": "known coronary atherosclerosis", "mdd": "a depressive illness", "prior_stroke": "an old CVA",
}
CONDITION_QUESTIONS = ("Is {name} on this person's problem list?", "Per this summary, is {name} present?",
                       "Would you code {name} for this admission?")
DRUG_WORDING = {"aspirin": "ASA", "metformin": "Glucophage", "atorvastatin": "Lipitor", "furosemide": "Lasix",
                "metoprolol": "Toprol", "apixaban": "Eliquis", "warfarin": "Coumadin"}
DRUG_QUESTIONS = ("Does the go-home med rec include {name}?", "Leaving hospital, is {name} part of the regimen?")
# results some sheets have and others not, asked the same way of both
LAB_WORDING = {"creatinine": "Cr", "platelets": "Plt", "hemoglobin": "Hgb", "glucose": "serum sugar",
               "hba1c": "A1c", "ast": "SGOT", "alt": "SGPT", "bilirubin": "T bili", "wbc": "leukocyte count"}
LAB_QUESTIONS = ("Peak {name} during this stay (number only)?", "Report the maximum {name} documented.",
                 "Minimum {name} documented, as a number?", "Lowest {name} this stay?")
SOMETIMES_DONE = (  # (question, whether the sheet says it was done; else the note is silent: N/A)
    ("Did an echo quantify systolic function this stay?", lambda sheet: sheet.lvef is not None),
    ("Was a stroke-risk score (CHADS2) written down?", lambda sheet: sheet.chads2_documented),
)


def _yes_no(flag: bool) -> str:
    return "Yes" if flag else "No"


def _lab_answer(sheet: FactSheet, lab: str, question: str) -> str:
    values = sheet.lab_values(lab)
    if not values:
        return "N/A"
    highest = question.startswith(("Peak", "Report the maximum"))
    return f"{(max(values) if highest else min(values)):g}"


def held_out_questions(sheet: FactSheet, rng: random.Random) -> list[dict]:
    """Five checked questions about a held-out note: two yes/no (a condition, a discharge drug), one result, one
    result or procedure that some notes lack (a value or Yes where stated, N/A where not), one more of either;
    rows of `question, answer, type, difficulty` with type yes, numeric, na-numeric or na-bool, as the annotated
    set has."""
    rows = []
    condition = rng.choice(sorted(CONDITION_WORDING))
    question = rng.choice(CONDITION_QUESTIONS).format(name=CONDITION_WORDING[condition])
    rows.append({"question": question, "answer": _yes_no(sheet.conditions[condition]), "type": "yes", "difficulty": 3})
    drug = rng.choice(sorted(DRUG_WORDING))
    question = rng.choice(DRUG_QUESTIONS).format(name=DRUG_WORDING[drug])
    rows.append({"question": question, "type": "yes", "difficulty": 3,
                 "answer": _yes_no(any(med.split()[0].lower() == drug for med in sheet.medications))})
    for pool in (("creatinine", "platelets", "hemoglobin", "glucose", "wbc"), ("hba1c", "ast", "alt", "bilirubin")):
        lab = rng.choice(pool)
        question = rng.choice(LAB_QUESTIONS).format(name=LAB_WORDING[lab])
        answer = _lab_answer(sheet, lab, question)
        rows.append({"question": question, "answer": answer, "type": "na-numeric" if answer == "N/A" else "numeric",
                     "difficulty": 5})
    question, done = rng.choice(SOMETIMES_DONE)
    rows.append({"question": question, "answer": "Yes" if done(sheet) else "N/A",
                 "type": "yes" if done(sheet) else "na-bool", "difficulty": 6})
    return rows
