"""The varied discharge summaries' wording banks: section names, each fact's phrasings, lab formats, typos.

simulation/varied.py draws each section's title and each fact's phrasing from these.
"""

PRESENTING_EVENTS = {
    "mi": ["Troponin elevated consistent with NSTEMI.", "Found to have an NSTEMI on arrival."],
    "keto": ["Labs consistent with diabetic ketoacidosis.", "Found to be in DKA with an anion gap of 24."],
    "bleed": ["Melena for two days with a hemoglobin drop.", "Presented with an upper GI bleed (melena)."],
    "stroke": ["Code stroke called on arrival; acute ischemic stroke.", "Found to have an acute ischemic stroke."],
}

SECTION_NAMES = {
    "complaint": ["Chief Complaint", "CHIEF COMPLAINT", "Chief complaint", "CC"],
    "hpi": ["History of Present Illness", "HISTORY OF PRESENT ILLNESS", "HPI", "History of present illness"],
    "pmh": ["Past Medical History", "PAST MEDICAL HISTORY", "PMH", "Past medical history", "PMHx"],
    "psh": ["Past Surgical History", "PAST SURGICAL HISTORY", "PSH", "Surgical history"],
    "social": ["Social History", "SOCIAL HISTORY", "Social Hx", "SH"],
    "family": ["Family History", "FAMILY HISTORY", "FH", "Family hx"],
    "ros": ["Review of Systems", "REVIEW OF SYSTEMS", "ROS"],
    "exam": ["Physical Exam", "PHYSICAL EXAMINATION", "Exam on admission", "PE"],
    "results": ["Pertinent Results", "PERTINENT RESULTS", "Labs", "Laboratory data"],
    "course": ["Brief Hospital Course", "HOSPITAL COURSE", "Hospital course", "BRIEF HOSPITAL COURSE"],
    "procedures": ["Major Surgical or Invasive Procedure", "Procedures this admission", "PROCEDURES"],
    "meds": ["Discharge Medications", "DISCHARGE MEDICATIONS", "Medications on Discharge", "Discharge meds"],
    "disposition": ["Discharge Disposition", "DISPOSITION", "Disposition"],
    "diagnosis": ["Discharge Diagnosis", "DISCHARGE DIAGNOSES", "Discharge diagnoses", "Final diagnosis"],
    "condition": ["Discharge Condition", "CONDITION AT DISCHARGE", "Condition on discharge"],
    "instructions": ["Discharge Instructions", "DISCHARGE INSTRUCTIONS", "Instructions"],
}

# the canonical section each key belongs to (the teacher's "section" field names these)
SECTION_TITLES = {
    "header": "not found", "complaint": "History of Present Illness", "hpi": "History of Present Illness",
    "pmh": "Past Medical History",
    "psh": "Past Medical History", "social": "Social History", "family": "Family History",
    "ros": "History of Present Illness", "exam": "Physical Exam", "results": "Pertinent Results",
    "course": "Brief Hospital Course", "procedures": "Brief Hospital Course", "meds": "Discharge Medications",
    "disposition": "Discharge Disposition", "diagnosis": "Discharge Condition", "condition": "Discharge Condition",
    "instructions": "Discharge Instructions",
}

CONDITION_WORDS = {
    "hypertension": ["Hypertension", "HTN", "Essential hypertension", "Hypertension, on treatment"],
    "t2d": ["Type 2 diabetes mellitus", "DM2", "T2DM", "Diabetes mellitus type II", "NIDDM"],
    "afib": ["Paroxysmal atrial fibrillation", "PAF", "Atrial fibrillation", "Afib (paroxysmal)", "AF"],
    "heart_failure": ["Chronic systolic heart failure (HFrEF)", "CHF with reduced EF", "HFrEF",
                      "Systolic congestive heart failure"],
    "cad": ["Coronary artery disease", "CAD", "Coronary atherosclerosis"],
    "mdd": ["Major depressive disorder", "MDD", "Depression (major depressive disorder)"],
    "schizophrenia": ["Schizophrenia, followed by outpatient psychiatry", "Schizophrenia", "Paranoid schizophrenia"],
    "bipolar": ["Bipolar I disorder", "Bipolar disorder", "BPAD type I"],
    "hemorrhagic": ["Von Willebrand disease type 1", "vWD type 1", "Von Willebrand disease"],
    "peptic_ulcer_disease": ["Peptic ulcer disease", "PUD", "Gastric ulcer disease"],
    "surgical_valvular_disease": ["Severe aortic stenosis, referred for surgical aortic valve replacement",
                                  "Severe AS, planned for surgical AVR",
                                  "Severe aortic stenosis awaiting cardiac surgery (SAVR)"],
    "dementia": ["Alzheimer dementia, moderate; daughter is health care proxy",
                 "Moderate Alzheimer's dementia, daughter is HCP", "Dementia (Alzheimer type), moderate"],
}

# absent conditions a note may deny explicitly, in the words of a pertinent-negatives sentence
NEGATION_WORDS = {
    "afib": "atrial fibrillation", "prior_stroke": "stroke", "cad": "coronary artery disease",
    "heart_failure": "heart failure", "t2d": "diabetes", "peptic_ulcer_disease": "peptic ulcer disease",
    "hemorrhagic": "bleeding disorder", "mdd": "depression", "hypertension": "hypertension",
}

DRUG_WORDS = {"aspirin": ["aspirin", "ASA", "acetylsalicylic acid"], "apixaban": ["apixaban", "Eliquis"],
              "warfarin": ["warfarin", "Coumadin"], "metformin": ["metformin"], "furosemide": ["furosemide", "Lasix"],
              "metoprolol": ["metoprolol"], "lisinopril": ["lisinopril"], "atorvastatin": ["atorvastatin", "Lipitor"]}

LAB_FORMATS = {  # name -> (MIMIC label, long name with unit, short name)
    "wbc": ("WBC", "White count {v} K/uL", "WBC {v}"),
    "hemoglobin": ("Hgb", "Hemoglobin {v} g/dL", "Hgb {v}"),
    "platelets": ("Plt Ct", "Platelets {v} K/uL", "Plt {v}"),
    "glucose": ("Glucose", "Glucose {v} mg/dL", "Gluc {v}"),
    "creatinine": ("Creat", "Creatinine {v} mg/dL", "Cr {v}"),
    "ast": ("AST", "AST {v} U/L", "AST {v}"),
    "alt": ("ALT", "ALT {v} U/L", "ALT {v}"),
    "bilirubin": ("TotBili", "Total bilirubin {v} mg/dL", "Tbili {v}"),
    "hba1c": ("%HbA1c", "Hemoglobin A1c {v}%", "HbA1c {v}%"),
}

TYPO_WORDS = {"patient": "pateint", "history": "histroy", "with": "wiht", "admitted": "admited",
              "discharge": "dischrage", "follow": "folow", "recommended": "recomended", "because": "becuase",
              "significant": "signficant", "improved": "imporved", "tolerated": "tolerted", "which": "whcih"}

ALLERGIES = ["No Known Allergies / Adverse Drug Reactions", "Penicillins", "Sulfa (Sulfonamide Antibiotics)", "NKDA"]
ROS_LINES = ["Denies headache, vision changes or neck stiffness.", "No fevers or chills at home.",
             "Denies dysuria or hematuria.", "No recent weight loss.", "Reports fatigue for several weeks.",
             "No cough or hemoptysis.", "Denies rash.", "Reports poor appetite."]
