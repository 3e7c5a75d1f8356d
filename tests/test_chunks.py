"""Chunked runs: rows left to do after any earlier chunking, overlap refusal, manifests summed over sessions; the
one runner every chunked stage goes through."""

import ast
import json
import re
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clinical_distil.chunks import ChunkFile, RunManifest, check_no_overlap, chunk_ranges, uncovered
from clinical_distil.files import InputError, write_csv
from clinical_distil.eval_inference import plan_chunks
from clinical_distil.layout import eval_chunk as chunk_file
from clinical_distil.layout import create_chunk as chunk_path
from clinical_distil.create import plan_tasks, stage_a_files as chunk_files

TYPES = ["yes_no", "numeric"]


def test_uncovered_pieces():
    assert uncovered(0, 10, []) == [(0, 10)]
    assert uncovered(0, 10, [(0, 10)]) == []
    assert uncovered(0, 10, [(2, 4), (6, 7)]) == [(0, 2), (4, 6), (7, 10)]
    assert uncovered(5, 10, [(0, 6), (9, 20)]) == [(6, 9)]
    assert uncovered(0, 4, [(4, 8)]) == [(0, 4)]


@settings(max_examples=200, deadline=None)
@given(first_size=st.integers(1, 7), second_size=st.integers(1, 7), rows=st.integers(1, 30),
       done=st.lists(st.booleans(), min_size=30, max_size=30), shards=st.integers(1, 3))
def test_any_rechunking_covers_every_row_once(tmp_path_factory, first_size, second_size, rows, done, shards):
    """Chunks of one size partly written, then planned with another size (over any shards): the files
    written before and the tasks planned now hold every (row, type) exactly once."""
    folder = tmp_path_factory.mktemp("chunks")
    for position, (low, high) in enumerate(chunk_ranges(0, rows, first_size)):
        for offset, kind in enumerate(TYPES):
            if done[(position + offset) % len(done)]:
                chunk_path(folder, kind, low, high).write_text("")
    existing = chunk_files(folder)
    held = {(row, kind) for kind, files in existing.items() for item in files for row in range(item.start, item.end)}
    planned = []
    for shard in range(shards):
        chunks = [chunk for position, chunk in enumerate(chunk_ranges(0, rows, second_size))
                  if position % shards == shard]
        tasks, _ = plan_tasks(chunks, TYPES, existing, overwrite=False)
        planned += [(row, kind) for task in tasks for kind in task.question_types for row in range(task.start, task.end)]
    assert len(planned) == len(set(planned))
    assert held.isdisjoint(planned)
    assert held | set(planned) == {(row, kind) for row in range(rows) for kind in TYPES}


def test_plan_joins_neighbours_missing_the_same_types(tmp_path):
    for low, high in ((0, 2), (2, 4)):
        chunk_path(tmp_path, "yes_no", low, high).write_text("")
    chunk_path(tmp_path, "numeric", 0, 2).write_text("")
    tasks, done = plan_tasks([(0, 6)], TYPES, chunk_files(tmp_path), overwrite=False)
    assert [(task.start, task.end, task.question_types) for task in tasks] == [
        (2, 4, ["numeric"]), (4, 6, ["yes_no", "numeric"])]
    assert done == 0
    assert plan_tasks([(0, 4)], ["yes_no"], chunk_files(tmp_path), overwrite=False) == ([], 1)


def test_overwrite_refuses_a_file_reaching_over_the_chunk(tmp_path):
    chunk_path(tmp_path, "yes_no", 0, 3).write_text("")
    with pytest.raises(InputError, match=r"df_yes_no_0_3.csv reaches over rows 0-1"):
        plan_tasks([(0, 2), (2, 4)], ["yes_no"], chunk_files(tmp_path), overwrite=True)
    tasks, _ = plan_tasks([(0, 4)], ["yes_no"], chunk_files(tmp_path), overwrite=True)
    assert [(task.start, task.end) for task in tasks] == [(0, 4)]


def test_overlapping_files_are_named():
    files = [ChunkFile(chunk_path(Path("/x"), "yes_no", 0, 4), 0, 4), ChunkFile(chunk_path(Path("/x"), "yes_no", 2, 6), 2, 6)]
    with pytest.raises(InputError, match=r"df_yes_no_0_4.csv and df_yes_no_2_6.csv both hold rows 2-3"):
        check_no_overlap(files, "stage A yes_no")


def _answers(folder, name, low, high, index=0):
    write_csv(pd.DataFrame({"id": [f"r{row}" for row in range(low, high)], "output": "x"}),
              chunk_file(folder, name, low, high - low, index))


def test_eval_plan_answers_only_missing_rows_and_refuses_other_rows(tmp_path):
    _answers(tmp_path, "test", 0, 3)
    _answers(tmp_path, "test", 3, 4, 1)
    mine = list(enumerate(chunk_ranges(0, 10, 5)))
    assert plan_chunks(tmp_path, "test", mine, 0, 10, overwrite=False) == [(0, 4, 5), (1, 5, 10)]
    with pytest.raises(InputError, match=r"holds answers to rows 2-3 of test .* outside the rows asked for \(0-1\)"):
        plan_chunks(tmp_path, "test", list(enumerate(chunk_ranges(0, 2, 5))), 0, 2, overwrite=False)
    assert plan_chunks(tmp_path, "test", list(enumerate(chunk_ranges(0, 2, 5))), 0, 2, overwrite=True) == [(0, 0, 2)]
    _answers(tmp_path, "test_2", 0, 20)  # another eval file's answers are not this one's
    assert plan_chunks(tmp_path, "test", mine, 0, 10, overwrite=False) == [(0, 4, 5), (1, 5, 10)]


def test_eval_files_of_the_earlier_naming_are_refused(tmp_path):
    # before chunk files named their own rows, every chunk of a run carried the run's start and count
    write_csv(pd.DataFrame({"id": ["a", "b"], "output": "x"}), tmp_path / "test_0_4_chunk_0.csv")
    with pytest.raises(InputError, match=r"test_0_4_chunk_0.csv holds 2 rows but its name says 4 .* --overwrite"):
        plan_chunks(tmp_path, "test", list(enumerate(chunk_ranges(0, 4, 2))), 0, 4, overwrite=False)


def test_manifest_sums_sessions_and_marks_completion(tmp_path):
    path = tmp_path / "manifest.json"
    first = RunManifest(path, fresh=False)
    first.write(first.merged({"rows": [0, 8]}, {"answered": 4, "wall_seconds": 2.5, "counts": {"requests": 4}},
                             complete=False))
    recorded = json.loads(path.read_text())
    assert recorded["complete"] is False and recorded["answered"] == 4
    second = RunManifest(path, fresh=False)
    merged = second.write(second.merged({"rows": [0, 8]}, {"answered": 4, "wall_seconds": 1.5,
                                                            "counts": {"requests": 4}}, complete=True))
    assert merged["answered"] == 8 and merged["wall_seconds"] == 4 and merged["counts"] == {"requests": 8}
    assert merged["complete"] is True and [session["answered"] for session in merged["sessions"]] == [4, 4]
    fresh = RunManifest(path, fresh=True)
    assert fresh.merged({}, {"answered": 1}, complete=True)["answered"] == 1
    # the sums are the sessions': figures outside them (a manifest written by hand) are not counted
    path.write_text(json.dumps({"answered": 5, "wall_seconds": 10.0, "rows": [0, 5]}))
    other = RunManifest(path, fresh=False)
    assert other.merged({}, {"answered": 2, "wall_seconds": 1.0}, complete=True)["answered"] == 2


def test_a_start_row_past_the_table_names_the_rows_it_has(tmp_path):
    """A table of 6 rows has rows 0-5: --start_row 6 is refused as outside it, with the rows it has."""
    from clinical_distil.chunks import row_span
    from clinical_distil.runner import plan_run
    from clinical_distil.create import CreateRun
    from clinical_distil.stages import CreateSettings

    assert [row_span(count) for count in (0, 1, 6, 12000)] == [
        "it has no rows", "its one row is 0", "its 6 rows are 0-5", "its 12,000 rows are 0-11999"]
    for start_row in (6, 7, -1):
        with pytest.raises(InputError, match=re.escape(f"--start_row {start_row} is outside the notes table: its 6 "
                                                       "rows are 0-5")):
            plan_run(6, CreateRun(CreateSettings(qtypes=",".join(TYPES))), tmp_path, start_row=start_row)
    assert plan_run(6, CreateRun(CreateSettings(qtypes=",".join(TYPES))), tmp_path, start_row=5)[0] == 6


REPO = Path(__file__).resolve().parent.parent
CHUNKED_SCRIPTS = ["a-generate-synthetic-training-data/synthetic-a-create.py",
                   "a-generate-synthetic-training-data/synthetic-b2-verify.py", "eval-inference.py", "extract.py"]


def called(path: Path) -> set[str]:
    """The names a file calls (`f(...)` and `module.f(...)`)."""
    return {node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
            for node in ast.walk(ast.parse(path.read_text())) if isinstance(node, ast.Call)}


def test_one_runner_serves_create_verify_eval_inference_and_extract():
    """The resumable chunked run is written once, in runner.py: its planning, chunk file listing, manifest path,
    retries and run loop (the one place that keeps a RunManifest); stage A's settings and the answering run are
    the stages it is given, with the file names and manifests each stage has always written."""
    from clinical_distil.runner import ChunkedStage
    from clinical_distil.create import CreateRun
    from clinical_distil.eval_inference import AnswerRun
    from clinical_distil.stages import CreateSettings, EvalInferenceSettings

    defined: dict[str, list[str]] = {}
    for path in sorted((REPO / "clinical_distil").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef):
                defined.setdefault(node.name, []).append(path.name)
        if "RunManifest" in called(path):
            defined.setdefault("(keeps a RunManifest)", []).append(path.name)
    shared = ["chunk_files", "manifest_path", "plan_run", "remaining", "retry_failed", "run_chunks",
              "(keeps a RunManifest)"]
    assert {name: defined.get(name) for name in shared} == {name: ["runner.py"] for name in shared}
    assert not {"run_stage_a", "run_eval_inference"} & set(defined)
    for script in CHUNKED_SCRIPTS:
        assert {"plan_run", "run_chunks"} <= called(REPO / script), script

    hooks = set(ChunkedStage.__annotations__) | {name for name, value in vars(ChunkedStage).items()
                                                 if callable(value) and not name.startswith("_")}
    create, answer = CreateRun(CreateSettings(qtypes="yes_no")), AnswerRun(EvalInferenceSettings(), "test")
    assert [hook for hook in sorted(hooks) if not (hasattr(create, hook) and hasattr(answer, hook))] == []
    folder = Path("out")
    assert create.naming.path(folder, "yes_no", 4, 6, 2).name == "df_yes_no_4_6.csv"
    assert answer.naming.path(folder, "test", 4, 6, 2).name == "test_4_2_chunk_2.csv"
    assert [stage.naming.manifest(folder, *shards).name for stage in (create, answer) for shards in ((1, 0), (3, 1))] \
        == ["manifest.json", "manifest_shard1of3.json", "manifest_test.json", "manifest_test_shard1of3.json"]
    assert (create.naming.parse("df_na-numeric_0_12.csv"), answer.naming.parse("test_10_5_chunk_3.csv"),
            answer.naming.parse("test_2_10_5_chunk_3.csv")) == (("na-numeric", 0, 12), ("test", 10, 15), None)
