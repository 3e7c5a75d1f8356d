"""Settings declared once: a script's flags (or a notebook's parameters) with default, help and allowed values.

Each stage declares one dataclass of `setting(...)` fields (clinical_distil/stages.py). That one
declaration gives the script its command line (fire reads the signature and the Args section
built from it, so `--help` lists every flag), checks every value's type and range, gives the
driver the flags to pass and the YAML keys it accepts, and checks a notebook's parameters.

    @dataclass
    class Example(Settings):
        max_tokens: int = setting(4096, "longest reply in tokens", minimum=1)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar

from clinical_distil.files import InputError

_EMPTY = object()


def setting(default: Any, help: str, *, choices: tuple | None = None, minimum: float | None = None,
            above: float | None = None, maximum: float | None = None, words: tuple[str, ...] = (),
            infinite: bool = False) -> Any:
    """A declared setting. `minimum`/`maximum` bound it inclusively, `above` exclusively; `choices` lists the
    allowed values; `words` the words a number may also be given as (e.g. "all"); `infinite`: a number may be
    inf or -inf (else only a finite number is taken: an infinite temperature runs, and makes no sense)."""
    rules = {"help": help, "choices": choices, "minimum": minimum, "above": above, "maximum": maximum,
             "words": words, "infinite": infinite}
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata=rules)
    return field(default=default, metadata=rules)


def _kinds(annotation: Any) -> tuple[set[type], bool]:
    """The plain types a field's annotation allows, and whether None is allowed."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = typing.get_args(annotation)
    else:
        members = (annotation,)
    kinds = {typing.get_origin(member) or member for member in members}
    optional = type(None) in kinds
    return {kind for kind in kinds if kind is not type(None)}, optional


def _describe(kinds: set[type], optional: bool, words: tuple[str, ...]) -> str:
    names = {bool: "true or false", int: "a whole number", float: "a number", str: "text", list: "a list",
             dict: "a mapping"}
    parts = [names.get(kind, kind.__name__) for kind in sorted(kinds, key=lambda kind: kind.__name__)]
    parts += [repr(word) for word in words]
    if optional:
        parts.append("None")
    return " or ".join(dict.fromkeys(parts))


def value_word(annotation: Any, rules: dict[str, Any]) -> str:
    """What a flag takes, for --help: its choices, true|false, N (a whole number), X (a number), TEXT, A,B (a
    list), MAPPING, with the words a number may also be ("all") and None where allowed."""
    if rules.get("choices"):
        return "{" + ",".join(map(str, rules["choices"])) + "}"
    if isinstance(annotation, str):  # a postponed annotation that did not resolve: read its names
        names = {part.strip() for part in annotation.split("|")}
        kinds = {kind for kind in (bool, int, float, str, list, dict) if kind.__name__ in names}
        optional = "None" in names
    elif annotation is inspect.Parameter.empty or annotation is Any:
        return "VALUE"
    else:
        kinds, optional = _kinds(annotation)
    words = tuple(rules.get("words") or ())
    if words:
        kinds = kinds - {str}
    parts = [{bool: "true|false", int: "N", float: "X", str: "TEXT", list: "A,B", dict: "MAPPING"}.get(kind, "VALUE")
             for kind in sorted(kinds, key=lambda kind: [bool, int, float, str, list, dict].index(kind)
                                if kind in (bool, int, float, str, list, dict) else 9)]
    if float in kinds and int in kinds:
        parts.remove("N")
    parts += list(words)
    if optional:
        parts.append("None")
    elif parts == ["true|false"]:  # --name alone means true
        return "[true|false]"
    return "|".join(dict.fromkeys(parts)) or "VALUE"


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return int(value) if value.is_integer() else None
    if isinstance(value, str):
        try:
            return int(value.strip())
        except ValueError:
            return None
    return None


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(number) else number


def _coerce(name: str, value: Any, annotation: Any, rules: dict[str, Any]) -> Any:
    """The value as its declared type, or an InputError naming the flag, what it got and what it takes."""
    kinds, optional = _kinds(annotation)
    words = tuple(rules.get("words") or ())
    if words:  # text is allowed only as one of these words ("all")
        kinds = kinds - {str}
    if value is None or (optional and isinstance(value, str) and value.strip().lower() == "none"):
        if optional:
            return None
    elif isinstance(value, str) and value.strip().lower() in words:
        return value.strip().lower()
    elif bool in kinds and isinstance(value, bool):
        return value
    elif bool in kinds and str(value).strip().lower() in ("true", "false", "yes", "no"):
        return str(value).strip().lower() in ("true", "yes")
    elif int in kinds and _as_int(value) is not None:
        return _as_int(value)
    elif float in kinds and _as_float(value) is not None:
        return _as_float(value)
    elif list in kinds and isinstance(value, (list, tuple, str)):
        return list(value) if not isinstance(value, str) else [part.strip() for part in value.split(",")
                                                                if part.strip()]
    elif dict in kinds and isinstance(value, dict):
        return dict(value)
    elif str in kinds and isinstance(value, (list, tuple)):  # fire reads "a,b" as a tuple
        return ",".join(str(part) for part in value)
    elif str in kinds and isinstance(value, (str, int, float)) and not isinstance(value, bool):
        return str(value)
    raise InputError(f"--{name} must be {_describe(kinds, optional, words)}, got {value!r}")


def _check_range(name: str, value: Any, rules: dict[str, Any]) -> None:
    if value is None or isinstance(value, str) and value in (rules.get("words") or ()):
        return
    choices = rules.get("choices")
    if choices is not None and value not in choices:
        raise InputError(f"--{name} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        if math.isinf(value) and not rules.get("infinite"):
            raise InputError(f"--{name} must be a finite number, got {value!r}")
        low, above, high = rules.get("minimum"), rules.get("above"), rules.get("maximum")
        if low is not None and value < low:
            raise InputError(f"--{name} must be at least {low:g}, got {value!r}")
        if above is not None and value <= above:
            raise InputError(f"--{name} must be more than {above:g}, got {value!r}")
        if high is not None and value > high:
            raise InputError(f"--{name} must be at most {high:g}, got {value!r}")


def nearest(name: str, known: list[str]) -> str:
    """'; did you mean --x?' for the closest known name, or ''."""
    close = difflib.get_close_matches(name, known, n=1, cutoff=0.6)
    return f"; did you mean --{close[0]}?" if close else ""


@dataclass
class Settings:
    """Base of every declaration: checking, flags for a command, fire's signature and --help text."""

    what: ClassVar[str] = "flag"  # "flag" for scripts, "parameter" for notebooks

    @classmethod
    def declared(cls) -> list[dataclasses.Field]:
        return list(dataclasses.fields(cls))

    @classmethod
    def names(cls) -> list[str]:
        return [item.name for item in cls.declared()]

    @classmethod
    def check_names(cls, names: list[str], source: str = "") -> None:
        known = cls.names()
        for name in names:
            if name not in known:
                where = f" in {source}" if source else ""
                raise InputError(f"unknown {cls.what} --{name}{where}{nearest(name, known)} "
                                 f"(--help lists them)")

    @classmethod
    def from_values(cls, values: dict[str, Any], source: str = "") -> "Settings":
        """The declared defaults with `values` over them, every value checked: the one place bad input stops."""
        cls.check_names(list(values), source)
        hints = typing.get_type_hints(cls)
        checked = {}
        for item in cls.declared():
            value = values[item.name] if item.name in values else (
                item.default if item.default is not dataclasses.MISSING else item.default_factory())
            value = _coerce(item.name, value, hints[item.name], dict(item.metadata))
            _check_range(item.name, value, dict(item.metadata))
            checked[item.name] = value
        settings = cls(**checked)
        settings.check()
        return settings

    def check(self) -> None:
        """Checks that involve several settings (a subclass adds its own)."""

    def values(self) -> dict[str, Any]:
        return {item.name: getattr(self, item.name) for item in self.declared()}

    def changed(self) -> dict[str, Any]:
        """The settings that differ from their declared default."""
        defaults = {item.name: item.default if item.default is not dataclasses.MISSING else item.default_factory()
                    for item in self.declared()}
        return {name: value for name, value in self.values().items() if value != defaults[name]}

    @classmethod
    def help_lines(cls) -> str:
        """The settings as docstring `Args:` lines (`name: help (default X)`)."""
        lines = []
        for item in cls.declared():
            default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
            lines.append(f"    {item.name}: {item.metadata['help']} (default {default!r})")
        return "\n".join(lines)

    @classmethod
    def signature(cls) -> inspect.Signature:
        """One keyword argument per setting, defaults included, for fire to parse and list."""
        parameters = []
        for item in cls.declared():
            default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
            parameters.append(inspect.Parameter(item.name, inspect.Parameter.KEYWORD_ONLY, default=default))
        return inspect.Signature(parameters)


def notebook_parameters(settings_class: type[Settings], namespace: dict[str, Any]) -> Settings:
    """A notebook's parameters (the `parameters` cell and what papermill injected) checked against the
    declaration; an unknown injected name (papermill only warns of one) stops with its nearest parameter."""
    hidden: set[str] = set()
    try:
        shell = namespace["get_ipython"]()
        hidden = set(shell.user_ns_hidden)
    except (KeyError, TypeError, AttributeError):
        pass
    known = settings_class.names()
    given = {name: value for name, value in namespace.items()
             if not name.startswith("_") and name not in hidden and not callable(value)
             and type(value).__name__ != "module"}
    for name in given:
        if name not in known:
            raise InputError(f"unknown parameter {name}{nearest(name, known)} (the parameters cell lists them)")
    return settings_class.from_values({name: given[name] for name in known if name in given})


def as_flags(values: dict[str, Any]) -> list[str]:
    """`--name value` pairs for a command line (lists joined by commas, True / False spelled out)."""
    flags = []
    for name, value in values.items():
        if value is None:
            continue
        if isinstance(value, (list, tuple)):
            value = ",".join(str(part) for part in value)
        flags += [f"--{name}", str(value)]
    return flags
