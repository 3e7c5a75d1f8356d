"""One job per module: no module of the library or the simulator over 450 lines, and no function in one over 80
(read with ast)."""

import ast
from pathlib import Path

import pytest

LIBRARY = Path(__file__).resolve().parents[1] / "clinical_distil"
MODULE_LINES, FUNCTION_LINES = 450, 80
# modules allowed over the limits, each with its reason (none)
PENDING: set[str] = set()


def long_functions(source: str) -> dict[str, int]:
    """Each function (methods and nested ones too) over FUNCTION_LINES lines, decorators included: its length."""
    found = {}
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            first = node.decorator_list[0].lineno if node.decorator_list else node.lineno
            if node.end_lineno - first + 1 > FUNCTION_LINES:
                found[node.name] = node.end_lineno - first + 1
    return found


def test_long_functions_are_found():
    body = "\n".join(f"    x = {number}" for number in range(FUNCTION_LINES))
    assert long_functions(f"def short():\n    pass\n\n\n@staticmethod\ndef long():\n{body}\n") == {
        "long": FUNCTION_LINES + 2}


@pytest.mark.parametrize("path", sorted(path for folder in (LIBRARY, LIBRARY.parent / "simulation")
                                        for path in folder.glob("*.py") if path.name not in PENDING),
                         ids=lambda path: f"{path.parent.name}/{path.name}")
def test_no_module_over_450_lines_and_no_function_over_80(path):
    source = path.read_text()
    assert len(source.splitlines()) <= MODULE_LINES
    assert long_functions(source) == {}
