"""Held-out renderers: discharge notes and n2c2-style patient files written independently of the training notes.

`render_held_out_discharge` writes one discharge summary of a fact sheet; `render_held_out_n2c2` writes a
patient as 2-5 dated records and the n2c2 2018 Track 1 XML that clinical_distil.n2c2 reads. Both draw every
choice from the `random.Random` passed in, so a seed gives the same text.

Fact keys of `stated` (each maps to the exact words of the text that state the fact):
  sex_age, admit_date, discharge_date, scenario, carried_forward, alcohol, drugs, smoking, language, decisions;
  condition:<key> (a true condition of sheet.conditions; prior_stroke is stated by event:stroke),
  afib_ablation, afib_reversible, angina, ischemia, abdominal_surgery, complication:<diabetes complication>;
  event:<mi|keto|bleed|stroke> (dated); hedge:<key> (a doubt about a condition the sheet says is absent);
  lab:<name>:<ISO day>, lvef, chads2; med:<sheet medication>, supplement:<sheet supplement>,
  held:<sheet medication>, resumed:<sheet medication>.
A key is present only where its fact holds (a yes/no criterion the sheet answers No has no key, or a hedge);
carried_forward, held: and resumed: belong to discharge notes. In n2c2 records each record states its own
share: dated events in the records of their dates (the last record names older events undated), the first
day's labs in the admission record, medications and capacity in the last record.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import date
from xml.sax.saxutils import quoteattr

from simulation.fact_sheets import FactSheet, n2c2_labels
from simulation.held_out_phrases import (BRANDS, CONDITIONS, HOLD_REASONS, SCENARIO_TEXT, STALE_PROBLEMS,
                                         Statements, cardiac_phrases, condition_phrases, days_before,
                                         decision_phrase, discharge_exam, event_phrases, exam_lines,
                                         follow_up_lines, hedge_phrases, instruction_lines, lab_lines,
                                         medication_line, medication_name, review_of_systems, social_phrases,
                                         surgery_phrase, us_date)

__all__ = ["HeldOutNote", "HeldOutRecord", "WITHHELD_TERMS", "render_held_out_discharge", "render_held_out_n2c2"]

# brand names and abbreviations the held-out notes write and the training notes never do (tests/test_held_out.py
# checks both against a generated corpus); the held-out notes also use common ones the training notes share
WITHHELD_TERMS: tuple[str, ...] = (
    "Toprol XL", "Zestril", "Imdur", "Norvasc", "Glucophage", "Lantus", "Zoloft", "Ecotrin", "HLD", "afib w/ RVR",
    "SBO", "CAP (RLL)", "L MCA", "PPD", "A&Ox3",
)
SECTION_NAMES = {
    "cc": ("CHIEF COMPLAINT", "CC", "REASON FOR ADMISSION"),
    "hpi": ("HPI", "PRESENTING HISTORY", "HX OF PRESENT ILLNESS"),
    "pmh": ("PAST MEDICAL HX", "PMHx", "ACTIVE PROBLEMS"),
    "old": ("OLD PROBLEM LIST (CARRIED FORWARD)", "PROBLEM LIST COPIED FORWARD FROM PRIOR VISIT"),
    "psh": ("PAST SURGICAL HX", "PSHx"),
    "social": ("SOCIAL HX", "SHx"),
    "family": ("FAMILY HX", "FHx"),
    "allergies": ("ALLERGIES", "ALLERGIES/ADRs"),
    "home_meds": ("HOME MEDS", "MEDS PRIOR TO ADMISSION", "OUTPATIENT MEDS"),
    "ros": ("ROS", "REVIEW OF SYSTEMS"),
    "exam": ("ADMISSION EXAM", "EXAM ON ARRIVAL"),
    "course": ("INPATIENT COURSE BY PROBLEM", "COURSE BY ISSUE", "HOSPITAL COURSE, PROBLEM-BASED"),
    "results": ("PERTINENT RESULTS", "LABS/STUDIES", "DATA"),
    "dispo": ("DISPO", "DISPOSITION"),
    "consults": ("CONSULTS", "CONSULTING SERVICES"),
    "pending": ("PENDING AT DISCHARGE", "RESULTS STILL OUT"),
    "dc_meds": ("DISCHARGE MEDS", "MEDS AT DISCHARGE", "DISCHARGE MED REC"),
    "follow": ("FOLLOW UP", "F/U", "APPOINTMENTS"),
    "instructions": ("PT INSTRUCTIONS", "DISCHARGE INSTRUCTIONS TO PATIENT"),
}
HEADINGS = ("{}:", "== {} ==", "[{}]", "--- {} ---")
SECTION_ORDERS = (
    ("cc", "hpi", "ros", "pmh", "old", "psh", "social", "family", "allergies", "home_meds", "exam", "results",
     "consults", "course", "dispo", "dc_meds", "pending", "instructions", "follow"),
    ("cc", "hpi", "allergies", "home_meds", "pmh", "psh", "old", "social", "family", "ros", "exam", "course",
     "consults", "results", "dc_meds", "dispo", "follow", "pending", "instructions"),
    ("cc", "pmh", "old", "hpi", "ros", "psh", "family", "social", "allergies", "home_meds", "exam", "consults",
     "course", "dc_meds", "results", "pending", "instructions", "follow", "dispo"),
)
RECORD_SEPARATOR = "*" * 100
CLINICIANS = ("Okafor", "Lindqvist", "Ramanathan", "Costa", "Halvorsen", "Nakamura", "Brennan", "Adeyemi")


@dataclass
class HeldOutNote:
    """A held-out discharge note and, by fact key, the words of it that state each fact."""

    text: str
    stated: dict[str, str] = field(default_factory=dict)


@dataclass
class HeldOutRecord:
    """One dated record of an n2c2-style patient (its text opens "Record date: YYYY-MM-DD")."""

    date: str
    text: str
    stated: dict[str, str] = field(default_factory=dict)


def sex_age(sheet: FactSheet, rng: random.Random) -> str:
    sex = {"M": ("M", "man"), "F": ("F", "woman")}[sheet.sex]
    return rng.choice((f"{sheet.age} y/o {sex[0]}", f"{sheet.age}-year-old {sex[1]}"))


def held_medication(sheet: FactSheet, rng: random.Random) -> str | None:
    """A home medication held on admission and resumed at discharge, when the sheet has one that can be held."""
    holdable = [medication for medication in sheet.medications if medication_name(medication) in HOLD_REASONS]
    return rng.choice(holdable) if holdable else None


def stale_problem_block(sheet: FactSheet, rng: random.Random) -> list[str]:
    """The carried-forward list of a prior visit: resolved problems beside a few still-true chronic ones."""
    visit = date.fromisoformat(sheet.admit).replace(day=1)
    months_back = rng.randint(4, 30)
    year, month = divmod(visit.year * 12 + visit.month - 1 - months_back, 12)
    chronic = [CONDITIONS[key][0] for key in CONDITIONS if sheet.conditions[key]]
    items = rng.sample(STALE_PROBLEMS, rng.randint(2, 4)) + rng.sample(chronic, min(2, len(chronic)))
    rng.shuffle(items)
    header = rng.choice(("(carried forward from the {} clinic note; not reconciled this admission)",
                         "(copied forward, last updated {}; items may be resolved)"))
    return [header.format(f"{month + 1}/{year}")] + [f"  - {item}" for item in items]


def history_sections(sheet: FactSheet, rng: random.Random, says: Statements) -> dict[str, list[str]]:
    """CC, HPI, problems, carried-forward list, surgeries, social and family history, allergies."""
    scenario = SCENARIO_TEXT[sheet.scenario]
    current = [kind for kind, days in (("mi", sheet.mi_days_ago), ("keto", sheet.keto_days_ago),
                                       ("bleed", sheet.bleed_days_ago), ("stroke", sheet.stroke_days_ago))
               if days is not None and days <= (date.fromisoformat(sheet.discharge)
                                                - date.fromisoformat(sheet.admit)).days]
    older = tuple(kind for kind in ("mi", "keto", "bleed", "stroke") if kind not in current)
    problems = condition_phrases(sheet, rng, says) + event_phrases(sheet, rng, says, kinds=older)
    intro = f"{says.say('sex_age', sex_age(sheet, rng))} admitted {says.say('admit_date', us_date(sheet.admit))}"
    baseline = rng.choice(("independent in ADLs and IADLs", "walks with a cane, needs help with shopping",
                           "independent at home, still driving"))
    hpi = [f"{intro} with {rng.choice(scenario['cc'])}. {scenario['hpi']}", scenario["ed"],
           f"At baseline {baseline}; last PCP visit {rng.randint(2, 11)} months before admission."]
    hpi += [f"This admission: {phrase}." for phrase in event_phrases(sheet, rng, says, kinds=tuple(current))]
    hpi.append(f"Working dx: {says.say('scenario', scenario['dx'])}.")
    surgeries = [phrase for phrase in [surgery_phrase(sheet, rng, says, sheet.admit)] if phrase]
    surgeries += rng.sample(("R knee arthroscopy", "cataract extraction OS", "L carpal tunnel release",
                             "tonsillectomy as a child"), rng.randint(1, 2))
    social = social_phrases(sheet, rng, says)
    social.append(rng.choice(("lives with spouse", "lives alone, independent in ADLs", "lives with daughter")))
    return {
        "cc": [rng.choice(scenario["cc"])],
        "hpi": hpi,
        "pmh": [f"- {item}" for item in problems] or ["- none on file"],
        "old": stale_problem_block(sheet, rng),
        "psh": [f"- {item}" for item in surgeries],
        "social": ["; ".join(social)],
        "family": [rng.choice(("mother: osteoporosis; father: prostate ca", "no premature heart disease in family",
                               "sister with breast ca; parents deceased, old age"))],
        "allergies": [rng.choice(("NKDA", "PCN (hives)", "sulfa (rash)", "codeine (nausea)"))],
    }


def course_section(sheet: FactSheet, rng: random.Random, says: Statements, held: str | None) -> list[str]:
    """Problem-based course: the principal problem, each chronic condition, a held drug, hedged problems."""
    scenario = SCENARIO_TEXT[sheet.scenario]
    lines = [f"# {scenario['dx']}: {scenario['course']}"]
    for key, plan in (("afib", "rate control, anticoagulation continued"),
                      ("heart_failure", "daily weights, 2 g Na diet"),
                      ("t2d", "SSI while inpatient, home regimen at discharge"), ("hypertension", "BP at goal"),
                      ("cad", "secondary prevention continued"), ("mdd", "mood stable, home regimen"),
                      ("dementia", "delirium precautions, family at bedside")):
        if sheet.conditions[key]:
            lines.append(f"# {CONDITIONS[key][0]}: {plan}.")
    if held is not None:
        name = medication_name(held)
        lines.append(f"# Meds: home {says.say(f'held:{held}', f'{name} ({BRANDS[name]}) {HOLD_REASONS[name]}')}; "
                     "restarted before discharge.")
    lines += [f"# {phrase}." for phrase in hedge_phrases(sheet, rng, says, rng.randint(2, 4))]
    lines.append(rng.choice(("# Code: full (confirmed)", "# Code status: full code", "# DNR/DNI, confirmed")))
    return lines


def medication_sections(sheet: FactSheet, rng: random.Random, says: Statements, held: str | None,
                        style: int) -> dict[str, list[str]]:
    """Home medications, and discharge medications with the held one marked resumed."""
    home = [f"- {medication_line(medication, style)}" for medication in sheet.medications + sheet.supplements]
    discharge = []
    for medication in sheet.medications:
        line = medication_line(medication, style)
        if medication == held:
            line = says.say(f"resumed:{medication}", f"{line} -- RESUMED at discharge (held on admission)")
        discharge.append(f"- {says.say(f'med:{medication}', line)}")
    for supplement in sheet.supplements:
        discharge.append(f"- {says.say(f'supplement:{supplement}', medication_line(supplement, style))} (OTC)")
    return {"home_meds": home or ["- none"], "dc_meds": discharge or ["- no medications"]}


def results_section(sheet: FactSheet, rng: random.Random, says: Statements) -> list[str]:
    layout = rng.choice(("table", "trend", "rows"))
    lines = lab_lines(sheet.labs, layout, says)
    study_day = sorted({lab.day for lab in sheet.labs})[-1]
    lines += cardiac_phrases(sheet, says, study_day)
    lines.append(SCENARIO_TEXT[sheet.scenario]["study"])
    return lines


def render_held_out_discharge(sheet: FactSheet, rng: random.Random) -> HeldOutNote:
    """A discharge summary of the sheet in the held-out style, with the words stating each fact."""
    says = Statements()
    held = held_medication(sheet, rng)
    sections = history_sections(sheet, rng, says)
    sections.update(medication_sections(sheet, rng, says, held, rng.randrange(3)))
    sections["exam"] = exam_lines(sheet, rng)
    sections["course"] = course_section(sheet, rng, says, held)
    sections["results"] = results_section(sheet, rng, says)
    destination = "acute rehab" if sheet.scenario == "stroke" else rng.choice(("home", "home w/ VNA", "SNF"))
    sections["dispo"] = [f"{destination}; condition stable. {decision_phrase(sheet, rng, says)}.",
                         discharge_exam(sheet, rng)]
    sections["follow"] = follow_up_lines(sheet, rng)
    sections["ros"] = review_of_systems(sheet, rng)
    sections["instructions"] = instruction_lines(sheet, rng)
    sections["consults"] = [SCENARIO_TEXT[sheet.scenario]["consults"]]
    sections["pending"] = [rng.choice(("blood cultures x2: no growth to date, final read pending",
                                       "none; all send-outs resulted", "vitamin B12 and folate sent, PCP to follow"))]
    heading = rng.choice(HEADINGS)
    title = rng.choice(("DISCHARGE SUMMARY", "HOSPITAL DISCHARGE SUMMARY", "INPATIENT DISCHARGE NOTE"))
    lines = [title, f"MRN {sheet.subject_id} | Enc {sheet.hadm_id} | Admit {us_date(sheet.admit)} | "
             f"D/C {says.say('discharge_date', us_date(sheet.discharge))}",
             f"Service: medicine, team {rng.randint(1, 6)} | Attending: Dr. {rng.choice(CLINICIANS)} | "
             f"PCP: Dr. {rng.choice(CLINICIANS)}"]
    for key in rng.choice(SECTION_ORDERS):
        lines += ["", heading.format(rng.choice(SECTION_NAMES[key]))] + sections[key]
        if key == "old":
            says.say("carried_forward", "\n".join(sections[key]))
    lines += ["", rng.choice(("Electronically signed, hospitalist service", "-- dictated, not read back"))]
    return HeldOutNote(text="\n".join(lines) + "\n", stated=dict(says.stated))


EVENT_CLINICS = {"mi": "CARDIOLOGY FOLLOW-UP", "keto": "ENDOCRINE VISIT", "bleed": "GI CLINIC NOTE",
                 "stroke": "NEUROLOGY FOLLOW-UP"}


def stay_days(sheet: FactSheet) -> int:
    return (date.fromisoformat(sheet.discharge) - date.fromisoformat(sheet.admit)).days


def older_event_groups(sheet: FactSheet) -> list[list[tuple[str, int]]]:
    """Events before this admission, oldest first, those under 10 days apart grouped; at most three groups."""
    days = {"mi": sheet.mi_days_ago, "keto": sheet.keto_days_ago, "bleed": sheet.bleed_days_ago,
            "stroke": sheet.stroke_days_ago}
    events = sorted(((kind, ago) for kind, ago in days.items() if ago is not None and ago > stay_days(sheet)),
                    key=lambda event: -event[1])
    groups: list[list[tuple[str, int]]] = []
    for event in events:
        if groups and groups[-1][-1][1] - event[1] < 10:
            groups[-1].append(event)
        else:
            groups.append([event])
    while len(groups) > 3:
        groups[:2] = [groups[0] + groups[1]]
    return groups


def record_text(day: date | str, title: str, parts: list[tuple[str, list[str]]]) -> str:
    lines = [f"Record date: {day if isinstance(day, str) else day.isoformat()}", "", title]
    for name, body in parts:
        lines += ["", f"{name}:"] + body
    return "\n".join(lines)


def prior_record(sheet: FactSheet, rng: random.Random, day: date, group: list[tuple[str, int]], first: bool,
                 wording: float) -> tuple[str, str, dict[str, str]]:
    """An outpatient record before this admission: the grouped events dated, the problems, some medications."""
    says = Statements()
    title = EVENT_CLINICS[group[-1][0]] if group else "PRIMARY CARE VISIT"
    kinds = tuple(kind for kind, _ in group)
    events = event_phrases(sheet, rng, says, kinds=kinds, wording=wording)
    problems = condition_phrases(sheet, random.Random(wording), says)
    surgery = surgery_phrase(sheet, rng, says, day.isoformat()) if first else None
    medications = rng.sample(sheet.medications, rng.randint(0, len(sheet.medications)))
    parts = [("Interval history", [f"{sex_age(sheet, rng)} seen today."] + [f"- {event}" for event in events]),
             ("Problems", [f"- {item}" for item in problems + ([surgery] if surgery else [])] or ["- none"]),
             ("Current meds", [f"- {medication_line(item, 0)}" for item in sorted(medications)] or ["- none"]),
             ("Vitals", [f"BP {rng.randint(112, 136)}/{rng.randint(64, 84)}, HR {rng.randint(58, 92)}, "
                         f"wt {rng.randint(55, 110)} kg"]),
             ("Plan", [rng.choice(("continue current regimen", "labs before next visit",
                                   "return in 3 months or sooner"))])]
    return day.isoformat(), record_text(day, title, parts), says.stated


def inpatient_record(sheet: FactSheet, rng: random.Random, day: str, first: bool,
                     wording: float) -> tuple[str, str, dict[str, str]]:
    """The admission record: story, problems, social history, home medications and the labs drawn so far."""
    says = Statements()
    scenario = SCENARIO_TEXT[sheet.scenario]
    hospital_day = (date.fromisoformat(day) - date.fromisoformat(sheet.admit)).days + 1
    title = "ADMISSION H&P" if hospital_day == 1 else f"HOSPITALIST PROGRESS NOTE, HD{hospital_day}"
    current = tuple(kind for kind, ago in (("mi", sheet.mi_days_ago), ("keto", sheet.keto_days_ago),
                                           ("bleed", sheet.bleed_days_ago), ("stroke", sheet.stroke_days_ago))
                    if ago is not None and ago <= stay_days(sheet))
    older = tuple(kind for kind in ("mi", "keto", "bleed", "stroke") if kind not in current)
    story = [f"{says.say('sex_age', sex_age(sheet, rng))} admitted {says.say('admit_date', us_date(sheet.admit))} "
             f"with {rng.choice(scenario['cc'])}. {scenario['hpi']}"]
    story += [f"- {phrase} (this admission)" for phrase in event_phrases(sheet, rng, says, kinds=current,
                                                                         wording=wording)]
    problems = condition_phrases(sheet, random.Random(wording), says)
    problems += event_phrases(sheet, rng, says, dated=False, kinds=older, wording=wording)
    surgery = surgery_phrase(sheet, rng, says, day) if first else None
    labs = [lab for lab in sheet.labs if lab.day <= day]
    parts = [("HPI", story),
             ("PMH", [f"- {item}" for item in problems + ([surgery] if surgery else [])] or ["- none"]),
             ("Social", social_phrases(sheet, rng, says)),
             ("Home meds", [f"- {medication_line(item, 1)}" for item in sheet.medications + sheet.supplements]
              or ["- none"]),
             ("Labs", lab_lines(labs, rng.choice(("table", "rows")), says)),
             ("Assessment", [f"{says.say('scenario', scenario['dx'])}."]
              + [f"- {phrase}" for phrase in hedge_phrases(sheet, rng, says, rng.randint(1, 2))])]
    return day, record_text(day, title, parts), says.stated


def discharge_record(sheet: FactSheet, rng: random.Random, since: str,
                     wording: float) -> tuple[str, str, dict[str, str]]:
    """The last record: course, later labs, echo and CHADS2, discharge medications, capacity, follow-up."""
    says = Statements()
    scenario = SCENARIO_TEXT[sheet.scenario]
    older = tuple(kind for kind, ago in (("mi", sheet.mi_days_ago), ("keto", sheet.keto_days_ago),
                                         ("bleed", sheet.bleed_days_ago), ("stroke", sheet.stroke_days_ago))
                  if ago is not None and ago > stay_days(sheet))
    labs = [lab for lab in sheet.labs if lab.day > since]
    medications = [f"- {says.say(f'med:{item}', medication_line(item, 2))}" for item in sheet.medications]
    medications += [f"- {says.say(f'supplement:{item}', medication_line(item, 2))}" for item in sheet.supplements]
    parts = [("Course", [f"{says.say('scenario', scenario['dx'])}: {scenario['course']}"]
              + [f"- {phrase}" for phrase in event_phrases(sheet, rng, says, dated=False, kinds=older,
                                                          wording=wording)]),
             ("Labs since last note", lab_lines(labs, "trend", says)),
             ("Studies", cardiac_phrases(sheet, says, sheet.discharge) + [scenario["study"]]),
             ("Discharge meds", medications or ["- none"]),
             ("Disposition", [f"{decision_phrase(sheet, rng, says)}; discharged "
                              f"{says.say('discharge_date', us_date(sheet.discharge))}."]),
             ("Follow-up", follow_up_lines(sheet, rng))]
    return sheet.discharge, record_text(sheet.discharge, "DISCHARGE NOTE", parts), says.stated


def render_held_out_n2c2_records(sheet: FactSheet, rng: random.Random) -> list[tuple[str, str, dict[str, str]]]:
    """The dated records of a patient, oldest first; the last one is dated the discharge."""
    groups = older_event_groups(sheet)
    wording = rng.random()  # one wording of the problem list for every record of the patient
    if not groups and rng.random() < 0.5:
        groups = [[]]
    records = []
    for index, group in enumerate(groups):
        if group:
            latest = group[-1][1]
            day = days_before(sheet, latest - rng.randint(0, min(6, latest - stay_days(sheet) - 1)))
        else:
            day = days_before(sheet, stay_days(sheet) + rng.randint(30, 300))
        records.append(prior_record(sheet, rng, day, group, index == 0, wording))
    first_draw = min(lab.day for lab in sheet.labs if lab.name == "wbc")
    records.append(inpatient_record(sheet, rng, first_draw, not records, wording))
    records.append(discharge_record(sheet, rng, first_draw, wording))
    return records


def render_held_out_n2c2(sheet: FactSheet, rng: random.Random) -> tuple[str, list[HeldOutRecord]]:
    """A patient as 2-5 dated records, and its n2c2 2018 Track 1 XML with the sheet's labels as TAGS."""
    records = [HeldOutRecord(date=day, text=text, stated=dict(stated))
               for day, text, stated in render_held_out_n2c2_records(sheet, rng)]
    body = f"\n\n{RECORD_SEPARATOR}\n\n".join(record.text for record in records)
    tags = "\n".join(f"<{criterion} met={quoteattr('met' if met else 'not met')} />"
                     for criterion, met in n2c2_labels(sheet).items())
    xml = (f'<?xml version="1.0" encoding="UTF-8" ?>\n<PatientMatching>\n<TEXT><![CDATA[\n{body}\n]]></TEXT>\n'
           f"<TAGS>\n{tags}\n</TAGS>\n</PatientMatching>\n")
    return xml, records
