"""Reading n2c2 2018 Track 1 (cohort selection) patient files.

One XML file per patient: `<PatientMatching><TEXT><![CDATA[...]]></TEXT><TAGS>
<ABDOMINAL met="met"/>...</TAGS></PatientMatching>`. The text holds 2-5 records, each
starting "Record date: YYYY-MM-DD", separated by lines of 100 or more asterisks.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ElementTree
from dataclasses import dataclass
from pathlib import Path

from clinical_distil.files import InputError
from clinical_distil.tasks import N2C2_CRITERIA

RECORD_SPLIT = re.compile(r"^\s*\*{100,}\s*$", re.MULTILINE)
RECORD_DATE = re.compile(r"Record date:\s*(\d{4}-\d{2}-\d{2})")


@dataclass
class PatientFile:
    patient: str  # file stem, e.g. "100"
    text: str
    tags: dict[str, bool]  # criterion -> met (absent when the file has no TAGS, as unlabelled test files)

    @property
    def records(self) -> list[str]:
        return split_records(self.text)

    @property
    def record_dates(self) -> list[str]:
        return [match.group(1) for match in map(RECORD_DATE.search, self.records) if match]


def split_records(text: str) -> list[str]:
    return [record.strip() for record in RECORD_SPLIT.split(text) if record.strip()]


def read_patient_file(path: str | Path) -> PatientFile:
    path = Path(path)
    try:
        root = ElementTree.parse(path).getroot()
    except ElementTree.ParseError as error:
        raise InputError(f"malformed n2c2 XML in {path}: {error}") from error
    text_node = root.find("TEXT")
    if root.tag != "PatientMatching" or text_node is None:
        raise InputError(f"{path} is not an n2c2 2018 Track 1 file (expected <PatientMatching><TEXT>...)")
    tags: dict[str, bool] = {}
    tags_node = root.find("TAGS")
    for node in tags_node if tags_node is not None else []:
        met = (node.get("met") or "").strip().lower()
        if node.tag not in N2C2_CRITERIA or met not in ("met", "not met"):
            raise InputError(f"{path}: unknown criterion or value <{node.tag} met={node.get('met')!r}>")
        tags[node.tag] = met == "met"
    return PatientFile(patient=path.stem, text=text_node.text or "", tags=tags)


def read_folder(folder: str | Path) -> list[PatientFile]:
    folder = Path(folder)
    files = sorted(folder.glob("*.xml"))
    if not files:
        raise InputError(f"no n2c2 .xml files in {folder}")
    return [read_patient_file(path) for path in files]
