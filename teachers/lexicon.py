"""The text-only teacher's vocabularies: what a concept is called in a note, and what is asked about it.

Each list names its basis:

- CONDITIONS, EVENTS, FINDINGS: names of common adult inpatient diagnoses as ICD-10-CM category titles word
  them ("Atrial fibrillation and flutter", "Chronic kidney disease"), with the abbreviations in general use in
  clinical notes (standard medical abbreviation lists: HTN, CAD, CHF, COPD, ...); abbreviations that mean
  several things in notes (PE: physical exam or pulmonary embolism; RA: room air or rheumatoid arthritis; AS,
  ARF, HD, LP, AKA) are left out. `chronic` marks the serious or chronic diagnoses (a prior stroke or
  myocardial infarction included) whose absence from a past medical history is a fair No (the teacher
  prompt's rule: a discharge summary would mention them).
- PROCEDURES: procedure and imaging names as in CPT section headings and common clinical usage (EGD, TTE, PCI).
- DRUGS: generic names (USAN/INN) with common US brand names as listed in the FDA Orange Book and DailyMed
  labels; DRUG_CLASSES groups them by pharmacologic class (WHO ATC level 3/4 class names).
- SOCIAL_HISTORY: substance-use history items of a standard social history (tobacco, alcohol, illicit drugs).
- LABS: laboratory test names as LOINC's common names put them, with the abbreviations MIMIC's discharge
  summaries print in their results lines (MIMIC-III/IV LABEVENTS labels: "Creat", "UreaN", "Plt Ct",
  "TotBili", "%HbA1c", "INR(PT)").
- VITALS: standard vital-sign abbreviations (T, BP, HR, RR, SpO2) as charted in US hospital notes.
- SCORES: published clinical scores (CHADS2, CHA2DS2-VASc, HAS-BLED, MELD, GCS, NIHSS, CURB-65) and the
  left ventricular ejection fraction of an echocardiogram report.
- UNRECORDED_ITEMS: routine preventive-care and social-history items (ACIP-recommended vaccinations,
  USPSTF-recommended screenings, standard social history elements) that discharge summaries seldom record,
  each with the words whose presence in a note means it may be recorded.
- RELATED_DRUGS: guideline-directed therapy of a condition (ACC/AHA, ADA, GOLD guideline first-line drugs),
  used only to prefer plausible drugs when asking about drugs a complete medication list lacks.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

# kinds of concept: each has its own question wording (teachers/questions.py)
CONDITION, EVENT, FINDING, PROCEDURE, DRUG, SOCIAL, ALLERGY = (
    "condition", "event", "finding", "procedure", "drug", "social", "allergy")


@dataclass(frozen=True)
class Concept:
    key: str
    name: str  # as a question names it
    kind: str
    aliases: tuple[str, ...]
    chronic: bool = False  # serious and chronic: a past medical history that lacks it says No
    related: tuple[str, ...] = ()  # words whose presence makes its absence no fair No
    members: tuple[str, ...] = ()  # concepts whose affirmed mention affirms this one (a class, a use)
    brands: tuple[str, ...] = ()


def bare_name(name: str) -> str:
    """A question name without its article: "a stroke" -> "stroke"."""
    return re.sub(r"^(?:a|an) ", "", name)


def _concepts(kind: str, rows: list[tuple]) -> list[Concept]:
    found = []
    for row in rows:
        key, name, aliases, *rest = row
        chronic, related = (rest + [False, ()])[:2]
        # the question name is a name in notes too, less its article ("a heart murmur": "heart murmur")
        bare = bare_name(name)
        names = aliases if "(" in bare or bare in aliases else (bare, *aliases)
        found.append(Concept(key, name, kind, tuple(names), chronic=chronic, related=tuple(related)))
    return found


# (key, question name, other names, chronic, related words)
CONDITIONS = _concepts(CONDITION, [
    ("hypertension", "hypertension", ("HTN", "high blood pressure", "essential hypertension"), True,
     ("antihypertensive",)),
    ("diabetes", "diabetes mellitus", ("diabetes", "DM", "DM2", "T2DM", "T1DM", "IDDM", "NIDDM", "type 2 diabetes",
                                       "type 1 diabetes", "type 2 diabetes mellitus", "type 1 diabetes mellitus"),
     True, ("diabetic", "insulin", "metformin", "A1c", "HbA1c", "hyperglycemia")),
    ("hyperlipidemia", "hyperlipidemia", ("HLD", "dyslipidemia", "hypercholesterolemia")),
    ("cad", "coronary artery disease", ("CAD", "ischemic heart disease"), True,
     ("NSTEMI", "STEMI", "MI", "myocardial infarction", "stent", "PCI", "CABG", "angina", "LAD")),
    ("heart_failure", "heart failure", ("CHF", "congestive heart failure", "HFrEF", "HFpEF", "systolic heart failure",
                                        "diastolic heart failure"), True,
     ("cardiomyopathy", "LVEF", "EF", "ejection fraction", "diuresis", "diuresed")),
    ("atrial_fibrillation", "atrial fibrillation", ("afib", "a-fib", "AF", "AFib", "paroxysmal atrial fibrillation"),
     True, ("atrial flutter", "ablation", "pulmonary vein isolation", "CHADS2", "CHA2DS2-VASc", "anticoagulation")),
    ("atrial_flutter", "atrial flutter", ("aflutter",)),
    ("aortic_stenosis", "aortic stenosis", ("aortic valve stenosis",), True, ("aortic valve",)),
    ("pad", "peripheral arterial disease", ("peripheral artery disease", "PAD", "peripheral vascular disease", "PVD")),
    ("copd", "chronic obstructive pulmonary disease", ("COPD", "emphysema", "chronic bronchitis"), True,
     ("inhaler", "tiotropium", "albuterol", "FEV1")),
    ("asthma", "asthma", ()),
    ("osa", "obstructive sleep apnea", ("OSA", "sleep apnea")),
    ("ckd", "chronic kidney disease", ("CKD", "chronic renal insufficiency", "chronic renal failure"), True,
     ("ESRD", "dialysis", "hemodialysis", "nephropathy", "renal insufficiency", "renal failure", "kidney disease")),
    ("esrd", "end-stage renal disease", ("ESRD", "end stage renal disease"), True,
     ("dialysis", "hemodialysis", "CKD", "kidney disease", "renal failure")),
    ("cirrhosis", "cirrhosis", ("liver cirrhosis", "hepatic cirrhosis"), True,
     ("ascites", "varices", "hepatic encephalopathy", "liver disease", "MELD")),
    ("hepatitis_c", "hepatitis C", ("HCV", "hepatitis C virus"), True, ("hepatitis",)),
    ("hepatitis_b", "hepatitis B", ("HBV",)),
    ("hiv", "HIV infection", ("HIV", "human immunodeficiency virus", "AIDS"), True, ("antiretroviral", "CD4")),
    ("cancer", "cancer", ("malignancy", "carcinoma", "metastatic cancer"), True,
     ("chemotherapy", "oncology", "tumor", "metastatic", "lymphoma", "leukemia", "radiation")),
    ("colon_cancer", "colon cancer", ("colorectal cancer",)),
    ("breast_cancer", "breast cancer", ()),
    ("lung_cancer", "lung cancer", ()),
    ("prostate_cancer", "prostate cancer", ()),
    ("peptic_ulcer", "peptic ulcer disease", ("PUD", "peptic ulcer", "duodenal ulcer", "gastric ulcer")),
    ("diverticulitis", "diverticulitis", ()),
    ("gerd", "gastroesophageal reflux disease", ("GERD", "acid reflux")),
    ("depression", "major depressive disorder", ("depression", "MDD"), True,
     ("antidepressant", "SSRI", "sertraline", "citalopram", "escitalopram", "fluoxetine", "bupropion", "psychiatry",
      "depressive")),
    ("schizophrenia", "schizophrenia", (), True, ("antipsychotic", "psychosis")),
    ("bipolar", "bipolar disorder", ("bipolar I disorder", "bipolar II disorder"), True,
     ("bipolar", "lithium", "mania", "manic", "psychiatry")),
    ("dementia", "dementia", ("Alzheimer dementia", "Alzheimer's disease", "Alzheimer disease", "Alzheimer's dementia"),
     True, ("donepezil", "memantine", "cognitive impairment")),
    ("epilepsy", "a seizure disorder", ("seizure disorder", "epilepsy"), True,
     ("seizure", "seizures", "levetiracetam")),
    ("hypothyroidism", "hypothyroidism", ()),
    ("hyperthyroidism", "hyperthyroidism", ()),
    ("anemia", "anemia", ()),
    ("obesity", "obesity", ("morbid obesity",)),
    ("gout", "gout", ()),
    ("osteoarthritis", "osteoarthritis", ("OA",)),
    ("lupus", "systemic lupus erythematosus", ("SLE", "lupus")),
    ("bph", "benign prostatic hyperplasia", ("BPH",)),
    ("diabetic_retinopathy", "diabetic retinopathy", ()),
    ("diabetic_nephropathy", "diabetic nephropathy", ()),
    ("neuropathy", "peripheral neuropathy", ("diabetic peripheral neuropathy", "diabetic neuropathy")),
    ("angina", "angina", ("stable angina", "unstable angina")),
    ("multiple_sclerosis", "multiple sclerosis", (), True, ()),
    ("parkinson", "Parkinson disease", ("Parkinson's disease", "parkinsonism"), True, ()),
])

# conditions that happen at a time: asked as "during this admission" or "a history of"
EVENTS = _concepts(EVENT, [
    ("myocardial_infarction", "a myocardial infarction", ("myocardial infarction", "MI", "heart attack", "NSTEMI",
                                                          "STEMI", "non-ST elevation myocardial infarction",
                                                          "ST elevation myocardial infarction"), True,
     ("infarction", "troponin", "stent", "PCI", "CABG", "coronary")),
    ("stroke", "a stroke", ("CVA", "cerebrovascular accident", "ischemic stroke", "hemorrhagic stroke",
                            "MCA territory infarct", "MCA infarct", "cerebral infarct", "cerebral infarction"), True,
     ("TIA", "transient ischemic attack", "infarct", "hemiparesis", "dysarthria", "aphasia", "thrombolysis", "tPA",
      "neurology")),
    ("tia", "a transient ischemic attack", ("TIA",)),
    ("dvt", "a deep vein thrombosis", ("DVT", "deep venous thrombosis")),
    ("pulmonary_embolism", "a pulmonary embolism", ()),
    ("pneumonia", "pneumonia", ("PNA",)),
    ("aki", "an acute kidney injury", ("AKI", "acute renal failure")),
    ("gi_bleed", "gastrointestinal bleeding", ("GI bleed", "upper GI bleed", "lower GI bleed", "GI bleeding",
                                               "gastrointestinal bleed", "GIB", "UGIB", "LGIB")),
    ("dka", "diabetic ketoacidosis", ("DKA",)),
    ("sbo", "a small bowel obstruction", ("SBO", "bowel obstruction")),
    ("sepsis", "sepsis", ("septic shock",)),
    ("uti", "a urinary tract infection", ("urinary tract infection", "UTI")),
    ("cellulitis", "cellulitis", ()),
    ("pancreatitis", "pancreatitis", ()),
    ("delirium", "delirium", ()),
    ("hypoglycemia", "hypoglycemia", ()),
    ("syncope", "syncope", ()),
])

FINDINGS = _concepts(FINDING, [
    ("chest_pain", "chest pain", ()),
    ("dyspnea", "shortness of breath", ("dyspnea", "SOB", "dyspnea on exertion")),
    ("fever", "fever", ("fevers", "febrile")),
    ("chills", "chills", ()),
    ("nausea", "nausea", ()),
    ("vomiting", "vomiting", ("emesis",)),
    ("diarrhea", "diarrhea", ()),
    ("abdominal_pain", "abdominal pain", ()),
    ("headache", "headache", ("headaches",)),
    ("palpitations", "palpitations", ()),
    ("cough", "cough", ()),
    ("edema", "edema", ("peripheral edema", "lower extremity edema", "pedal edema", "leg swelling")),
    ("murmur", "a heart murmur", ("murmur", "murmurs")),
    ("rash", "a rash", ("rash",)),
    ("weight_loss", "weight loss", ()),
    ("melena", "melena", ()),
    ("hematochezia", "hematochezia", ()),
    ("hematemesis", "hematemesis", ()),
    ("dysuria", "dysuria", ()),
    ("jaundice", "jaundice", ()),
    ("confusion", "confusion", ("confused", "altered mental status")),
    ("dysarthria", "dysarthria", ()),
    ("crackles", "crackles", ("rales",)),
    ("wheezing", "wheezing", ("wheezes",)),
    ("jvd", "jugular venous distension", ("JVD",)),
    ("hyperglycemia", "hyperglycemia", ()),
])

PROCEDURES = _concepts(PROCEDURE, [
    ("cardiac_cath", "cardiac catheterization", ("cardiac cath", "left heart catheterization", "coronary angiography",
                                                 "coronary angiogram")),
    ("pci", "percutaneous coronary intervention", ("PCI", "drug-eluting stent", "bare metal stent",
                                                   "coronary stent")),
    ("cabg", "coronary artery bypass grafting", ("CABG", "coronary artery bypass graft", "bypass surgery")),
    ("pvi", "pulmonary vein isolation", ("PVI", "catheter ablation", "ablation")),
    ("egd", "an upper endoscopy (EGD)", ("EGD", "esophagogastroduodenoscopy", "upper endoscopy")),
    ("colonoscopy", "a colonoscopy", ("colonoscopy",)),
    ("transfusion", "a blood transfusion", ("transfusion", "blood transfusion", "packed red cells",
                                             "packed red blood cells", "pRBC", "PRBC", "pRBCs", "PRBCs")),
    ("intubation", "intubation", ("intubated", "mechanical ventilation")),
    ("dialysis", "dialysis", ("hemodialysis", "peritoneal dialysis")),
    ("thrombolysis", "thrombolysis", ("thrombolytics", "thrombolytic therapy")),
    ("amputation", "an amputation", ("amputation", "transmetatarsal amputation", "below the knee amputation", "BKA")),
    ("laparotomy", "an exploratory laparotomy", ("exploratory laparotomy", "ex-lap", "laparotomy")),
    ("bowel_resection", "a small bowel resection", ("small bowel resection",)),
    ("colectomy", "a colectomy", ("colectomy", "partial colectomy", "hemicolectomy")),
    ("avr", "aortic valve replacement", ("AVR", "TAVR", "SAVR", "surgical aortic valve replacement",
                                         "transcatheter aortic valve replacement")),
    ("pacemaker", "a pacemaker", ("pacemaker", "permanent pacemaker", "PPM")),
    ("defibrillator", "an implantable cardioverter-defibrillator", ("AICD", "implantable cardioverter defibrillator",
                                                                     "implantable cardioverter-defibrillator")),
    ("echo", "an echocardiogram", ("echocardiogram", "TTE", "TEE", "transthoracic echocardiogram", "echo")),
    ("ct", "a CT scan", ("CT", "CT scan", "computed tomography", "CTA")),
    ("mri", "an MRI", ("MRI", "magnetic resonance imaging")),
    ("chest_xray", "a chest x-ray", ("chest x-ray", "CXR", "chest radiograph")),
    ("ng_tube", "a nasogastric tube", ("NG tube", "nasogastric tube")),
    ("cardioversion", "cardioversion", ("DCCV",)),
    ("icu", "an ICU stay", ("ICU", "intensive care unit", "MICU", "CCU")),
    ("thoracentesis", "a thoracentesis", ("thoracentesis",)),
    ("paracentesis", "a paracentesis", ("paracentesis",)),
    ("central_line", "a central line", ("central line", "central venous catheter")),
])


def _drugs(rows: list[tuple]) -> list[Concept]:
    return [Concept(key, key, DRUG, (key, *aliases, *brands), brands=tuple(brands)) for key, brands, aliases in rows]


# (generic name, US brand names, other names as notes write them)
DRUGS = _drugs([
    ("aspirin", ("Ecotrin", "Bayer"), ("ASA", "acetylsalicylic acid")),
    ("clopidogrel", ("Plavix",), ()), ("ticagrelor", ("Brilinta",), ()), ("prasugrel", ("Effient",), ()),
    ("warfarin", ("Coumadin", "Jantoven"), ()), ("apixaban", ("Eliquis",), ()), ("rivaroxaban", ("Xarelto",), ()),
    ("dabigatran", ("Pradaxa",), ()), ("edoxaban", ("Savaysa",), ()), ("heparin", (), ("heparin drip",)),
    ("enoxaparin", ("Lovenox",), ()),
    ("atorvastatin", ("Lipitor",), ()), ("simvastatin", ("Zocor",), ()), ("rosuvastatin", ("Crestor",), ()),
    ("pravastatin", ("Pravachol",), ()),
    ("metoprolol", ("Lopressor", "Toprol XL", "Toprol-XL"), ("metoprolol succinate", "metoprolol tartrate")),
    ("carvedilol", ("Coreg",), ()), ("atenolol", ("Tenormin",), ()), ("propranolol", ("Inderal",), ()),
    ("lisinopril", ("Prinivil", "Zestril"), ()), ("enalapril", ("Vasotec",), ()), ("losartan", ("Cozaar",), ()),
    ("valsartan", ("Diovan",), ()), ("sacubitril-valsartan", ("Entresto",), ("sacubitril/valsartan",)),
    ("amlodipine", ("Norvasc",), ()), ("diltiazem", ("Cardizem",), ()), ("verapamil", ("Calan",), ()),
    ("hydrochlorothiazide", ("Microzide",), ("HCTZ",)), ("chlorthalidone", (), ()),
    ("furosemide", ("Lasix",), ()), ("torsemide", ("Demadex",), ()), ("bumetanide", ("Bumex",), ()),
    ("spironolactone", ("Aldactone",), ()), ("eplerenone", ("Inspra",), ()),
    ("isosorbide mononitrate", ("Imdur",), ()), ("isosorbide dinitrate", ("Isordil",), ()),
    ("nitroglycerin", ("Nitrostat",), ("NTG",)), ("hydralazine", (), ()), ("digoxin", ("Lanoxin",), ()),
    ("amiodarone", ("Cordarone", "Pacerone"), ()), ("sotalol", ("Betapace",), ()),
    ("metformin", ("Glucophage",), ()),
    ("insulin", ("Lantus", "Basaglar", "Humalog", "Novolog"),
     ("insulin glargine", "insulin lispro", "insulin aspart", "insulin drip", "NPH insulin", "regular insulin")),
    ("glipizide", ("Glucotrol",), ()), ("glyburide", (), ()), ("sitagliptin", ("Januvia",), ()),
    ("empagliflozin", ("Jardiance",), ()), ("dapagliflozin", ("Farxiga",), ()), ("liraglutide", ("Victoza",), ()),
    ("semaglutide", ("Ozempic",), ()),
    ("levothyroxine", ("Synthroid", "Levoxyl"), ()),
    ("pantoprazole", ("Protonix",), ()), ("omeprazole", ("Prilosec",), ()), ("esomeprazole", ("Nexium",), ()),
    ("famotidine", ("Pepcid",), ()),
    ("sertraline", ("Zoloft",), ()), ("citalopram", ("Celexa",), ()), ("escitalopram", ("Lexapro",), ()),
    ("fluoxetine", ("Prozac",), ()), ("bupropion", ("Wellbutrin",), ()), ("trazodone", (), ()),
    ("mirtazapine", ("Remeron",), ()),
    ("quetiapine", ("Seroquel",), ()), ("olanzapine", ("Zyprexa",), ()), ("risperidone", ("Risperdal",), ()),
    ("haloperidol", ("Haldol",), ()), ("aripiprazole", ("Abilify",), ()), ("clozapine", ("Clozaril",), ()),
    ("lithium", (), ()), ("donepezil", ("Aricept",), ()), ("memantine", ("Namenda",), ()),
    ("gabapentin", ("Neurontin",), ()), ("pregabalin", ("Lyrica",), ()), ("levetiracetam", ("Keppra",), ()),
    ("phenytoin", ("Dilantin",), ()), ("valproate", ("Depakote",), ("valproic acid",)),
    ("lorazepam", ("Ativan",), ()), ("alprazolam", ("Xanax",), ()),
    ("oxycodone", ("Roxicodone", "OxyContin"), ()), ("hydromorphone", ("Dilaudid",), ()), ("morphine", (), ()),
    ("acetaminophen", ("Tylenol",), ("APAP",)), ("ibuprofen", ("Advil", "Motrin"), ()), ("naproxen", ("Aleve",), ()),
    ("prednisone", (), ()), ("methylprednisolone", ("Solu-Medrol", "Medrol"), ()),
    ("albuterol", ("Proventil", "Ventolin", "ProAir"), ()), ("tiotropium", ("Spiriva",), ()),
    ("ceftriaxone", ("Rocephin",), ()), ("azithromycin", ("Zithromax",), ()), ("levofloxacin", ("Levaquin",), ()),
    ("ciprofloxacin", ("Cipro",), ()), ("vancomycin", ("Vancocin",), ()),
    ("piperacillin-tazobactam", ("Zosyn",), ("piperacillin/tazobactam",)), ("cefepime", ("Maxipime",), ()),
    ("metronidazole", ("Flagyl",), ()), ("amoxicillin", (), ()), ("amoxicillin-clavulanate", ("Augmentin",), ()),
    ("doxycycline", (), ()), ("trimethoprim-sulfamethoxazole", ("Bactrim",), ("TMP-SMX",)),
    ("nitrofurantoin", ("Macrobid",), ()),
    ("allopurinol", ("Zyloprim",), ()), ("tamsulosin", ("Flomax",), ()), ("finasteride", ("Proscar",), ()),
    ("potassium chloride", ("K-Dur",), ("KCl",)), ("magnesium oxide", ("Mag-Ox",), ()),
    ("multivitamin", (), ("MVI",)), ("docusate", ("Colace",), ()), ("senna", ("Senokot",), ()),
    ("polyethylene glycol", ("MiraLax",), ()), ("ondansetron", ("Zofran",), ()),
    ("alteplase", ("Activase",), ("tPA",)), ("epinephrine", (), ()),
])


def _classes(rows: list[tuple]) -> list[Concept]:
    return [Concept(key, name, DRUG, aliases, members=members) for key, name, aliases, members in rows]


# (key, question name, names of the class in notes, member drugs)
DRUG_CLASSES = _classes([
    ("anticoagulant", "an anticoagulant", ("anticoagulation", "anticoagulated", "anticoagulant", "anticoagulants",
                                           "blood thinner", "blood thinners"),
     ("warfarin", "apixaban", "rivaroxaban", "dabigatran", "edoxaban", "heparin", "enoxaparin")),
    ("antiplatelet", "an antiplatelet agent", ("antiplatelet", "antiplatelet agent", "antiplatelet therapy",
                                               "dual antiplatelet therapy", "DAPT"),
     ("aspirin", "clopidogrel", "ticagrelor", "prasugrel")),
    ("statin", "a statin", ("statin", "statins"), ("atorvastatin", "simvastatin", "rosuvastatin", "pravastatin")),
    ("beta_blocker", "a beta blocker", ("beta blocker", "beta-blocker", "beta blockers", "beta-blockers"),
     ("metoprolol", "carvedilol", "atenolol", "propranolol", "sotalol")),
    ("ace_inhibitor", "an ACE inhibitor", ("ACE inhibitor", "ACE-inhibitor", "ACEi", "ACE inhibitors"),
     ("lisinopril", "enalapril")),
    ("arb", "an angiotensin receptor blocker", ("angiotensin receptor blocker", "ARB"),
     ("losartan", "valsartan", "sacubitril-valsartan")),
    ("loop_diuretic", "a loop diuretic", ("loop diuretic", "diuretic", "diuretics"),
     ("furosemide", "torsemide", "bumetanide")),
    ("ppi", "a proton pump inhibitor", ("proton pump inhibitor", "PPI"),
     ("pantoprazole", "omeprazole", "esomeprazole")),
    ("ssri", "an SSRI antidepressant", ("SSRI", "selective serotonin reuptake inhibitor", "antidepressant"),
     ("sertraline", "citalopram", "escitalopram", "fluoxetine")),
    ("sglt2", "an SGLT2 inhibitor", ("SGLT2 inhibitor",), ("empagliflozin", "dapagliflozin")),
    ("antipsychotic", "an antipsychotic", ("antipsychotic", "antipsychotics"),
     ("quetiapine", "olanzapine", "risperidone", "haloperidol", "aripiprazole", "clozapine")),
    ("opioid", "an opioid", ("opioid", "opioids", "narcotics"), ("oxycodone", "hydromorphone", "morphine")),
    ("antibiotic", "antibiotics", ("antibiotic", "antibiotics"),
     ("ceftriaxone", "azithromycin", "levofloxacin", "ciprofloxacin", "vancomycin", "piperacillin-tazobactam",
      "cefepime", "metronidazole", "amoxicillin", "amoxicillin-clavulanate", "doxycycline",
      "trimethoprim-sulfamethoxazole", "nitrofurantoin")),
])

# substance use: (key, question name, names in notes, member uses); smoking has its own status rules (reading.py)
SOCIAL_HISTORY = [
    Concept("alcohol", "alcohol use", SOCIAL, ("alcohol use", "alcohol", "EtOH", "ETOH", "alcoholic beverages",
                                               "alcoholic drinks", "alcohol consumption")),
    Concept("illicit_drugs", "illicit drug use", SOCIAL,
            ("illicit drug use", "illicit drugs", "illicit drug", "recreational drugs", "recreational drug use",
             "IVDU", "intravenous drug use", "injection drug use", "drug use"),
            members=("heroin", "cocaine", "methamphetamine", "marijuana")),
    Concept("heroin", "heroin use", SOCIAL, ("heroin use", "heroin")),
    Concept("cocaine", "cocaine use", SOCIAL, ("cocaine use", "cocaine")),
    Concept("methamphetamine", "methamphetamine use", SOCIAL, ("methamphetamine use", "methamphetamine", "meth")),
    Concept("marijuana", "marijuana use", SOCIAL, ("marijuana use", "marijuana", "cannabis")),
]

ALLERGIES = [
    Concept("drug_allergy", "known drug allergies", ALLERGY, ("allergies", "drug allergies", "known allergies",
                                                              "adverse drug reactions", "allergy")),
]
# allergens read in an Allergies section (names as allergy lists write them)
ALLERGENS = {
    "penicillin": ("penicillin", "penicillins", "PCN"), "sulfa drugs": ("sulfa", "sulfonamides", "sulfa drugs"),
    "codeine": ("codeine",), "morphine": ("morphine",), "latex": ("latex",),
    "iodinated contrast": ("iodine", "contrast dye", "iodinated contrast"), "shellfish": ("shellfish",),
    "aspirin": ("aspirin",), "NSAIDs": ("NSAIDs", "nsaids"), "cephalosporins": ("cephalosporins",),
    "vancomycin": ("vancomycin",), "ACE inhibitors": ("ACE inhibitors",), "amoxicillin": ("amoxicillin",),
}

ALL_CONCEPTS: list[Concept] = (CONDITIONS + EVENTS + FINDINGS + PROCEDURES + DRUGS + DRUG_CLASSES + SOCIAL_HISTORY
                                + ALLERGIES)
BY_KEY: dict[str, Concept] = {concept.key: concept for concept in ALL_CONCEPTS}


@dataclass(frozen=True)
class Measure:
    """A lab, vital sign, score or measurement: its names in free text and in MIMIC results lines."""

    key: str
    name: str  # as a question names it
    aliases: tuple[str, ...] = ()  # free text: "creatinine of 2.1", "Cr 1.5"
    labels: tuple[str, ...] = ()  # MIMIC results lines: "Creat-1.1"
    plausible_for: tuple[str, ...] = field(default=())  # conditions that make it plausible; () for any patient


# (key, question name, free-text names, results-line labels, conditions that make it plausible)
LABS = [Measure(*row) for row in [
    ("wbc", "white blood cell count", ("white blood cell count", "WBC", "white count"), ("WBC",)),
    ("hemoglobin", "hemoglobin", ("hemoglobin", "Hgb", "Hb"), ("Hgb",)),
    ("hematocrit", "hematocrit", ("hematocrit", "Hct"), ("Hct",)),
    ("platelets", "platelet count", ("platelet count", "platelets", "Plt"), ("Plt Ct", "Plt")),
    ("mcv", "mean corpuscular volume", ("MCV", "mean corpuscular volume"), ("MCV",), ("anemia",)),
    ("sodium", "serum sodium", ("sodium",), ("Na",)),
    ("potassium", "serum potassium", ("potassium",), ("K",)),
    ("chloride", "serum chloride", ("chloride",), ("Cl",)),
    ("bicarbonate", "serum bicarbonate", ("bicarbonate", "bicarb", "HCO3"), ("HCO3", "TotCO2")),
    ("bun", "blood urea nitrogen", ("blood urea nitrogen", "BUN"), ("UreaN",)),
    ("creatinine", "creatinine", ("creatinine", "Cr", "Creat"), ("Creat",)),
    ("glucose", "blood glucose", ("glucose", "blood sugar", "fingerstick glucose"), ("Glucose",)),
    ("anion_gap", "anion gap", ("anion gap",), ("AnGap",), ("dka",)),
    ("calcium", "serum calcium", ("calcium",), ("Calcium",)),
    ("magnesium", "serum magnesium", ("magnesium",), ("Mg",)),
    ("phosphate", "serum phosphate", ("phosphorus", "phosphate"), ("Phos",)),
    ("ast", "AST", ("AST", "aspartate aminotransferase", "SGOT"), ("AST",), ("cirrhosis", "hepatitis_c")),
    ("alt", "ALT", ("ALT", "alanine aminotransferase", "SGPT"), ("ALT",), ("cirrhosis", "hepatitis_c")),
    ("alk_phos", "alkaline phosphatase", ("alkaline phosphatase", "Alk Phos", "ALP"), ("AlkPhos",)),
    ("bilirubin", "total bilirubin", ("total bilirubin", "bilirubin", "Tbili", "T bili"), ("TotBili",)),
    ("albumin", "serum albumin", ("albumin",), ("Albumin",)),
    ("lipase", "lipase", ("lipase",), ("Lipase",), ("pancreatitis", "abdominal_pain")),
    ("troponin", "troponin", ("troponin", "troponin T", "troponin I", "TnT", "TnI", "TropT"), ("cTropnT", "cTropnI"),
     ("cad", "myocardial_infarction", "chest_pain", "angina")),
    ("ck", "creatine kinase", ("creatine kinase", "CK", "CPK"), ("CK(CPK)",), ("myocardial_infarction",)),
    ("bnp", "BNP", ("BNP", "brain natriuretic peptide"), ("BNP",), ("heart_failure", "dyspnea")),
    ("nt_probnp", "NT-proBNP", ("NT-proBNP", "proBNP"), ("proBNP",), ("heart_failure", "dyspnea")),
    ("inr", "INR", ("INR",), ("INR(PT)", "INR"), ("atrial_fibrillation", "warfarin", "cirrhosis", "gi_bleed")),
    ("pt", "prothrombin time", ("prothrombin time",), ("PT",), ("cirrhosis",)),
    ("ptt", "partial thromboplastin time", ("partial thromboplastin time", "PTT", "aPTT"), ("PTT",)),
    ("hba1c", "hemoglobin A1c", ("hemoglobin A1c", "HbA1c", "A1c", "glycated hemoglobin"), ("%HbA1c", "HbA1c"),
     ("diabetes",)),
    ("lactate", "lactate", ("lactate", "lactic acid"), ("Lactate",), ("sepsis", "pneumonia", "sbo")),
    ("tsh", "TSH", ("TSH", "thyroid stimulating hormone"), ("TSH",),
     ("atrial_fibrillation", "hypothyroidism", "hyperthyroidism", "dementia", "depression")),
    ("ldl", "LDL cholesterol", ("LDL", "LDL cholesterol"), ("LDLcalc", "LDLmeas"),
     ("cad", "myocardial_infarction", "stroke", "diabetes", "hyperlipidemia")),
    ("hdl", "HDL cholesterol", ("HDL", "HDL cholesterol"), ("HDL",), ("cad", "hyperlipidemia")),
    ("cholesterol", "total cholesterol", ("total cholesterol",), ("Cholest",), ("cad", "hyperlipidemia")),
    ("triglycerides", "triglycerides", ("triglycerides",), ("Triglyc",), ("hyperlipidemia", "pancreatitis")),
    ("ferritin", "ferritin", ("ferritin",), ("Ferritn",), ("anemia", "gi_bleed")),
    ("crp", "C-reactive protein", ("C-reactive protein", "CRP"), ("CRP",), ("pneumonia", "sepsis", "cellulitis")),
    ("d_dimer", "D-dimer", ("D-dimer",), ("D-Dimer",), ("dvt", "pulmonary_embolism", "dyspnea")),
    ("procalcitonin", "procalcitonin", ("procalcitonin",), (), ("pneumonia", "sepsis")),
    ("ammonia", "ammonia", ("ammonia",), ("Ammonia",), ("cirrhosis", "confusion")),
    ("b12", "vitamin B12", ("vitamin B12", "B12"), ("VitB12",), ("dementia", "neuropathy", "anemia")),
    ("uric_acid", "uric acid", ("uric acid",), ("UricAcd",), ("gout",)),
    ("ph", "arterial pH", ("arterial pH",), ("pH",), ("dka", "copd", "sepsis")),
]]

# free-text lab names read only with a results-line label (one or two letters that mean other things in prose)
VITALS = [Measure(*row) for row in [
    ("temperature", "temperature", ("temperature", "T", "Temp", "Tmax", "Tc")),
    ("systolic_bp", "systolic blood pressure", ("blood pressure", "BP")),
    ("diastolic_bp", "diastolic blood pressure", ("blood pressure", "BP")),
    ("heart_rate", "heart rate", ("heart rate", "HR", "P", "pulse")),
    ("respiratory_rate", "respiratory rate", ("respiratory rate", "RR", "R", "resp rate")),
    ("oxygen_saturation", "oxygen saturation", ("oxygen saturation", "O2 sat", "O2sat", "SpO2", "SaO2", "O2 saturation",
                                                "sat")),
    ("weight", "weight", ("weight", "Wt")),
    ("height", "height", ("height", "Ht")),
    ("bmi", "body mass index", ("BMI", "body mass index")),
]]

SCORES = [Measure(*row) for row in [
    ("chads2", "CHADS2 score", ("CHADS2",)),
    ("cha2ds2_vasc", "CHA2DS2-VASc score", ("CHA2DS2-VASc", "CHA2DS2VASc")),
    ("has_bled", "HAS-BLED score", ("HAS-BLED",)),
    ("meld", "MELD score", ("MELD", "MELD-Na")),
    ("gcs", "Glasgow Coma Scale score", ("GCS", "Glasgow Coma Scale")),
    ("nihss", "NIH Stroke Scale score", ("NIHSS", "NIH Stroke Scale")),
    ("curb65", "CURB-65 score", ("CURB-65",)),
    ("lvef", "left ventricular ejection fraction", ("LVEF", "EF", "ejection fraction")),
]]

MEASURES: dict[str, Measure] = {measure.key: measure for measure in LABS + VITALS + SCORES}

# condition -> drugs of its guideline-directed therapy (ACC/AHA, ADA, GOLD, APA first-line drugs)
RELATED_DRUGS = {
    "atrial_fibrillation": ("apixaban", "rivaroxaban", "warfarin", "amiodarone", "diltiazem", "digoxin"),
    "heart_failure": ("spironolactone", "carvedilol", "sacubitril-valsartan", "empagliflozin", "furosemide"),
    "cad": ("clopidogrel", "atorvastatin", "nitroglycerin", "metoprolol", "aspirin"),
    "myocardial_infarction": ("clopidogrel", "ticagrelor", "atorvastatin", "aspirin"),
    "diabetes": ("metformin", "insulin", "empagliflozin", "glipizide", "sitagliptin"),
    "hypertension": ("lisinopril", "amlodipine", "hydrochlorothiazide", "losartan"),
    "copd": ("tiotropium", "albuterol"), "asthma": ("albuterol",),
    "peptic_ulcer": ("pantoprazole", "omeprazole"), "gi_bleed": ("pantoprazole", "omeprazole"),
    "depression": ("sertraline", "citalopram", "escitalopram"),
    "schizophrenia": ("olanzapine", "risperidone", "quetiapine", "aripiprazole"),
    "dementia": ("donepezil", "memantine"), "hypothyroidism": ("levothyroxine",),
    "stroke": ("clopidogrel", "atorvastatin", "aspirin"), "gout": ("allopurinol",), "bph": ("tamsulosin",),
    "epilepsy": ("levetiracetam",),
}
COMMON_DRUGS = ("atorvastatin", "lisinopril", "metformin", "levothyroxine", "omeprazole", "amlodipine", "aspirin",
                "gabapentin", "furosemide", "warfarin")

# (question, what it asks about, words whose presence means the note may answer it: each matched at a word's start);
# asked only where none of the words occurs
UNRECORDED_ITEMS = (
    ("Has the patient received an influenza vaccine this season?", "influenza vaccination",
     ("vaccin", "immuniz", "flu shot", "influenza")),
    ("Has the patient received a pneumococcal vaccine?", "pneumococcal vaccination",
     ("vaccin", "immuniz", "pneumococc", "pneumovax", "prevnar")),
    ("Has the patient had a screening colonoscopy in the past ten years?", "colorectal cancer screening",
     ("colonoscopy", "colon")),
    ("Does the patient have an advance directive or living will?", "advance directives or code status",
     ("advance directive", "living will", "code status", "dnr", "dni", "full code", "molst", "polst",
      "health care proxy", "hcp", "comfort")),
    ("Is the patient currently employed?", "employment", ("employ", "work", "retired", "job", "occupation",
                                                          "disability")),
    ("Does the patient exercise regularly?", "exercise habits", ("exercise", "physical activity", "walks",
                                                                 "sedentary", "gym")),
    ("Has the patient traveled outside the country in the past month?", "recent travel", ("travel", "trip",
                                                                                           "abroad")),
    ("Does the patient have pets at home?", "pets at home", ("pet", "dog", "cat", "animal")),
    ("Is the patient sexually active?", "sexual history", ("sexual", "partner")),
    ("Does the patient follow a special diet at home?", "diet at home", ("diet", "nutrition", "low salt",
                                                                         "low sodium")),
    ("Has the patient ever had a sleep study?", "sleep studies", ("sleep study", "polysomnogra", "sleep apnea", "osa",
                                                                  "cpap")),
    ("Has the patient had genetic testing?", "genetic testing", ("genetic", "genotyp", "brca")),
    ("Has the patient ever had COVID-19?", "COVID-19 history", ("covid", "sars-cov-2", "coronavirus")),
    ("Does the patient use hearing aids?", "hearing aids", ("hearing", "deaf")),
    ("Has the patient seen a dentist in the past year?", "dental care", ("dental", "dentist", "teeth")),
    ("Has the patient had a bone density scan?", "bone density testing", ("dexa", "bone density", "osteoporosis",
                                                                         "osteopenia")),
    ("Has the patient received a tetanus booster in the past ten years?", "tetanus vaccination",
     ("tetanus", "tdap", "vaccin")),
    ("Does the patient drink caffeinated beverages daily?", "caffeine intake", ("caffeine", "coffee", "caffeinated")),
    ("Does the patient own a firearm?", "firearm ownership", ("firearm", "gun", "weapon")),
)
