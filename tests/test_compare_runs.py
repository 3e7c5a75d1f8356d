"""bench/compare_runs.py: two runs' files compared field by field, less what times or places a run."""

import json
import subprocess
import sys

from conftest import REPO

SCRIPT = REPO / "bench" / "compare_runs.py"


def write_run(root, seconds, loss=0.5, answer="Yes", rename=False):
    (root / "data" / "raw").mkdir(parents=True)
    (root / "reports" / "demo").mkdir(parents=True)
    manifest = {"rows": [0, 4], "wall_seconds": seconds, "started": f"2026-12-0{int(seconds) % 9 + 1} 10:00:00",
                "notes_file": str(root / "data" / "notes.csv"), "counts": {"requests": 8, "seconds": seconds}}
    (root / "data" / "raw" / "manifest.json").write_text(json.dumps(manifest))
    name = "prepared.csv" if rename else "training.csv"
    (root / "data" / "raw" / name).write_text(f"id,answer\n1,{answer}\n")
    (root / "data" / "raw" / "weights.bin").write_bytes(bytes([1, 2, 3]) + str(loss).encode())
    (root / "reports" / "demo" / "report.md").write_text(
        f"Written 2026-12-05 1{int(seconds) % 9}:00 from ROOT {root}\n\n## Training\n\n| loss | {loss} |\n"
        f"| tokens/s | {seconds * 7} |\n\n## Wall time per stage\n\n| create | {seconds} |\n")
    (root / "reports" / "demo" / "notebooks").mkdir()
    (root / "reports" / "demo" / "notebooks" / "b.ipynb").write_text(str(seconds))


def compare(before, after, *extra):
    return subprocess.run([sys.executable, str(SCRIPT), str(before), str(after), *extra], capture_output=True,
                          text=True)


def test_runs_that_differ_only_in_time_date_and_place_agree(tmp_path):
    write_run(tmp_path / "a", seconds=12.5)
    write_run(tmp_path / "b", seconds=99.0)
    result = compare(tmp_path / "a", tmp_path / "b")
    assert result.returncode == 0, result.stdout
    assert result.stdout.strip().splitlines() == ["4 files compared, 0 differences"]


def test_a_changed_value_a_changed_model_and_a_missing_file_are_each_named(tmp_path):
    write_run(tmp_path / "a", seconds=12.5)
    write_run(tmp_path / "b", seconds=12.5, loss=0.25, answer="No", rename=True)
    result = compare(tmp_path / "a", tmp_path / "b")
    assert result.returncode == 1
    assert result.stdout.strip().splitlines() == [
        f"only in {tmp_path / 'a'}: data/raw/training.csv", f"only in {tmp_path / 'b'}: data/raw/prepared.csv",
        "differs: data/raw/weights.bin", "differs: reports/demo/report.md", "4 files compared, 4 differences"]
    # a name changed on purpose is followed, and the values it holds still compared
    renamed = compare(tmp_path / "a", tmp_path / "b", "--rename", "training.csv=prepared.csv")
    assert "differs: data/raw/prepared.csv" in renamed.stdout.splitlines()


def test_bad_arguments_are_one_line(tmp_path):
    result = compare(tmp_path / "nowhere", tmp_path)
    assert result.returncode == 2 and result.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'nowhere'} is not a folder; give the roots of two runs"]


def test_timed_columns_sets_and_renamed_stages_are_not_differences(tmp_path):
    """A report table's s/example column, PEFT's target modules in another order, the trainer's tags in another
    order and a stage renamed in run.json (not in a tokenizer's vocabulary) agree; a changed score does not."""
    for root, seconds, modules, stage, score in ((tmp_path / "a", 3.5, ["q_proj", "v_proj"], "generate", "0.5"),
                                                 (tmp_path / "b", 9.0, ["v_proj", "q_proj"], "create", "0.5"),
                                                 (tmp_path / "c", 9.0, ["v_proj", "q_proj"], "create", "0.6")):
        (root / "reports" / "demo").mkdir(parents=True)
        (root / "results" / "run").mkdir(parents=True)
        (root / "reports" / "demo" / "report.md").write_text(
            f"## Evaluation\n\n| model | score | s/example |\n|---|---|---|\n| base | {score} | {seconds} |\n")
        (root / "reports" / "demo" / "run.json").write_text(json.dumps({"stages": {stage: {"status": "ran"}}}))
        (root / "results" / "run" / "adapter_config.json").write_text(json.dumps({"target_modules": modules}))
        (root / "results" / "run" / "tokenizer.json").write_text(json.dumps({"vocab": {"generate": 1}}))
        tags = ["sft", "trl"] if stage == "generate" else ["trl", "sft"]
        (root / "results" / "run" / "README.md").write_text("---\n" + "".join(f"- {tag}\n" for tag in tags) + "---\n")
    rename = ["--rename", '"generate"="create"']
    assert compare(tmp_path / "a", tmp_path / "b", *rename).stdout.splitlines() == ["5 files compared, 0 differences"]
    assert compare(tmp_path / "a", tmp_path / "c", *rename).stdout.splitlines() == [
        "differs: reports/demo/report.md", "5 files compared, 1 differences"]
    assert "differs: reports/demo/run.json" in compare(tmp_path / "a", tmp_path / "b").stdout.splitlines()
