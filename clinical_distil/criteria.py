"""Criteria files: the questions a distilled student is asked of each note, and how an answer decides a criterion.

A criteria file is YAML (a list under `criteria:`) or CSV (one row per criterion) with, per criterion:

- `id`: a name, unique in the file;
- `question`: asked as written; it may hold `{reference_date}` (the patient's most recent record date)
  and `{window}` (the criterion's time window);
- `answer`: `yes/no` or `numeric`;
- `rule` (optional): how an answer decides met / not met. For yes/no: `yes` (the default: met when the
  answer is Yes) or `no` (met when it is anything but Yes). For numbers: `> x`, `>= x`, `< x`, `<= x`,
  `= x`, `in [a, b]` or `not in [a, b]` (closed intervals); without a rule a numeric answer is reported,
  not decided. An answer that gives no number (NA, text) never meets a numeric rule;
- `window` (optional): a time window in words, e.g. `6 months`, filled into `{window}`.

The evaluation tasks read their questions from the shipped files (criteria/n2c2-2018.yaml,
criteria/apixaban.yaml), so each question has one source.

An answer of the wrong type (a number or prose to a yes/no question; Yes, No or prose to a numeric one) is
off-type: `Criterion.fits` says so, and it meets no rule (rule `no` would otherwise count it as met).
An id may hold any character, spaces included (the review page keeps ids whole).
"""

from __future__ import annotations

import math
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinical_distil.answers import normalize_answer, parse_number
from clinical_distil.files import InputError, read_csv

ANSWER_TYPES = ("yes/no", "numeric")
PLACEHOLDERS = ("reference_date", "window")
COLUMNS = ("id", "question", "answer", "rule", "window")
NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)"
COMPARISON = re.compile(rf"^\s*(>=|<=|>|<|=)\s*({NUMBER})\s*$")
INTERVAL = re.compile(rf"^\s*(not\s+in|in)\s*\[\s*({NUMBER})\s*,\s*({NUMBER})\s*\]\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class Rule:
    """How an answer decides a criterion: `yes` / `no` for yes/no answers; a comparison or an interval for
    numbers (`low`, `high` are the interval's ends, or both the compared value)."""

    kind: str  # yes, no, >, >=, <, <=, =, in, not in
    low: float = math.nan
    high: float = math.nan

    def met(self, answer: Any) -> bool:
        """Whether `answer` (the student's answer as written) meets the criterion."""
        if self.kind in ("yes", "no"):
            said_yes = normalize_answer(answer) == "Yes"
            return said_yes if self.kind == "yes" else not said_yes
        value = parse_number(answer) if normalize_answer(answer) != "NA" else None
        if value is None:
            return False
        return {">": value > self.low, ">=": value >= self.low, "<": value < self.low, "<=": value <= self.low,
                "=": value == self.low, "in": self.low <= value <= self.high,
                "not in": not self.low <= value <= self.high}[self.kind]

    def __str__(self) -> str:
        number = lambda value: f"{value:g}"  # noqa: E731
        if self.kind in ("yes", "no"):
            return self.kind
        if self.kind in ("in", "not in"):
            return f"{self.kind} [{number(self.low)}, {number(self.high)}]"
        return f"{self.kind} {number(self.low)}"


@dataclass(frozen=True)
class Criterion:
    id: str
    question: str
    answer: str  # one of ANSWER_TYPES
    rule: Rule | None = None
    window: str = ""

    def ask(self, reference_date: str = "") -> str:
        """The question with its placeholders filled."""
        return self.question.format(reference_date=reference_date or "the most recent record", window=self.window)

    def fits(self, answer: Any) -> bool:
        """Whether an answer is of the criterion's type: Yes, No or NA to a yes/no question; one number or NA to a
        numeric one. Anything else (a number to a yes/no question, prose cut off at the token limit) is off-type."""
        normalized = normalize_answer(answer)
        if self.answer == "yes/no":
            return normalized in ("Yes", "No", "NA")
        return normalized == "NA" or parse_number(answer) is not None

    def met(self, answer: Any) -> bool | None:
        """met / not met by the rule (an off-type answer never meets it); None when the criterion has no rule (a
        number reported, not decided)."""
        if self.rule is None:
            return None
        return self.fits(answer) and self.rule.met(answer)


def parse_rule(text: Any, answer: str, where: str) -> Rule | None:
    """A rule as written in a criteria file; one line naming the criterion when it cannot be read."""
    if isinstance(text, bool):  # YAML reads a bare yes / no as true / false
        text = "yes" if text else "no"
    written = "" if text is None or (isinstance(text, float) and math.isnan(text)) else str(text).strip()
    if answer == "yes/no":
        if written.lower() in ("", "yes"):
            return Rule("yes")
        if written.lower() == "no":
            return Rule("no")
        raise InputError(f"{where}: rule {written!r} for a yes/no answer; write yes (met when Yes) or no")
    if not written:
        return None
    compared = COMPARISON.match(written)
    if compared:
        return Rule(compared.group(1), float(compared.group(2)), float(compared.group(2)))
    interval = INTERVAL.match(written)
    if interval:
        kind = "not in" if interval.group(1).lower().startswith("not") else "in"
        low, high = float(interval.group(2)), float(interval.group(3))
        if low > high:
            raise InputError(f"{where}: rule {written!r} has its interval's ends reversed; write in [low, high]")
        return Rule(kind, low, high)
    raise InputError(f"{where}: rule {written!r} cannot be read; write one of > x, >= x, < x, <= x, = x, "
                     "in [a, b], not in [a, b]")


def _placeholders(question: str, where: str) -> None:
    try:
        names = [name for _, name, _, _ in string.Formatter().parse(question) if name is not None]
    except ValueError as error:
        raise InputError(f"{where}: question has a stray brace ({error}); write {{{{ or }}}} for a brace") from None
    unknown = [name for name in names if name not in PLACEHOLDERS]
    if unknown:
        raise InputError(f"{where}: question holds {{{unknown[0]}}}; the placeholders are "
                         + ", ".join("{" + name + "}" for name in PLACEHOLDERS))


def criteria_from_records(records: list[dict[str, Any]], source: str) -> list[Criterion]:
    """Checked criteria from a file's records (YAML mappings or CSV rows)."""
    if not records:
        raise InputError(f"{source} holds no criterion; give at least one with id, question and answer")
    criteria, seen = [], set()
    for number, record in enumerate(records, start=1):
        if not isinstance(record, dict):
            raise InputError(f"{source}: criterion {number} is not a mapping of id, question, answer")
        unknown = sorted(set(record) - set(COLUMNS))
        if unknown:
            raise InputError(f"{source}: criterion {number} has unknown field {unknown[0]!r}; the fields are "
                             f"{', '.join(COLUMNS)}")
        text = {key: "" if record.get(key) is None else str(record.get(key)).strip() for key in COLUMNS}
        where = f"{source}: criterion {text['id'] or number}"
        for required in ("id", "question", "answer"):
            if not text[required]:
                raise InputError(f"{where} has no {required}")
        if text["id"] in seen:
            raise InputError(f"{source}: id {text['id']!r} is used twice; give every criterion its own id")
        seen.add(text["id"])
        answer = text["answer"].lower().replace(" ", "")
        answer = {"yes/no": "yes/no", "yesno": "yes/no", "boolean": "yes/no", "numeric": "numeric",
                  "number": "numeric"}.get(answer, answer)
        if answer not in ANSWER_TYPES:
            raise InputError(f"{where}: answer type {text['answer']!r} is unknown; write yes/no or numeric")
        _placeholders(text["question"], where)
        if "{window}" in text["question"] and not text["window"]:
            raise InputError(f"{where}: question holds {{window}} but the criterion gives no window")
        criteria.append(Criterion(text["id"], text["question"], answer, parse_rule(record.get("rule"), answer, where),
                                  text["window"]))
    return criteria


def _check_text(path: Path) -> None:
    """A criteria file is UTF-8 text: a binary file (or another encoding) is refused in one line."""
    data = path.read_bytes()
    if b"\x00" in data:
        raise InputError(f"{path} is binary (it holds NUL bytes); a criteria file is YAML or CSV text, saved as UTF-8")
    try:
        data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise InputError(f"{path} is not UTF-8 text (byte {error.start} cannot be read); a criteria file is YAML or "
                         "CSV text, saved as UTF-8") from None


def read_criteria(path: str | Path) -> list[Criterion]:
    """A criteria file (.yaml / .yml / .csv), checked; one line and exit code 2 for what is wrong."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"criteria file not found: {path}")
    if path.suffix.lower() in (".yaml", ".yml", ".csv"):
        _check_text(path)
    if path.suffix.lower() in (".yaml", ".yml"):
        import yaml

        try:
            loaded = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as error:
            raise InputError(f"{path} is not valid YAML ({str(error).splitlines()[0]})") from None
        records = loaded.get("criteria") if isinstance(loaded, dict) else loaded
        if not isinstance(records, list):
            raise InputError(f"{path}: write the criteria as a list under 'criteria:'")
        return criteria_from_records(records, str(path))
    if path.suffix.lower() == ".csv":
        frame = read_csv(path, dtype=str, keep_default_na=False)
        missing = [column for column in ("id", "question", "answer") if column not in frame.columns]
        if missing:
            raise InputError(f"{path} lacks column(s) {', '.join(missing)}; a criteria CSV has id, question, answer "
                             "and optionally rule, window")
        return criteria_from_records(frame.to_dict("records"), str(path))
    raise InputError(f"{path}: a criteria file is .yaml, .yml or .csv")
