"""Running a script the way every script in the project does: fire over the script's declared settings.

The command line is checked against the declaration before anything else runs: an unknown or
misspelt flag, or a word that belongs to no flag, stops with one line naming the nearest valid
flag; then fire parses the values and every one is checked for type and range. Errors a
researcher can fix (`InputError`) become one line on stderr and exit code 2 (control characters a
message quotes from a file escaped); anything else is a bug and keeps its traceback. `--help` (or
`-h`) prints the script's own help: usage, description and each flag with its value, help and
default, from the same declaration (fire's help pages would add boilerplate and list short flags
the check refuses).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import logging
import sys
import textwrap
import typing
from pathlib import Path
from typing import Any, Callable

import fire

from clinical_distil.files import InputError
from clinical_distil.settings import Settings, nearest, value_word

HELP_WIDTH = 100
HELP_WORDS = ("--help", "-h")


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


def _flag_lines(flag: str, text: str) -> list[str]:
    """One flag of a help page: the flag and its value on a line, its help wrapped and indented below."""
    wrapped = textwrap.wrap(" ".join(text.split()), HELP_WIDTH - 6, break_on_hyphens=False) if text.strip() else []
    return [f"  {flag}"] + [f"      {line}" for line in wrapped]


def _page(usage: str, description: str, sections: list[tuple[str, list[str]]]) -> str:
    lines = [f"usage: {usage}"]
    text = inspect.cleandoc(description or "")
    if text:
        lines += ["", text]
    for title, entries in sections:
        if entries:
            lines += ["", f"{title}:", *entries]
    return "\n".join(lines) + "\n"


def settings_help(settings_class: type[Settings], name: str, description: str = "") -> str:
    """A script's help page from its declaration: each flag with the value it takes, its help and default."""
    hints = typing.get_type_hints(settings_class)
    entries = []
    for item in settings_class.declared():
        default = item.default if item.default is not dataclasses.MISSING else item.default_factory()
        word = value_word(hints[item.name], dict(item.metadata))
        entries += _flag_lines(f"--{item.name} {word}", f"{item.metadata['help']} (default {default!r})")
    # the script's own docstring (what it reads and writes, examples), else the declaration's one line
    return _page(f"{name} [--FLAG VALUE ...]", description or settings_class.__doc__ or "", [("flags", entries)])


def _docstring_parts(function: Callable[..., Any]) -> tuple[str, dict[str, str]]:
    """A function's docstring as (description, {argument: help}) from a Google-style `Args:` section."""
    text = inspect.cleandoc(function.__doc__ or "")
    description, _, args = text.partition("\nArgs:\n")
    helps: dict[str, str] = {}
    current = None
    for line in args.splitlines():
        stripped = line.strip()
        name, colon, rest = stripped.partition(":")
        if colon and name.isidentifier() and line.startswith(("    ", "  ")) and not line.startswith("      "):
            current = name
            helps[name] = rest.strip()
        elif current and stripped:
            helps[current] += " " + stripped
    return description.strip(), helps


def function_help(function: Callable[..., Any], name: str) -> str:
    """A plain function's help page: its docstring, and each parameter as a flag with its annotation's value,
    its help from the docstring's Args section and its default."""
    description, helps = _docstring_parts(function)
    try:
        hints = typing.get_type_hints(function)
    except Exception:  # noqa: BLE001 (an annotation that does not resolve: the value is then named VALUE)
        hints = {}
    entries = []
    for parameter in inspect.signature(function).parameters.values():
        if parameter.kind in (parameter.VAR_POSITIONAL, parameter.VAR_KEYWORD):
            continue
        word = value_word(hints.get(parameter.name, parameter.annotation), {})
        text = helps.get(parameter.name, "")
        if parameter.default is not parameter.empty and "(default " not in text:
            text = f"{text} (default {parameter.default!r})".strip()
        elif parameter.default is parameter.empty:
            text = f"{text} (required)".strip()
        entries += _flag_lines(f"--{parameter.name} {word}", text)
    return _page(f"{name} [--FLAG VALUE ...]", description, [("flags", entries)])


def commands_help(commands: dict, name: str) -> str:
    """The help page of a script of several commands: each command with the first line of its docstring."""
    entries = []
    for command, function in commands.items():
        first = inspect.cleandoc(getattr(function, "__doc__", None) or "").split("\n\n")[0]
        entries += _flag_lines(command, first)
    return _page(f"{name} COMMAND [--FLAG VALUE ...]   ({name} COMMAND --help: that command's flags)", "",
                 [("commands", entries)])


def help_page(command: Callable[..., Any] | dict, name: str, words: list[str]) -> str:
    """The help page `words` ask for: the command's, or with several commands the one named first (else the list)."""
    if isinstance(command, dict):
        chosen = command.get(words[0]) if words else None
        if callable(chosen):
            return function_help(chosen, f"{name} {words[0]}")
        return commands_help(command, name)
    return function_help(command, name)


def one_line(message: str) -> str:
    """A message as one line of plain text: line breaks and other control characters escaped (a message may
    quote a file's bytes, e.g. the header of a binary file read as CSV)."""
    return "".join(character if character.isprintable() else character.encode("unicode_escape").decode("ascii")
                   for character in message)


def run_stage(settings_class: type[Settings], main: Callable[[Any], Any], argv: list[str] | None = None) -> None:
    """Check the command line, build `settings_class` from it and call `main(settings)`."""
    argv = sys.argv[1:] if argv is None else list(argv)
    name = Path(sys.argv[0]).name

    def command(**values: Any) -> Any:
        return main(settings_class.from_values(values))

    command.__signature__ = settings_class.signature()  # type: ignore[attr-defined]
    command.__doc__ = f"{(settings_class.__doc__ or '').strip()}\n\nArgs:\n{settings_class.help_lines()}\n"
    command.__name__ = name
    if any(word in HELP_WORDS for word in argv):
        module = sys.modules.get(getattr(main, "__module__", ""), None)
        print(settings_help(settings_class, name, getattr(module, "__doc__", None) or ""), end="")
        return
    run(command, name=name, argv=argv, check=lambda: check_command_line(settings_class, argv))


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
    if any(word in HELP_WORDS for word in words):
        print(help_page(command, name or Path(sys.argv[0]).name, words), end="")
        return
    if check is None and inspect.isfunction(command):
        command, check = _checked_function(command, words)
    elif check is None and isinstance(command, dict) and words and inspect.isfunction(command.get(words[0])):
        # a command of several: the one named, checked the same way
        checked, check = _checked_function(command[words[0]], words[1:])
        command = {**command, words[0]: checked}
    try:
        if check is not None:
            check()
        # fire prints whatever the command returns; stages return None or a short summary
        fire.Fire(command, command=argv, name=name)
    except InputError as error:
        print(f"error: {one_line(str(error))}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
