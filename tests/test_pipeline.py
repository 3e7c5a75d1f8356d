"""The end-to-end driver (run-pipeline.py): settings, resume logic, commands, and one whole run with its report."""

import base64
import json
import os
import re
import struct
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from conftest import REPO, SAMPLES, holds_lock, processes_mentioning, run_script, start_script, wait_for

from clinical_distil import driver, layout, pipeline
from clinical_distil.files import InputError, write_csv
from clinical_distil.pipeline import Command, Step
from clinical_distil.prompts import note_of
from clinical_distil.tables import fmt, markdown_table
from clinical_distil.run_settings import RunSettings, layout_for
from clinical_distil.tasks import get_task

MIMIC_III = SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz"


# --- settings ------------------------------------------------------------------------------------

def test_config_file_then_flags(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_text("teacher: models/a\nstudent: models/b\nselect: {num_notes: 7}\n"
                      "create:\n  structured_output: true\n  max_tokens: 512\n")
    settings = RunSettings.from_sources(str(config), student="models/c", create={"max_tokens": 64}, select=None)
    assert (settings.teacher, settings.student, settings.select) == ("models/a", "models/c", {"num_notes": 7})
    # a stage's mapping from the flags is merged key by key over the file's
    assert settings.create == {"structured_output": True, "max_tokens": 64}
    layout = layout_for(RunSettings.from_sources(str(config), data_dir=str(tmp_path), notes=str(MIMIC_III)))
    create = layout.settings["create"]
    assert create.questions_per_type == 5 and create.temperature == 0.7 and create.max_tokens == 512  # the paper's
    assert create.model_id == "models/a" and layout.settings["finetune"].model_id == "models/b"


@pytest.mark.parametrize("text, message", [
    ("teachr: x\n", "unknown flag --teachr in config"),
    ("teacher: [unclosed\n", "is not valid YAML"),
    ("- a\n- b\n", "must hold a mapping"),
    ("tasks: i2b2,mimic\n", "unknown evaluation task 'mimic'"),
    ("input_file: numeric\n", "--input_file must be one of all, bool, bool_num, got 'numeric'"),
    ("min_difficulty: 10\n", "--min_difficulty must be at most 9, got 10"),
    ("create: {max_tokenz: 5}\n", "unknown flag --max_tokenz in create; did you mean --max_tokens?"),
    ("create: {max_tokens: 0}\n", "--max_tokens must be at least 1, got 0"),
    ("create: {model_id: x}\n", "create.model_id is set by the run"),
    ("eval: {i2b2: {num_inference: -3}}\n", "--num_inference must be at least 1, got -3"),
    ("eval: {i2b2: {rows: 3}}\n", "eval: i2b2 takes a mapping of input_dir, input_file, num_inference"),
    ("eval: {i2b2: {input_file: dev}}\n", "eval: i2b2: input_file must be one of test, train, got 'dev'"),
    ("evaluate: {hba1c_hi: 9}\n", "evaluate has unknown parameter hba1c_hi"),
    ("generation_max_tokens: 512\n", "unknown flag --generation_max_tokens in config"),
    ("n2c2_rows: 13\n", "unknown flag --n2c2_rows in config"),
    # a key given twice (YAML keeps the last silently): refused with its line, at any depth
    ("run: a\nteacher: x\nrun: b\n", "sets 'run' twice (line 3); keep one"),
    ("eval:\n  i2b2: {input_dir: a, input_dir: b}\n", "sets 'input_dir' twice (line 2); keep one"),
    ("create:\n  max_tokens: 5\n  max_tokens: 6\n", "sets 'max_tokens' twice (line 3); keep one"),
])
def test_bad_settings_name_the_problem(tmp_path, text, message):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    with pytest.raises(InputError, match=re.escape(message)):
        layout_for(RunSettings.from_sources(str(config), notes=str(MIMIC_III), data_dir=str(tmp_path)))


def test_a_binary_config_file_is_refused(tmp_path):
    config = tmp_path / "run.yaml"
    config.write_bytes(bytes(range(256)) * 4)
    result = run_script("run-pipeline.py", "--config", str(config), "--dry_run")
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: config file {config} is not a text file; give a YAML file "
                                                  "of settings, e.g. 'teacher: MODEL'"]


def preflight(tmp_path, **run):
    """check_inputs on a run of raw notes (stage 0 first) with the tiny model as teacher and student."""
    samples = {"annotated-synthetic": {"input_dir": str(SAMPLES / "annotated-synthetic")},
               "i2b2": {"input_dir": str(SAMPLES / "n2c2-2018-track1")}, "apixaban": {"input_dir": str(SAMPLES / "apixaban")}}
    tiny = str(REPO / "models" / "tiny-random-llama")
    values = {"notes": str(MIMIC_III), "select": {"num_notes": 4}, "data_dir": str(tmp_path / "data"), "run": "r",
              "reports_dir": str(tmp_path / "reports"), "teacher": tiny, "student": tiny, **run,
              "eval": {**samples, **run.get("eval", {})}}
    run_layout = layout_for(RunSettings.from_values(values))
    driver.check_inputs(run_layout, pipeline.plan(run_layout), list(layout.RUN_STAGES))


@pytest.mark.parametrize("run, message", [
    ({"student": "/nowhere/student"}, "student /nowhere/student is not a model folder (no config.json in "
                                      "/nowhere/student)"),
    ({"teacher": "models"}, "teacher models is not a model folder"),
    ({"teacher": "nobody-here/no-such-model"}, "teacher nobody-here/no-such-model is neither a local folder"),
    ({"verify": {"model_id": "/nowhere/verifier"}, "prep_training": {"require_verified": True}},
     "verifier /nowhere/verifier is not a model folder"),
    ({"eval": {"apixaban": {"input_dir": "/nowhere/apixaban"}}}, "evaluation data of apixaban not found: "
                                                                 "/nowhere/apixaban is not a folder"),
    ({"eval": {"i2b2": {"input_dir": str(SAMPLES / "apixaban")}}}, "evaluation data of i2b2 not found: "
                                                                    f"{SAMPLES / 'apixaban' / 'test'} is not a folder"),
    ({"prompt_dir": "/nowhere/prompts"}, "--prompt_dir /nowhere/prompts is not a folder"),
])
def test_models_and_folders_are_checked_before_stage_0(tmp_path, monkeypatch, run, message):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(InputError, match=re.escape(message)):
        preflight(tmp_path, **run)


def test_the_reference_teacher_and_cached_inputs_pass_the_check(tmp_path):
    preflight(tmp_path, teacher="reference")
    preflight(tmp_path, prompt_dir=str(REPO / "clinical_distil" / "prompt_templates"))


def test_a_missing_student_stops_the_driver_before_any_stage(tmp_path):
    """Found before stage 0 (and stage A's hours), in one line, with nothing written."""
    result = run_script("run-pipeline.py", "--notes", str(MIMIC_III), "--select", "{num_notes: 4}", "--run", "r",
                        "--data_dir", str(tmp_path / "data"), "--reports_dir", str(tmp_path / "reports"),
                        "--teacher", "reference", "--student", str(tmp_path / "no-student"))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: student {tmp_path / 'no-student'} is not a model folder (no config.json in "
        f"{tmp_path / 'no-student'}); give a folder holding a model or a hub id"]
    assert not (tmp_path / "data").exists() and not (tmp_path / "reports").exists()


def test_tasks_given_as_a_tuple_by_fire(tmp_path):
    """fire reads --tasks i2b2,apixaban as a tuple: the driver must still plan exactly those two tasks."""
    result = run_script("run-pipeline.py", "--config", str(REPO / "configs" / "demo.yaml"), "--dry_run",
                        "--tasks", "i2b2,apixaban", "--data_dir", str(tmp_path / "data"),
                        "--reports_dir", str(tmp_path / "reports"))
    assert result.returncode == 0, result.stderr[-2000:]
    answered = re.findall(r"eval-inference\.py .*?--dataset_name (\S+)", result.stdout)
    assert answered == ["i2b2,apixaban"]  # both models answer both tasks with one load


def test_raw_notes_are_selected_first(tmp_path):
    settings = RunSettings.from_values(dict(notes=str(MIMIC_III), select={"num_notes": 12}, data_dir=str(tmp_path)))
    layout = layout_for(settings)
    assert layout.select_from == MIMIC_III
    assert layout.notes_file == tmp_path / "mimic" / "notes_12.csv.gz"
    assert layout.dataset == "12"
    assert layout.run == "Meta-Llama-3.1-8B-Instruct_12"


def test_selected_notes_are_used_as_given(tmp_path):
    selected = tmp_path / "elsewhere" / "notes_300.csv.gz"
    write_csv(pd.DataFrame({"subject_id": [1], "hadm_id": [2], "note_id": [3], "text": ["note"]}), selected)
    layout = layout_for(RunSettings.from_values(dict(notes=str(selected), data_dir=str(tmp_path), run="r")))
    assert (layout.select_from, layout.notes_file, layout.dataset) == (None, selected, "300")
    stages = pipeline.plan(layout)
    assert stages[0].name == "select" and stages[0].steps == []
    assert "--notes_file" in stages[1].steps[0].command.argv


def test_notes_errors(tmp_path):
    with pytest.raises(InputError, match="notes file not found"):
        layout_for(RunSettings.from_values(dict(notes=str(tmp_path / "missing.csv"))))
    wrong = tmp_path / "wrong.csv"
    wrong.write_text("a,b\n1,2\n")
    with pytest.raises(InputError, match="not a MIMIC-III NOTEEVENTS"):
        layout_for(RunSettings.from_values(dict(notes=str(wrong))))


def test_due_steps_of_one_group_run_as_few_commands_as_together_writes():
    def join_all(due, again):
        return [(list(range(len(due))), pipeline.Command(["+".join(due)] + (["-o"] if again else [])))]

    def step(label, group=None, stale=False, together=join_all):
        command, redo = pipeline.Command([label]), pipeline.Command([label, "--overwrite"])
        made = pipeline.Step(label, command, outputs=[], stale_command=redo, group=group, settings=label,
                             together=together)
        return made, (redo if stale else command)

    steps = [step("a1", "a"), step("x"), step("a2", "a"), step("b1", "b", together=None), step("b2", "b"),
             step("a3", "a", stale=True), step("a4", "a", stale=True)]
    commands = {made.label: command for made, command in steps}
    ran = [([member.label for member in members], command.argv)
           for members, command in pipeline.batches([made for made, _ in steps], commands, overwrite=False)]
    assert ran == [(["a1", "a2"], ["a1+a2"]), (["x"], ["x"]), (["b1"], ["b1"]), (["b2"], ["b2"]),
                   (["a3", "a4"], ["a3+a4", "-o"])]  # stale steps are redone together, apart from the rest
    # what `together` leaves out runs on its own, with its own command
    partly = [step(label, "c", together=lambda due, again: [([2, 0], pipeline.Command(["c3+c1"]))])[0]
              for label in ("c1", "c2", "c3")]
    assert [([m.label for m in members], command.argv) for members, command in pipeline.batches(
        partly, {made.label: made.command for made in partly}, False)] == [
        (["c3", "c1"], ["c3+c1"]), (["c2"], ["c2"])]
    nothing = [step(label, "d", together=lambda due, again: [])[0] for label in ("d1", "d2")]
    assert [[m.label for m in members] for members, _ in pipeline.batches(
        nothing, {made.label: made.command for made in nothing}, False)] == [["d1"], ["d2"]]


def _answers(tmp_path, task, name="base", **extra):
    from clinical_distil.stages import EvalInferenceSettings

    values = {"model_id": "m", "dataset_name": task, "input_file": "test", "data_dir": str(tmp_path),
              "model_name": name, "output_dir": str(tmp_path / "outputs" / task / name), **extra}
    return EvalInferenceSettings.from_values(values)


def test_answers_of_one_model_combine_only_when_they_differ_in_their_dataset(tmp_path):
    [(positions, combined)] = pipeline._answers_together(
        tmp_path, [_answers(tmp_path, "i2b2", num_inference=13), _answers(tmp_path, "apixaban")], True)
    argv = combined.argv
    assert positions == [0, 1]
    assert argv[argv.index("--dataset_name") + 1] == "i2b2,apixaban" and "--output_dir" not in argv
    assert argv[argv.index("--input_file") + 1] == "test,test" and argv[argv.index("--num_inference") + 1] == "13,all"
    assert argv[-1] == "--overwrite" and "--base_model_name" not in argv
    assert pipeline._answers_together(tmp_path, [_answers(tmp_path, "i2b2"),
                                                 _answers(tmp_path, "apixaban", max_output_tokens=9)], False) \
        == []  # other settings: two commands
    assert pipeline._answers_together(tmp_path, [_answers(tmp_path, "i2b2"),
                                                 _answers(tmp_path, "apixaban", output_dir=str(tmp_path / "x"))],
                                      False) == []  # a folder of its own


def test_an_adapter_and_its_base_answer_in_one_command_when_they_answer_alike(tmp_path):
    adapter = tmp_path / "final"

    def pair(base_extra=None, tasks=("i2b2", "apixaban"), adapter_tasks=None):
        due = [_answers(tmp_path, task, "run-base", **(base_extra or {})) for task in tasks]
        due += [_answers(tmp_path, task, "run-distilled", adapter=str(adapter)) for task in adapter_tasks or tasks]
        return [(positions, command.argv) for positions, command in pipeline._answers_together(tmp_path, due, False)]

    [(positions, argv)] = pair()
    assert positions == [2, 3, 0, 1]
    assert argv[argv.index("--adapter") + 1] == str(adapter) and argv[argv.index("--model_id") + 1] == "m"
    assert argv[argv.index("--model_name") + 1] == "run-distilled"
    assert argv[argv.index("--base_model_name") + 1] == "run-base"
    assert argv[argv.index("--dataset_name") + 1] == "i2b2,apixaban"
    # other answering settings, or other tasks due: each model's tasks in a command of its own
    for apart in (pair(base_extra={"max_output_tokens": 9}), pair(adapter_tasks=("i2b2",))):
        assert all("--base_model_name" not in argv for _, argv in apart)
    assert [positions for positions, _ in pair(adapter_tasks=("i2b2",))] == [[0, 1]]  # the lone step runs alone
    assert [positions for positions, _ in pair(base_extra={"max_output_tokens": 9})] == [[0, 1], [2, 3]]


def test_stage_range():
    assert pipeline.stage_range(None, None) == list(layout.RUN_STAGES)
    assert pipeline.stage_range("finetune", "convert_peft") == ["finetune", "convert_peft"]
    with pytest.raises(InputError, match="unknown stage 'train'"):
        pipeline.stage_range("train", None)
    with pytest.raises(InputError, match="comes after"):
        pipeline.stage_range("evaluate", "finetune")


# --- what counts as finished ---------------------------------------------------------------------

def _touch(path: Path, seconds_ago: float) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("x")
    moment = time.time() - seconds_ago
    os.utime(path, (moment, moment))
    return path


def test_step_finished_when_outputs_are_newer_than_inputs(tmp_path):
    source, result = tmp_path / "in.csv", tmp_path / "out.csv"
    step = Step("s", Command(["true"]), outputs=[result], inputs=[source])
    assert not step.finished()  # no output yet
    _touch(source, 100)
    _touch(result, 50)
    assert step.finished()
    _touch(source, 10)  # the input changed after the output was made
    assert not step.finished()
    assert not Step("report", None, outputs=[result]).finished()  # the driver's own work always reruns


def test_manifest_must_cover_the_rows_asked_for(tmp_path):
    manifest, notes = tmp_path / "manifest.json", tmp_path / "notes_24.csv.gz"

    def state(input_file, limit, **options):
        return pipeline._manifest_covers(manifest, "notes_in_file", limit, input_file=input_file, **options)()

    manifest.write_text(json.dumps({"rows": [0, 4], "notes_in_file": 24, "notes_file": str(notes)}))
    assert state(notes, 4) == "finished"
    assert state(notes, 8) == "incomplete" and state(notes, None) == "incomplete"  # a rerun continues
    assert state(tmp_path / "other.csv", 4) == "stale"  # made from other notes: redone
    manifest.write_text(json.dumps({"rows": [0, 24], "notes_in_file": 24, "notes_file": str(notes)}))
    assert state(notes, None) == "finished" and state(notes, 100) == "finished"  # all there are
    assert state(notes, 4) == "finished"  # the teacher read more notes than asked now: nothing to redo
    # evaluation answers are scored as they lie: more rows than asked would be mixed in, so they are redone
    assert state(None, 4, more_is_stale=True) == "stale" and state(None, 24, more_is_stale=True) == "finished"
    # a session stopped before its last chunk
    manifest.write_text(json.dumps({"rows": [0, 24], "notes_in_file": 24, "notes_file": str(notes),
                                    "complete": False}))
    assert state(notes, None) == "incomplete"
    # a manifest without the row count cannot say it covers them: the rerun resumes and writes it
    manifest.write_text(json.dumps({"rows": [0, 24], "notes_file": str(notes)}))
    assert state(notes, None) == "incomplete"


# --- commands ------------------------------------------------------------------------------------

def _finetune_command(tmp_path, cuda_devices=0, **settings) -> Command:
    layout = layout_for(RunSettings.from_values(dict(
        notes=str(MIMIC_III), select={"num_notes": 12}, data_dir=str(tmp_path), results_dir=str(tmp_path / "results"),
        run="r", **settings)))
    stage = next(stage for stage in pipeline.plan(layout, cuda_devices=cuda_devices) if stage.name == "finetune")
    return stage.steps[0].command


def test_finetune_launch_follows_the_gpus(tmp_path):
    cpu = _finetune_command(tmp_path)
    assert cpu.argv[1].endswith("finetune.py") and cpu.env == {}
    eight = _finetune_command(tmp_path, cuda_devices=8, finetune={"max_steps": 300})
    assert eight.argv[:2] == ["bash", str(REPO / "a-generate-synthetic-training-data" / "synthetic-d-run-finetune.sh")]
    assert eight.env["NUM_PROCESSES"] == "8" and eight.env["CONFIG"].endswith("configs/multi_gpu.yaml")
    assert eight.argv[eight.argv.index("--max_steps") + 1] == "300"
    published = _finetune_command(tmp_path, cuda_devices=2, data_parallel="deepspeed")
    assert published.env["CONFIG"].endswith("configs/deep_speed2.yaml") and published.env["NUM_PROCESSES"] == "2"
    one = _finetune_command(tmp_path, num_gpus=1, data_parallel="deepspeed")
    assert one.env["CONFIG"].endswith("configs/single_gpu.yaml")
    with pytest.raises(InputError, match="data_parallel"):
        _finetune_command(tmp_path, cuda_devices=2, data_parallel="fsdp")


def test_accelerate_configs_launch_what_their_names_say():
    from accelerate.commands.config.config_args import load_config_from_file

    kinds = {name: load_config_from_file(str(path)).distributed_type.value
             for name, path in layout.DATA_PARALLEL_CONFIGS.items()}
    assert kinds == {"ddp": "MULTI_GPU", "deepspeed": "DEEPSPEED"}
    single = load_config_from_file(str(layout.SINGLE_GPU_CONFIG))
    assert (single.distributed_type.value, single.num_processes, single.mixed_precision) == ("NO", 1, "bf16")


def test_stage_c_checks_the_training_notes_against_the_runs_evaluation_sets(tmp_path):
    values = dict(notes=str(MIMIC_III), select={"num_notes": 12}, data_dir=str(tmp_path), run="r",
                  eval={"apixaban": {"input_dir": "elsewhere/apixaban"}})
    prepare = layout_for(RunSettings.from_values(values)).settings["prep_training"]
    assert prepare.eval_dirs["apixaban"] == str(tmp_path / "elsewhere" / "apixaban")
    assert prepare.eval_dirs["i2b2"] == str(tmp_path / "n2c2-2018-track1")
    asked = layout_for(RunSettings.from_values({**values, "prep_training": {"eval_dirs": {"i2b2": "x"}}}))
    assert asked.settings["prep_training"].eval_dirs == {"i2b2": "x"}


def test_stage_b2_runs_only_where_stage_c_needs_its_verdicts(tmp_path):
    values = dict(notes=str(MIMIC_III), select={"num_notes": 12}, data_dir=str(tmp_path), run="r",
                  teacher="models/teacher", engine="vllm", max_model_len=4096)
    stages = {stage.name: stage for stage in pipeline.plan(layout_for(RunSettings.from_values(values)))}
    assert [stage.name for stage in stages.values()] == list(layout.RUN_STAGES)
    assert stages["verify"].steps == [] and stages["verify"].idle == "not asked"
    raw = tmp_path / "synthetic-raw"
    assert stages["prep_training"].steps[0].inputs == [raw / "synth_all_1_df.csv.gz"]
    asked = {**values, "prep_training": {"require_verified": True}, "verify": {"model_id": "models/verifier",
                                                                         "num_items": 50}}
    stages = {stage.name: stage for stage in pipeline.plan(layout_for(RunSettings.from_values(asked)))}
    step = stages["verify"].steps[0]
    flag = lambda name: step.command.argv[step.command.argv.index(name) + 1]  # noqa: E731
    assert step.command.argv[1].endswith("synthetic-b2-verify.py")
    assert (flag("--model_id"), flag("--num_items"), flag("--engine"), flag("--max_model_len"), flag("--data_dir")) == (
        "models/verifier", "50", "vllm", "4096", str(tmp_path))
    assert step.outputs == [raw / "verification.csv"] and step.inputs == [raw / "synth_all_df.csv"]
    assert "--overwrite" in step.stale_command.argv and "--overwrite" not in step.command.argv
    assert stages["prep_training"].steps[0].inputs == [raw / "synth_all_1_df.csv.gz", raw / "verification.csv"]
    with pytest.raises(InputError, match="verify"):
        layout_for(RunSettings.from_values({**values, "verify": {"num_itemz": 5}}))


def test_driver_fine_tunes_with_the_fast_preset_unless_the_config_says_paper(tmp_path):
    fast = _finetune_command(tmp_path).argv
    assert fast[fast.index("--preset") + 1] == "fast"
    paper = _finetune_command(tmp_path, finetune={"preset": "paper"}).argv
    assert "--preset" not in paper  # the script's own default
    with pytest.raises(InputError, match="preset"):
        _finetune_command(tmp_path, finetune={"preset": "fastest"})


def test_distilled_student_answers_as_its_adapter_unless_the_config_says_merged(tmp_path):
    values = dict(notes=str(MIMIC_III), select={"num_notes": 12}, data_dir=str(tmp_path), run="r",
                  student="models/student", results_dir=str(tmp_path / "results"), models_dir=str(tmp_path / "models"))
    for distilled_as, model_id, adapter, model_input in (
            ("adapter", "models/student", str(tmp_path / "results" / "r" / "final"),
             tmp_path / "results" / "r" / "training_summary.json"),
            ("merged", str(tmp_path / "models" / "r-distilled"), None,
             tmp_path / "models" / "r-distilled" / "config.json")):
        run_layout = layout_for(RunSettings.from_values({**values, "distilled_as": distilled_as}))
        stages = {stage.name: stage for stage in pipeline.plan(run_layout)}
        for task in run_layout.tasks:
            base = run_layout.settings[f"eval_inference:{task}:base"]
            distilled = run_layout.settings[f"eval_inference:{task}:distilled"]
            assert (base.model_id, base.adapter, distilled.model_id, distilled.adapter) == (
                "models/student", None, model_id, adapter)
        step = next(step for step in stages["eval_inference"].steps if step.settings.model_name == "r-distilled")
        assert step.inputs[-1] == model_input
        commands = {step.label: step.command for step in stages["eval_inference"].steps}
        joined = pipeline.batches(stages["eval_inference"].steps, commands, False)
        assert len(joined) == (1 if distilled_as == "adapter" else 2)  # one model load, or one per model
    with pytest.raises(InputError, match="distilled_as"):
        layout_for(RunSettings.from_values({**values, "distilled_as": "both"}))
    with pytest.raises(InputError, match="base_model_name"):
        layout_for(RunSettings.from_values({**values, "eval_inference": {"base_model_name": "x"}}))


def test_interrupted_finetune_resumes_from_a_complete_checkpoint_only(tmp_path):
    """Only checkpoints cut off while saving: a resume would have nothing to continue from, so the run starts
    again; with a complete one it resumes."""
    cut = tmp_path / "results" / "r" / "checkpoint-50"
    cut.mkdir(parents=True)
    (cut / "adapter_model.safetensors").write_bytes(b"")
    assert _finetune_command(tmp_path).argv[-1] == "--overwrite"
    (cut / "trainer_state.json").write_text("{}")
    assert _finetune_command(tmp_path).argv[-1] == "--overwrite"  # the run's totals come last: still cut off
    (cut / layout.PROGRESS_FILE).write_text("{}")
    assert _finetune_command(tmp_path).argv[-2:] == ["--resume_from_checkpoint", "last"]


def test_report_shows_stage_b_filters_and_the_verification(tmp_path):
    from clinical_distil.report import filters_blocks

    values = dict(notes=str(MIMIC_III), select={"num_notes": 12}, data_dir=str(tmp_path), run="r")
    run_layout = layout_for(RunSettings.from_values({**values, "prep_training": {"require_verified": True}}))
    assert filters_blocks(run_layout) == []  # nothing written yet
    raw = tmp_path / "synthetic-raw"
    raw.mkdir()
    rows = [{"filter": "require_source_in_note", "flags": "quote not in the note", "applied": True, "flagged": 7,
             "removed": 7, "removed_only_by_it": 5},
            {"filter": "drop_duplicates", "flags": "repeated question", "applied": False, "flagged": 3, "removed": 0,
             "removed_only_by_it": 0}]
    (raw / "stage_b.json").write_text(json.dumps({"items_checked": 1200, "items_kept": 1193, "filters": rows}))
    write_csv(pd.DataFrame({"verifier_agrees": [True, False, True, False, False], "verifier": ["m"] * 5}),
              raw / "verification.csv")
    blocks = filters_blocks(run_layout)
    assert blocks[0] == ("p", "Stage B filters: 1,200 items checked, 1,193 kept. Each filter flags items whether or "
                              "not it is applied (stage B's parameters; all off reproduces the paper):")
    assert blocks[1][1].values.tolist() == [["require_source_in_note", "quote not in the note", "yes", "7", "7", "5"],
                                            ["drop_duplicates", "repeated question", "no", "3", "0", "0"]]
    assert blocks[2] == ("p", "Re-answer verification (stage B2, verifier m): 5 items verified, the verifier gave the "
                              "teacher's answer for 2; 3 removed by stage C (require_verified).")
    off = layout_for(RunSettings.from_values(values))
    assert filters_blocks(off)[2][1].endswith("gave the teacher's answer for 2; none removed (require_verified off).")


def test_the_html_report_holds_its_figures(tmp_path):
    """report.html embeds each PNG: moved alone (the figures/ folder left behind), it still shows them."""
    from clinical_distil.report_render import render_html

    figure = tmp_path / "figures" / "loss.png"
    figure.parent.mkdir()
    figure.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    page = render_html("run", [("h2", "Training"), ("image", str(figure))], tmp_path)
    assert "<img src='data:image/png;base64,iVBORw0KGgpmYWtl' alt='loss'>" in page and "figures/" not in page


def test_report_helpers():
    assert fmt(0.12345) == "0.123" and fmt(12166) == "12,166" and fmt(None) == "n/a" and fmt(True) == "yes"
    assert markdown_table(pd.DataFrame({"a|b": ["x\ny"]})) == "| a\\|b |\n|---|\n| x y |"


def test_driver_bad_input_is_one_line(tmp_path):
    result = run_script("run-pipeline.py", "--notes", str(tmp_path / "none.csv.gz"), "--data_dir", str(tmp_path))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: notes file not found: {tmp_path / 'none.csv.gz'}; pass --notes with a MIMIC-III NOTEEVENTS.csv(.gz), "
        "a MIMIC-IV-Note discharge.csv(.gz) or a selected notes_{N}.csv(.gz)"]


def test_dry_run_prints_commands_and_writes_nothing(tmp_path):
    result = run_script("run-pipeline.py", "--config", str(REPO / "configs" / "demo.yaml"), "--dry_run",
                        "--data_dir", str(tmp_path / "data"), "--reports_dir", str(tmp_path / "reports"),
                        "--results_dir", str(tmp_path / "results"), "--models_dir", str(tmp_path / "models"))
    assert result.returncode == 0, result.stderr
    assert "synthetic-a-create.py --model_id models/SmolLM2-135M-Instruct" in result.stdout
    assert "--limit 4 --structured_output True" in result.stdout
    assert result.stdout.count("eval-inference.py") == 1  # one command, one model load: the adapter and its base
    assert "--model_name demo-distilled --base_model_name demo-base" in result.stdout
    assert ("--dataset_name annotated-synthetic,i2b2,apixaban --input_file prompts,test,prompts "
            "--num_inference 12,13,23") in result.stdout
    assert not (tmp_path / "data" / "mimic").exists() and not (tmp_path / "results").exists()
    assert not (tmp_path / "reports").exists()


def test_failed_notebook_stops_with_its_message(tmp_path):
    """Stage B without stage A's files: the notebook's InputError becomes the driver's one-line error."""
    result = run_script("run-pipeline.py", "--notes", str(MIMIC_III), "--select", "{num_notes: 4}", "--run", "broken",
                        "--data_dir", str(tmp_path), "--reports_dir", str(tmp_path / "reports"),
                        "--from_stage", "post_process", "--to_stage", "post_process")
    assert result.returncode == 2
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("error: stage post_process failed at 'parse, check and join (stage B)': no stage A chunk "
                           f"files (df_*_START_END.csv) in {tmp_path / 'synthetic-output' / '4'}")
    state = json.loads((tmp_path / "reports" / "broken" / "run.json").read_text())
    assert state["stages"]["post_process"]["status"] == "failed"


def test_second_driver_refused_and_a_killed_driver_takes_its_stage_with_it(tmp_path, tiny_model_dir):
    """Two drivers on one run: the second stops in one line. SIGKILL of the first driver's whole process group
    while stage A runs (a scheduler's time limit): the stage ends at once (no orphan writing beside the rerun),
    and the rerun finishes stage A with each row once."""
    import os
    import signal
    import subprocess

    from clinical_distil.create import read_chunks

    data = tmp_path / "data"
    argv = ["--notes", str(MIMIC_III), "--select", "{num_notes: 6}", "--run", "k", "--data_dir", str(data),
            "--reports_dir", str(tmp_path / "reports"), "--results_dir", str(tmp_path / "results"),
            "--models_dir", str(tmp_path / "models"), "--teacher", str(tiny_model_dir), "--student",
            str(tiny_model_dir), "--engine", "transformers", "--to_stage", "create",
            "--create", "{max_tokens: 64, chunk_size: 1, retries: 0}"]
    manifest = data / "synthetic-output" / "6" / "manifest.json"
    # a group of its own, as a batch job's; the whole group is killed below
    first = subprocess.Popen([sys.executable, str(REPO / "run-pipeline.py"), *argv], cwd=REPO, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert wait_for(lambda: holds_lock(tmp_path / "reports" / "k"), process=first), first.communicate()[1]
        second = run_script("run-pipeline.py", *argv)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines()[-1] == (
            f"error: another run is writing to {tmp_path / 'reports' / 'k'} (pid {first.pid} on "
            f"{os.uname().nodename}); wait for it to end, or give this run another --run name")
        assert wait_for(manifest.exists, process=first), first.communicate()[1][-3000:]
        assert processes_mentioning("synthetic-a-create.py", str(data)), "stage A is not running"
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    finally:
        first.kill()
    # stage A has most of its 24 replies still to write: gone within seconds means it was stopped, not finished
    assert wait_for(lambda: not processes_mentioning(str(data)), timeout=10), \
        f"left running: {[open(f'/proc/{pid}/cmdline').read()[:200] for pid in processes_mentioning(str(data))]}"
    assert not json.loads(manifest.read_text())["complete"]
    rerun = run_script("run-pipeline.py", *argv)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    frame = read_chunks(data / "synthetic-output" / "6")
    assert len(frame) == 24 and not frame.duplicated(["note_id", "question_type"]).any()
    assert json.loads(manifest.read_text())["complete"] is True


# --- one whole run -------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def whole_run(tmp_path_factory, default_model_dir, tiny_model_dir):
    """The embedded model as teacher (it writes real JSON under structured output) and the tiny random
    model as student (fast training and inference), on 3 notes and small evaluation subsets."""
    work = tmp_path_factory.mktemp("pipeline")
    config = work / "run.yaml"
    config.write_text("\n".join([
        "run: e2e", f"data_dir: {work / 'data'}", f"results_dir: {work / 'results'}", f"models_dir: {work / 'models'}",
        f"reports_dir: {work / 'reports'}", f"teacher: {default_model_dir}", f"student: {tiny_model_dir}",
        f"notes: {MIMIC_III}", "engine: transformers", "max_seq_length: 2048", "select: {num_notes: 24}",
        "create: {limit: 3, questions_per_type: 1, max_tokens: 300, structured_output: true}",
        "finetune: {logging_steps: 1}", "eval_inference: {max_output_tokens: 24}", "evaluate: {resamples: 200}",
        "eval:", f"  annotated-synthetic: {{input_dir: {SAMPLES / 'annotated-synthetic'}, num_inference: 10}}",
        f"  i2b2: {{input_dir: {SAMPLES / 'n2c2-2018-track1'}, num_inference: 26}}",
        f"  apixaban: {{input_dir: {SAMPLES / 'apixaban'}, num_inference: 23}}", ""]))
    first = run_script("run-pipeline.py", "--config", str(config))
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    return work, config, first


def test_every_contract_file_is_written(whole_run):
    from clinical_distil.create import OUTPUT_COLUMNS
    from clinical_distil.prep_training import DATASET_COLUMNS

    work, _, _ = whole_run
    data = work / "data"
    notes = pd.read_csv(data / "mimic" / "notes_24.csv.gz")
    assert list(notes.columns) == ["subject_id", "hadm_id", "note_id", "text"] and len(notes) == 24
    chunks = sorted((data / "synthetic-output" / "24").glob("df_*.csv"))
    assert [path.name for path in chunks] == [f"df_{kind}_0_3.csv" for kind in
                                              sorted(["yes_no", "numeric", "na-numeric", "na-bool"])]
    for path in chunks:
        assert list(pd.read_csv(path).columns) == OUTPUT_COLUMNS
    raw = data / "synthetic-raw"
    for name in ["synth_all_df.csv", "parse_failures.csv", "replies_by_type.csv", "synth_all_1_df.csv.gz",
                 "synth_bool_num_9_df.csv.gz"]:
        assert (raw / name).exists(), name
    for split in ("train", "test"):
        assert list(pd.read_csv(raw / f"{split}_all_1.csv.gz").columns) == DATASET_COLUMNS
        assert (raw / f"{split}_all_1.arrow" / "dataset_info.json").exists()
        # every training target is strict JSON: json.loads refusing NaN, Infinity and -Infinity
        from datasets import load_from_disk

        for row in load_from_disk(str(raw / f"{split}_all_1.arrow")):
            target = json.loads(row["output"].removeprefix("```json\n").removesuffix("\n```"),
                                parse_constant=lambda constant: pytest.fail(f"{constant} in a target"))
            assert target["answer"] != "" and target["answer"] is not None
    assert (work / "results" / "e2e" / "final" / "adapter_config.json").exists()
    assert (work / "models" / "e2e-distilled" / "config.json").exists()
    for task, file_name, rows in (("annotated-synthetic", "prompts", 10), ("i2b2", "test", 26),
                                  ("apixaban", "prompts", 23)):
        eval_rows = pd.read_csv(data / "eval-data" / task / f"{file_name}.csv")
        assert {"id", "label", "prompt"} <= set(eval_rows.columns)
        for role in ("base", "distilled"):
            answered = pd.concat(pd.read_csv(path) for path in
                                 (data / "outputs" / task / f"e2e-{role}").glob(f"{file_name}_0_{rows}_chunk_*.csv"))
            assert len(answered) == rows and {"id", "label", "output", "finish_reason"} <= set(answered.columns)
        summary = pd.read_csv(data / "outputs" / task / "evaluation" / "e2e" / "summary.csv")
        assert sorted(summary["model"]) == ["e2e-base", "e2e-distilled"]
    assert len(list((data / "outputs" / "i2b2" / "evaluation" / "e2e" / "xml" / "e2e-base").glob("*.xml"))) == 2


def _table_after(markdown: str, heading: str) -> pd.DataFrame:
    """The first markdown table after `heading`, as strings."""
    blocks = markdown.split(heading, 1)[1].split("\n\n")
    lines = next(block for block in blocks if block.strip().startswith("|")).strip().splitlines()
    rows = [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines]
    return pd.DataFrame(rows[2:], columns=rows[0])


def test_report_numbers_are_the_files_numbers(whole_run):
    work, _, _ = whole_run
    data, report_dir = work / "data", work / "reports" / "e2e"
    markdown = (report_dir / "report.md").read_text()
    for task in ("annotated-synthetic", "i2b2", "apixaban"):
        over = get_task(task).interval_over  # annotated questions are written per note: intervals over examples
        table = _table_after(markdown, f"### {task}\n").set_index("model")
        summary = pd.read_csv(data / "outputs" / task / "evaluation" / "e2e" / "summary.csv").set_index("model")
        for role in ("base", "distilled"):
            row = summary.loc[f"e2e-{role}"]
            for metric, column in (("balanced_accuracy", "balanced accuracy [95% CI]"),
                                   ("micro_f1", "micro-F1 [95% CI]")):
                assert table.loc[role, column] == (f"{row[metric]:.3f} [{row[f'{metric}_ci_{over}_low']:.3f}, "
                                                   f"{row[f'{metric}_ci_{over}_high']:.3f}]")
            assert table.loc[role, "parse failure rate"] == f"{row['parse_failure_rate']:.3f}"
            assert table.loc[role, "examples"] == str(int(row["examples"]))
            if task == "i2b2":
                assert table.loc[role, "n2c2 official micro-F1"] == f"{row['n2c2_micro_f1']:.3f}"
                assert table.loc[role, "n2c2 official macro-F1"] == f"{row['n2c2_macro_f1']:.3f}"
            if task == "annotated-synthetic":
                assert table.loc[role, "accuracy yes_no"] == f"{row['accuracy_yes_no']:.3f}"
            manifest = json.loads((data / "outputs" / task / f"e2e-{role}" /
                                   f"manifest_{'test' if task == 'i2b2' else 'prompts'}.json").read_text())
            assert table.loc[role, "s/example"] == f"{manifest['seconds_per_example']:.3f}"
            costs = _table_after(markdown, "## Cost of answering\n")
            spent = costs[(costs["task"] == task) & (costs["model"] == role)].iloc[0]
            prompts = pd.read_csv(data / "eval-data" / task / f"{'test' if task == 'i2b2' else 'prompts'}.csv",
                                  keep_default_na=False, dtype={"patient": str})
            prompts = prompts.iloc[manifest["rows"][0]:manifest["rows"][1]]  # the rows this run asked
            notes = prompts["prompt"].map(note_of).nunique()
            assert (spent["engine"], spent["GPUs"], spent["prompts"], spent["notes"]) == \
                ("transformers", "0", str(len(prompts)), str(notes))
            patients = prompts["patient"].nunique() if task == "i2b2" else notes
            assert abs(float(spent["s/note"].replace(",", "")) - manifest["wall_seconds"] / notes) <= 6e-4
            assert abs(float(spent["s/patient"].replace(",", "")) - manifest["wall_seconds"] / patients) <= 6e-4
            assert abs(float(spent["s/1,000 notes"].replace(",", "")) - 1000 * manifest["wall_seconds"] / notes) <= 0.06
            assert spent["GPU-h/1,000 notes"] == "n/a"  # answered on CPU
        base, distilled = summary.loc["e2e-base"], summary.loc["e2e-distilled"]
        gain = distilled["balanced_accuracy"] - base["balanced_accuracy"]
        reading = markdown.split("## What these numbers can show\n\n", 1)[1].split("\n", 1)[0]
        assert (f"{task}: balanced accuracy {base['balanced_accuracy']:.3f} (base) against "
                f"{distilled['balanced_accuracy']:.3f} (distilled), {gain:+.3f}; the 95% intervals (over {over}) ") \
            in reading

    counts = _table_after(markdown, "## Counts through the stages\n").set_index("stage")["count"]
    chunks = pd.concat(pd.read_csv(path) for path in (data / "synthetic-output" / "24").glob("df_*.csv"))
    raw = data / "synthetic-raw"
    assert counts["notes selected"] == "24" and counts["notes sent to the teacher"] == "3"
    assert counts["teacher replies"] == str(len(chunks)) == "12"
    assert counts["replies generated again (cut off or unreadable)"] == str(int((chunks["attempts"] > 1).sum()))
    failures = pd.read_csv(raw / "parse_failures.csv")
    assert counts["replies that failed to parse"] == str(int((failures["level"] == "reply").sum()))
    replies = pd.read_csv(raw / "replies_by_type.csv")
    assert counts["replies that were an empty list (nothing to ask)"] == str(int(replies["empty_lists"].sum()))
    assert counts["items left out as template placeholders"] == str(int(replies["placeholder_items"].sum()))
    assert counts["items kept after filters"] == str(len(pd.read_csv(raw / "synth_all_df.csv")))
    assert counts["training examples (balanced)"] == str(len(pd.read_csv(raw / "train_all_1.csv.gz")))
    assert counts["test examples"] == str(len(pd.read_csv(raw / "test_all_1.csv.gz")))

    kept = pd.read_csv(raw / "synth_all_df.csv")
    assert f"Source quote found in the note for {kept['source_in_note'].mean():.3f} of the kept items" in markdown
    training = _table_after(markdown, "## Training\n").set_index("quantity")["value"]
    summary = json.loads((work / "results" / "e2e" / "training_summary.json").read_text())
    assert training["eval loss before training"] == f"{summary['eval_loss_before']:.3f}"
    assert training["eval loss after training"] == f"{summary['eval_loss']:.3f}"
    assert training["optimizer steps"] == str(summary["global_step"])
    state = json.loads((report_dir / "run.json").read_text())
    timing = _table_after(markdown, "## Wall time per stage\n").set_index("stage")
    assert timing.loc["finetune", "seconds"] == f"{state['stages']['finetune']['seconds']:.1f}"
    assert tuple(timing.loc["verify"]) == ("not asked", "n/a")  # stage B2 was not asked for
    stage_b = json.loads((raw / "stage_b.json").read_text())
    assert f"Stage B filters: {stage_b['items_checked']:,} items checked, {stage_b['items_kept']:,} kept." in markdown
    filters = _table_after(markdown, "Stage B filters: ").set_index("filter")
    assert list(filters.index) == [row["filter"] for row in stage_b["filters"]]
    for row in stage_b["filters"]:
        assert tuple(filters.loc[row["filter"], ["applied", "flagged", "removed", "removed_only_by_it"]]) == (
            "yes" if row["applied"] else "no", str(row["flagged"]), str(row["removed"]), str(row["removed_only_by_it"]))


def test_report_figures_render(whole_run):
    work, _, _ = whole_run
    report_dir = work / "reports" / "e2e"
    markdown = (report_dir / "report.md").read_text()
    html_text = (report_dir / "report.html").read_text()
    for name in ("difficulty", "training_loss", "evaluation", "accuracy_by_type"):
        path = report_dir / "figures" / f"{name}.png"
        header = path.read_bytes()[:24]
        assert header[:8] == b"\x89PNG\r\n\x1a\n"
        width, height = struct.unpack(">II", header[16:24])
        assert width >= 400 and height >= 200
        # report.md links the file; report.html holds the same bytes itself (one file to send)
        assert f"(figures/{name}.png)" in markdown and "figures/" not in html_text
        assert f"src='data:image/png;base64,{base64.b64encode(path.read_bytes()).decode()}' alt='{name}'" in html_text
    executed = sorted(path.name for path in (report_dir / "notebooks").glob("*.ipynb"))
    assert len(executed) == 8  # B, C, three preprocess and three evaluate notebooks


def test_second_run_skips_finished_stages(whole_run):
    work, config, _ = whole_run
    outputs = [path for path in (work / "data").rglob("*") if path.is_file()]
    before = {path: path.stat().st_mtime_ns for path in outputs}
    again = run_script("run-pipeline.py", "--config", str(config))
    assert again.returncode == 0, again.stderr[-2000:]
    for position, stage in enumerate(layout.RUN_STAGES[:-1], start=1):
        if stage == "verify":  # stage B2 runs only for prepare's require_verified
            assert f"[{position}/11] verify: nothing to do (no re-answer verification" in again.stdout
            continue
        assert f"[{position}/11] {stage}: skipped, outputs exist" in again.stdout
    assert "step(s) to run" not in again.stdout
    assert {path: path.stat().st_mtime_ns for path in outputs} == before  # no stage's file was touched
    only_report = run_script("run-pipeline.py", "--config", str(config), "--from_stage", "report")
    assert only_report.returncode == 0 and "[10/11]" not in only_report.stdout and "[11/11] report" in only_report.stdout


def _make_newer(path: Path) -> None:
    moment = time.time() + 5
    os.utime(path, (moment, moment))


def test_answers_older_than_their_model_are_redone_not_scored(whole_run):
    """A trained adapter newer than its answers: the driver redoes its answers with --overwrite (run as it is,
    eval-inference would keep every old chunk and the old model's answers would be scored)."""
    work, config, _ = whole_run
    data = work / "data"
    adapter_summary = work / "results" / "e2e" / "training_summary.json"
    _make_newer(adapter_summary)
    base_chunks = {path: path.stat().st_mtime_ns for path in (data / "outputs").glob("*/e2e-base/*_chunk_*.csv")}
    rerun = run_script("run-pipeline.py", "--config", str(config), "--from_stage", "eval_inference",
                       "--to_stage", "eval_inference")
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert rerun.stdout.count("is older than its inputs; redoing it with --overwrite") == 3
    assert "3 of 6 step(s) to run" in rerun.stdout
    model_time = adapter_summary.stat().st_mtime
    for task, file_name, rows in (("annotated-synthetic", "prompts", 10), ("i2b2", "test", 26),
                                  ("apixaban", "prompts", 23)):
        folder = data / "outputs" / task / "e2e-distilled"
        assert all(path.stat().st_mtime >= model_time - 5 for path in folder.glob("*_chunk_*.csv"))
        manifest = json.loads((folder / f"manifest_{file_name}.json").read_text())
        assert manifest["answered"] == rows and len(manifest["sessions"]) == 1 and manifest["complete"]
    assert {path: path.stat().st_mtime_ns for path in base_chunks} == base_chunks  # the base model's stay


def test_training_data_newer_than_the_adapter_trains_again(whole_run):
    """Run as it is, finetune.py refuses a folder that holds a run: the driver passes --overwrite instead of
    failing on every rerun."""
    work, config, _ = whole_run
    _make_newer(work / "data" / "synthetic-raw" / "train_all_1.csv.gz")
    summary = work / "results" / "e2e" / "training_summary.json"
    before = summary.stat().st_mtime_ns
    rerun = run_script("run-pipeline.py", "--config", str(config), "--from_stage", "finetune", "--to_stage", "finetune")
    assert rerun.returncode == 0, rerun.stdout[-2000:] + rerun.stderr[-2000:]
    assert "is older than its inputs; redoing it with --overwrite" in rerun.stdout
    assert summary.stat().st_mtime_ns > before and json.loads(summary.read_text())["global_step"] > 0
    state = json.loads((work / "reports" / "e2e" / "run.json").read_text())
    assert state["stages"]["finetune"]["steps"]["fine-tune the student (LoRA)"]["command"].endswith("--overwrite")
    again = run_script("run-pipeline.py", "--config", str(config), "--from_stage", "finetune", "--to_stage", "finetune")
    assert again.returncode == 0 and "finetune: skipped, outputs exist" in again.stdout


def test_stage_times_add_up_over_an_interrupted_run(tmp_path, monkeypatch):
    """A stage interrupted and then finished reports the seconds of both runs."""
    layout = layout_for(RunSettings.from_values(dict(
        notes=str(MIMIC_III), select={"num_notes": 12}, data_dir=str(tmp_path), reports_dir=str(tmp_path / "reports"),
        run="r")))
    output = tmp_path / "out.txt"
    write = f"import time; time.sleep(0.3); open({str(output)!r}, 'w').write('x')"
    stage = pipeline.Stage("select", [Step("sleep", Command([sys.executable, "-c", write]), outputs=[output])])
    state_path = layout.report_dir / "run.json"
    state_path.parent.mkdir(parents=True)
    state_path.write_text(json.dumps({"stages": {"select": {"status": "interrupted", "seconds": 40.0}}}))
    said = []
    state = driver.run_stages(layout, [stage], ["select"], announce=said.append)
    record = state["stages"]["select"]
    # the line tells this run's seconds from the interrupted run's, and never more for a stage than for the run
    this_run = record["seconds"] - 40.0
    assert re.fullmatch(r"\[1/1\] select: done in (\d+\.\d)s, (\d+\.\d)s with the interrupted run\(s\) before "
                        r"\(this run so far (\d+)s\)", said[-1]), said
    done, total, run_total = re.findall(r"[\d.]+(?=s)", said[-1])
    assert float(done) == pytest.approx(this_run, abs=0.2) and float(total) == pytest.approx(record["seconds"], abs=0.2)
    assert float(done) <= float(run_total) + 0.5
    assert record["status"] == "ran"
    assert record["seconds"] == pytest.approx(40.0 + record["steps"]["sleep"]["seconds"], abs=0.2)
    # a finished stage done again starts its count afresh
    output.unlink()
    record = driver.run_stages(layout, [stage], ["select"], announce=lambda line: None)["stages"]["select"]
    assert record["seconds"] == pytest.approx(record["steps"]["sleep"]["seconds"], abs=0.2)
