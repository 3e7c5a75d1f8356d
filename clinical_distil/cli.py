"""Running a script the way every script in the project does: fire over the script's declared settings.

The command line is checked against the declaration before anything else runs: an unknown or
misspelt flag, or a word that belongs to no flag, stops with one line naming the nearest valid
flag; then fire parses the values and every one is checked for type and range. Errors a
researcher can fix (`InputError`) become one line on stderr and exit code 2; anything else is a
bug and keeps its traceback.
"""

from __future__ import annotations

import functools
import inspect
import logging
import sys
from pathlib import Path
from typing import Any, Callable

import fire

from clinical_distil.files import InputError
from clinical_distil.settings import Settings, nearest


def check_command_line(settings_class: type[Settings], argv: list[str]) -> None:
    """Every word of `argv` is a declared --flag or the value of the flag before it."""
    booleans = {item.name for item in settings_class.declared() if item.type in ("bool", "bool | None")}
    check_words(argv, settings_class.names(), booleans)


def check_words(argv: list[str], known: set[str] | list[str], booleans: set[str]) -> None:
    """Every word of `argv` is one of the `known` --flags (--noNAME for a boolean) or the value of the flag
    before it."""
    takes_value = False
    for word in argv:
        if word.startswith("--") and len(word) > 2:
            name, has_value, _ = word[2:].partition("=")
            name = name.replace("-", "_")
            if name not in known and not (name.startswith("no") and name[2:] in booleans):
                raise InputError(f"unknown flag --{name}{nearest(name, known)} (--help lists them)")
            takes_value = not has_value
        elif takes_value:
            takes_value = False
        else:
            raise InputError(f"unexpected argument {word!r}: every setting is given by name, as --name value "
                             "(--help lists them)")


def run_stage(settings_class: type[Settings], main: Callable[[Any], Any], argv: list[str] | None = None) -> None:
    """Check the command line, build `settings_class` from it and call `main(settings)`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = Path(sys.argv[0]).name

    def command(**values: Any) -> Any:
        return main(settings_class.from_values(values))

    command.__signature__ = settings_class.signature()  # type: ignore[attr-defined]
    command.__doc__ = f"{(settings_class.__doc__ or '').strip()}\n\nArgs:\n{settings_class.help_lines()}\n"
    command.__name__ = name
    wants_help = any(word in ("--help", "-h") for word in argv)
    run(command, name=name, argv=argv, check=None if wants_help else lambda: check_command_line(settings_class, argv))


def _checked_function(function: Callable[..., Any], argv: list[str]) -> tuple[Callable[..., Any], Callable[[], None]]:
    """A plain function as a command: its flags checked by name before it runs, its values by the type its
    signature names (int, float, bool, str) once fire has read them."""
    signature = inspect.signature(function)
    # "int" whether the module postpones its annotations (a string) or not (the class)
    kinds = {name: getattr(parameter.annotation, "__name__", "") if isinstance(parameter.annotation, type)
             else str(parameter.annotation) for name, parameter in signature.parameters.items()}
    messages = {"int": "a whole number", "float": "a number", "bool": "true or false", "str": "text"}
    fits = {"int": lambda value: isinstance(value, int) and not isinstance(value, bool),
            "float": lambda value: isinstance(value, (int, float)) and not isinstance(value, bool),
            "bool": lambda value: isinstance(value, bool), "str": lambda value: isinstance(value, (str, int, float))}

    @functools.wraps(function)
    def checked(*args: Any, **kwargs: Any) -> Any:
        for parameter, value in signature.bind(*args, **kwargs).arguments.items():
            kind = kinds.get(parameter, "")
            if kind in fits and not fits[kind](value):
                raise InputError(f"--{parameter} must be {messages[kind]}, got {value!r}")
        return function(*args, **kwargs)

    booleans = {parameter for parameter, kind in kinds.items() if kind == "bool"}
    return checked, lambda: check_words(argv, set(signature.parameters), booleans)


def run(command: Callable[..., Any] | dict, name: str | None = None, argv: list[str] | None = None,
        check: Callable[[], None] | None = None) -> None:
    """Run `command` with fire; a plain function given without `check` has its flags checked by its signature."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    words = sys.argv[1:] if argv is None else list(argv)
    asks_help = any(word in ("--help", "-h") for word in words)
    if check is None and inspect.isfunction(command) and not asks_help:
        command, check = _checked_function(command, words)
    elif check is None and isinstance(command, dict) and words and not asks_help and \
            inspect.isfunction(command.get(words[0])):  # a command of several: the one named, checked the same way
        checked, check = _checked_function(command[words[0]], words[1:])
        command = {**command, words[0]: checked}
    try:
        if check is not None:
            check()
        # fire prints whatever the command returns; stages return None or a short summary
        fire.Fire(command, command=argv, name=name)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
