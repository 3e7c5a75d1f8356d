"""The evaluation tasks' fixed vocabularies: n2c2 2018 Track 1 criteria and apixaban criteria."""

N2C2_CRITERIA = (
    "ABDOMINAL", "ADVANCED-CAD", "ALCOHOL-ABUSE", "ASP-FOR-MI", "CREATININE", "DIETSUPP-2MOS",
    "DRUG-ABUSE", "ENGLISH", "HBA1C", "KETO-1YR", "MAJOR-DIABETES", "MAKES-DECISIONS", "MI-6MOS",
)
# asked as numbers and thresholded; every other criterion is asked as yes/no
N2C2_NUMERIC = ("CREATININE", "HBA1C")

APIXABAN_BOOLEAN = (
    "afib", "mdd", "schizophrenia", "bipolar", "hemorrhagic", "recent_stroke", "peptic_ulcer_disease",
    "bleeding", "afib_ablation", "surgical_valvular_disease", "heart_failure", "t2d",
    "arterial_hypertension", "prior_stroke", "med_decisions",
)
APIXABAN_NUMERIC = (
    "lowest_platelets", "highest_bilirubin", "highest_ast", "highest_creatinine", "lowest_hemoglobin",
    "highest_chads2", "lowest_lvef", "highest_glucose",
)
