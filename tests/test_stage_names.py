"""One name per stage (layout.STAGE_FILES): its script or notebooks, settings class, library module, driver section,
run state and docs all say it, and one runner serves every stage that answers prompts in chunks."""

import ast
import importlib
import re

import pytest

from clinical_distil import layout, pipeline, runner, stages, tasks
from clinical_distil.run_settings import RunSettings, layout_for
from clinical_distil.settings import Settings

REPO = layout.REPO_ROOT
# the stages whose prompts the one runner answers in resumable chunks
CHUNKED = ("create", "verify", "eval_inference", "extract")


def camel(name: str) -> str:
    return "".join(part.title() for part in name.split("_"))


def stage_files(name: str) -> list:
    pattern = layout.STAGE_FILES[name]
    if "{folder}" not in pattern:
        return [REPO / pattern]
    return [REPO / pattern.format(folder=task.folder, prefix=task.prefix) for task in tasks.TASKS.values()]


def settings_class_used(path) -> str:
    """The settings class a script runs with (run_stage(X, main)) or a notebook checks its parameters against."""
    text = path.read_text()
    used = re.findall(r"run_stage\((\w+Settings), main\)", text) or re.findall(r"(\w+Settings), globals\(\)", text)
    assert len(set(used)) == 1, (path, used)
    return used[0]


def test_names_are_read_as_written():
    assert [camel(name) for name in ("post_process", "eval_inference", "select")] == [
        "PostProcess", "EvalInference", "Select"]
    assert len(layout.STAGE_FILES) == 11 and set(CHUNKED) <= set(layout.STAGE_FILES)


@pytest.mark.parametrize("name", list(layout.STAGE_FILES))
def test_a_stage_is_called_the_same_everywhere(name):
    declared = getattr(stages, f"{camel(name)}Settings")
    assert issubclass(declared, Settings)
    module = importlib.import_module(f"clinical_distil.{name}")
    assert module.__doc__.startswith(f"`{name}`"), module.__doc__.splitlines()[0]
    for path in stage_files(name):
        assert path.exists(), path
        assert name.replace("_", "-") in path.name.replace("_", "-"), path.name
        used = getattr(stages, settings_class_used(path))
        # an evaluation task's notebook may check a subclass (the labelled splits, the n2c2 scorer)
        assert issubclass(used, declared) and used.__name__.endswith(declared.__name__), (path, used)
        assert "clinical_distil import" in path.read_text() and re.search(rf"\b{name}\b", path.read_text()), path


def test_the_driver_names_its_stages_and_sections_from_the_registry(tmp_path):
    assert layout.RUN_STAGES == (*[name for name in layout.STAGE_FILES if name != "extract"], "report")
    run_layout = layout_for(RunSettings.from_values({
        "notes": str(REPO / "data" / "samples" / "mimic-iii" / "NOTEEVENTS.csv.gz"), "data_dir": str(tmp_path),
        "student": "models/SmolLM2-135M-Instruct", "teacher": "models/SmolLM2-135M-Instruct"}))
    assert [stage.name for stage in pipeline.plan(run_layout)] == list(layout.RUN_STAGES)
    sections = set(RunSettings.names())
    # every stage whose own flags the driver takes has a section of its name; preprocess's are per task (`eval`)
    assert set(stages.STAGE_SETTINGS) | {"evaluate"} == set(layout.STAGE_FILES) - {"preprocess", "extract"}
    assert set(stages.STAGE_SETTINGS) | {"evaluate"} <= sections
    for name, declared in stages.STAGE_SETTINGS.items():
        assert declared is getattr(stages, f"{camel(name)}Settings")
    stage_settings = {key.split(":")[0] for key in run_layout.settings} - {"run"}
    assert stage_settings == set(layout.RUN_STAGES) - {"report"}


def test_the_docs_table_lists_each_stage_by_its_name():
    table = (REPO / "docs" / "stages.md").read_text().split("| stage | command |")[1].split("\n\n")[0]
    named = [re.search(r"`(\w+)`", row).group(1) for row in table.splitlines()[2:]]
    assert named == list(layout.STAGE_FILES)


def test_one_runner_serves_every_chunked_stage():
    """create, verify, eval_inference and extract hand runner.run_chunks their prompts and rows; none writes its own
    chunk files, manifest or plan."""
    sources = {name: (REPO / "clinical_distil" / f"{name}.py").read_text() for name in CHUNKED}
    scripts = {name: stage_files(name)[0].read_text() for name in CHUNKED}
    for name in CHUNKED:
        assert "run_chunks(" in scripts[name], name
        defined = {node.name for node in ast.walk(ast.parse(sources[name]))
                   if isinstance(node, (ast.FunctionDef, ast.ClassDef))}
        assert not defined & {"chunk_files", "manifest_path", "plan_run", "run_chunks", "write_manifest"}, name
    assert {"chunk_files", "manifest_path", "plan_run", "run_chunks"} <= set(dir(runner))
