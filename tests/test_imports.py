"""The library's import structure, read from the source (ast): no cycle, no import from a higher layer, and the
method never imports the simulator.

The layers are declared once, in docs/development.md ("Layers"): a module may import modules of lower layers
and of its own layer, never of a higher one; every module of clinical_distil/ is in exactly one layer.
"""

import ast
import re
from pathlib import Path

from clinical_distil import layout


REPO = Path(__file__).resolve().parents[1]
LIBRARY = REPO / "clinical_distil"


def imported_modules(path: Path, package: str) -> set[str]:
    """The top-level names `package.X` a file imports, anywhere in it (inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == package:
                found.update(alias.name for alias in node.names)
            elif node.module.startswith(package + "."):
                found.add(node.module.split(".")[1])
        elif isinstance(node, ast.Import):
            found.update(alias.name.split(".")[1] for alias in node.names
                         if alias.name.startswith(package + "."))
    return found


def library_graph() -> dict[str, set[str]]:
    """Each module of clinical_distil/ (the package's empty __init__ aside) and the library modules it imports."""
    paths = [path for path in LIBRARY.glob("*.py") if path.stem != "__init__"]
    modules = {path.stem for path in paths}
    return {path.stem: imported_modules(path, "clinical_distil") & modules - {path.stem} for path in paths}


def declared_layers() -> list[list[str]]:
    """The layers of docs/development.md, lowest first: lines `N. name: module, module, ...` under "## Layers"."""
    text = (REPO / "docs" / "development.md").read_text()
    section = text.split("## Layers", 1)[1].split("\n## ", 1)[0]
    return [[name.strip() for name in match.group(1).split(",")]
            for match in re.finditer(r"^\d+\. [^:\n]+: `?([\w, ]+)`?$", section, flags=re.MULTILINE)]


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (Tarjan), and modules importing themselves."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_the_library_has_no_import_cycle():
    assert cycles(library_graph()) == []


def imports_simulation(source: str) -> bool:
    """Whether a module's source imports the simulator (simulation or simulation.X), anywhere in it."""
    for node in ast.walk(ast.parse(source)):
        names = [alias.name for alias in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        if any(name == "simulation" or name.startswith("simulation.") for name in names):
            return True
    return False


def upward_imports(graph: dict[str, set[str]], layers: list[list[str]]) -> list[str]:
    layer_of = {name: position for position, layer in enumerate(layers) for name in layer}
    return sorted(f"{module} (layer {layer_of[module] + 1}) imports {target} (layer {layer_of[target] + 1})"
                  for module, targets in graph.items() for target in targets if layer_of[target] > layer_of[module])


def test_the_checks_catch_what_they_look_for():
    assert imports_simulation("def f():\n    from simulation.truth import expected_answer\n")
    assert imports_simulation("import simulation")
    assert not imports_simulation("from clinical_distil import simulation_notes\nimport simulations")
    assert upward_imports({"low": set(), "high": {"low"}}, [["low"], ["high"]]) == []
    assert upward_imports({"low": {"high"}, "high": set()}, [["low"], ["high"]]) == [
        "low (layer 1) imports high (layer 2)"]


def test_the_method_never_imports_the_simulator():
    """The reference teacher and the check against the truth plug in from simulation/; the library knows neither."""
    assert sorted(path.name for path in LIBRARY.glob("*.py") if imports_simulation(path.read_text())) == []
    # nor do the stage scripts and notebooks, nor the driver: the reference teacher is an installed engine
    repo = LIBRARY.parent
    scripts = [repo / "run-pipeline.py"] + [path for pattern in layout.STAGE_FILES.values() if "{" not in pattern
                                            for path in [repo / pattern]]
    assert len(scripts) == 10 and [path.name for path in scripts if "simulation" in path.read_text()] == []


def test_every_module_is_in_one_declared_layer():
    layers = declared_layers()
    declared = [name for layer in layers for name in layer]
    assert len(declared) == len(set(declared)), "a module is declared in two layers"
    assert sorted(declared) == sorted(library_graph()), "docs/development.md's layers and clinical_distil/ differ"


def test_no_module_imports_from_a_higher_layer():
    assert upward_imports(library_graph(), declared_layers()) == []
