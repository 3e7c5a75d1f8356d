"""The stage contract: declarations, notebooks' parameters cells, the layout, and adding a task as one entry."""

import ast
import dataclasses
import json
import shutil

import pandas as pd
import pytest

from clinical_distil import evaluate, layout, pipeline, run_settings, stages, tasks
from clinical_distil.files import write_csv
from clinical_distil.layout import REPO_ROOT
from clinical_distil.prompts import answer_target

from conftest import SAMPLES

NOTEBOOK_SETTINGS = {
    layout.POST_PROCESS_NOTEBOOK: stages.PostProcessSettings, layout.PREP_TRAINING_NOTEBOOK: stages.PrepTrainingSettings,
    **{task.preprocess_notebook: stages.preprocess_settings(task) for task in tasks.TASKS.values()},
    **{task.evaluate_notebook: stages.evaluate_settings(task) for task in tasks.TASKS.values()},
}


def _parameters(notebook) -> dict:
    cells = json.loads(notebook.read_text())["cells"]
    cell = next(cell for cell in cells if "parameters" in cell["metadata"].get("tags", []))
    return {node.targets[0].id: ast.literal_eval(node.value) for node in ast.parse("".join(cell["source"])).body}


@pytest.mark.parametrize("notebook", sorted(NOTEBOOK_SETTINGS), ids=lambda path: path.name)
def test_notebook_parameters_are_the_declared_ones(notebook):
    declared = {item.name: item.default if item.default is not dataclasses.MISSING else item.default_factory()
                for item in dataclasses.fields(NOTEBOOK_SETTINGS[notebook])}
    assert _parameters(notebook) == declared
    cells = json.loads(notebook.read_text())["cells"]
    assert all(not cell.get("outputs") for cell in cells if cell["cell_type"] == "code")  # committed without outputs
    code = "".join("".join(cell["source"]) for cell in cells)
    assert "sys.path" not in code and "notebook_parameters(" in code


def test_no_script_bootstraps_the_path():
    for path in [*REPO_ROOT.glob("*.py"), *layout.GENERATION_FOLDER.glob("*.py"), *(REPO_ROOT / "bench").glob("*.py")]:
        assert "sys.path.insert" not in path.read_text(), path


def _strings(code: str) -> tuple[set[str], list[str]]:
    """A module's string constants (docstrings left out) and the literal parts of its f-strings."""
    tree = ast.parse(code)
    documentation = {id(node.body[0].value) for node in ast.walk(tree)
                     if isinstance(node, (ast.Module, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))
                     and node.body and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    fragments = [part.value for node in ast.walk(tree) if isinstance(node, ast.JoinedStr)
                 for part in node.values if isinstance(part, ast.Constant)]
    constants = {node.value for node in ast.walk(tree) if isinstance(node, ast.Constant)
                 and isinstance(node.value, str) and id(node) not in documentation}
    return constants, fragments


def test_only_the_layout_spells_stage_folders_and_files():
    """Folder and file names as string literals, and file names built with f-strings, live in layout.py alone."""
    names = {"synthetic-raw", "synthetic-output", "eval-data", "mimic", "synth_all_df.csv", "parse_failures.csv",
             "replies_by_type.csv", "training_summary.json", "final", "evaluation", "results", "reports"}
    prefixes = ("train_", "test_", "synth_", "notes_", "df_", "_chunk_", "manifest")
    for path in [*(REPO_ROOT / "clinical_distil").glob("*.py"), *REPO_ROOT.glob("*.py"),
                 *layout.GENERATION_FOLDER.glob("*.py"), *(REPO_ROOT / "bench").glob("*.py"),
                 *layout.GENERATION_FOLDER.glob("*.ipynb"), *REPO_ROOT.glob("*-eval-task/*.ipynb")]:
        if path.name == "layout.py":
            continue
        code = path.read_text()
        if path.suffix == ".ipynb":
            code = "\n".join("".join(cell["source"]) for cell in json.loads(code)["cells"]
                             if cell["cell_type"] == "code")
        constants, fragments = _strings(code)
        assert not constants & names, (path.name, constants & names)
        assert not [part for part in fragments if part.startswith(prefixes)], (path.name, fragments)


def test_the_driver_takes_every_stage_flag_under_its_own_name(tmp_path):
    """Any flag of any stage's declaration is accepted in that stage's section and reaches its command."""
    settings = run_settings.RunSettings.from_values(dict(
        notes=str(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz"), data_dir=str(tmp_path), run="r",
        select={"num_notes": 12, "seed": 7}, create={"retries": 0, "top_p": 0.9},
        finetune={"learning_rate": 1e-4, "padding_free": True}, eval_inference={"structured_output": True}))
    plan = {stage.name: stage for stage in pipeline.plan(run_settings.layout_for(settings))}
    select = plan["select"].steps[0].command.argv
    assert select[select.index("--seed") + 1] == "7" and select[select.index("--num_notes") + 1] == "12"
    create = plan["create"].steps[0].command.argv
    assert create[create.index("--retries") + 1] == "0" and create[create.index("--top_p") + 1] == "0.9"
    finetune = plan["finetune"].steps[0].command.argv
    assert finetune[finetune.index("--learning_rate") + 1] == "0.0001" and "--padding_free" in finetune
    assert all("--structured_output" in step.command.argv for step in plan["eval_inference"].steps)


# ---------------------------------------------------------------- a fourth evaluation task: one entry + its folder

@pytest.fixture
def throwaway_task(tmp_path, monkeypatch):
    """A "vitals" task: its folder (notebooks copied from apixaban's, the task name changed) and one entry."""
    folder = tmp_path / "e-vitals-eval-task"
    folder.mkdir()
    for source, target in zip(tasks.TASKS["apixaban"].notebooks, ("vitals-a-preprocess.ipynb",
                                                                   "vitals-b-evaluate-performance.ipynb")):
        (folder / target).write_text(source.read_text().replace('get_task(\\"apixaban\\")', 'get_task(\\"vitals\\")'))
    task = tasks.EvalTask("vitals", str(folder), "vitals", "Vital signs", "criterion", "yes_or_not", "vitals")
    monkeypatch.setitem(tasks.TASKS, "vitals", task)
    return task


def test_a_new_task_is_one_entry_plus_its_folder(throwaway_task, tmp_path):
    settings = run_settings.RunSettings.from_values(dict(
        notes=str(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz"), data_dir=str(tmp_path / "data"), run="r",
        tasks=["apixaban", "vitals"], eval={"vitals": {"num_inference": 4}}))
    run_layout = run_settings.layout_for(settings)
    plan = {stage.name: stage for stage in pipeline.plan(run_layout)}
    labels = [step.label for stage in ("preprocess", "eval_inference", "evaluate") for step in plan[stage].steps]
    assert labels == ["apixaban prompts", "vitals prompts", "apixaban: base model answers",
                      "apixaban: distilled model answers", "vitals: base model answers",
                      "vitals: distilled model answers", "apixaban: score both models", "vitals: score both models"]
    preprocess = plan["preprocess"].steps[1].command.argv
    assert preprocess[5] == str(throwaway_task.preprocess_notebook)
    assert json.loads(preprocess[-1])["input_dir"] == str(tmp_path / "data" / "vitals")
    answers = plan["eval_inference"].steps[2].command.argv
    assert answers[answers.index("--dataset_name") + 1] == "vitals" and answers[answers.index("--num_inference") + 1] == "4"
    assert plan["evaluate"].steps[1].outputs == [tmp_path / "data" / "outputs" / "vitals" / "evaluation" / "r" /
                                                 "summary.csv"]

    # scored by the entry's scorer, per its question column
    rows = pd.DataFrame({"id": ["1-hr", "1-fever", "2-hr", "2-fever"], "criterion": ["hr", "fever"] * 2,
                         "question_type": ["numeric", "boolean"] * 2, "label": ["88", "Yes", "102", "No"]})
    for model, answers_given in (("right", ["88", "Yes", "102", "No"]), ("wrong", ["90", "No", "102", "No"])):
        replies = [answer_target({"question": "q", "answer": answer}) for answer in answers_given]
        write_csv(rows.assign(output=replies, finish_reason="stop"),
                  layout.eval_chunk(tmp_path / "outputs" / "vitals" / model, "prompts", 0, 4, 0))
    evaluation = evaluate.evaluate_models(tmp_path / "outputs" / "vitals", "prompts", "vitals")
    assert evaluation["question_column"] == "criterion"
    assert evaluation["summaries"]["right"]["micro_f1"] == 1.0
    assert evaluation["summaries"]["wrong"]["micro_f1"] == pytest.approx((0.5 + 0.5) / 2)
    written = evaluate.write_evaluation(evaluation, tmp_path / "scores", throwaway_task.title)
    assert pd.read_csv(written["summary"])["model"].tolist() == ["right", "wrong"]
    shutil.rmtree(tmp_path / "scores")


# ---------------------------------------------------------------- prompt templates of one's own, through the stages

OWN_TEACHER = "OWN WORDING. Note follows.\n$note\nWrite $count questions as a JSON list."
OWN_ANSWER = "OWN ANSWER PROMPT\n<<<\n$note\n>>>\nQ: $question"


@pytest.fixture
def own_prompts(tmp_path):
    folder = tmp_path / "own-prompts"
    folder.mkdir()
    (folder / "teacher_yes_no.txt").write_text(OWN_TEACHER)
    (folder / "answer.txt").write_text(OWN_ANSWER)
    (folder / "answer_system.txt").write_text("You answer from the note alone.")
    return folder


def test_a_prompt_dir_reaches_stage_a_stage_c_and_the_evaluation(own_prompts, tmp_path, tiny_model_dir):
    from datasets import load_from_disk

    from clinical_distil import eval_inference
    from clinical_distil.preprocess import apixaban_prompts
    from clinical_distil.prompts import load_templates
    from clinical_distil.create import read_chunks

    from conftest import make_stage_a_outputs, run_script
    from test_notebooks import execute

    # stage A: the teacher's prompt is the folder's, for the type it replaces
    notes_path, _ = make_stage_a_outputs(tmp_path / "a")
    result = run_script("a-generate-synthetic-training-data/synthetic-a-create.py", "--model_id", str(tiny_model_dir),
                        "--dataset", "12", "--data_dir", str(tmp_path / "a"), "--output_dir", str(tmp_path / "out"),
                        "--engine", "transformers", "--qtypes", "yes_no,numeric", "--limit", "1", "--max_tokens", "4",
                        "--retries", "0", "--prompt_dir", str(own_prompts))
    assert result.returncode == 0, result.stderr[-2000:]
    chunks = read_chunks(tmp_path / "out").set_index("question_type")
    note = pd.read_csv(notes_path)["text"].iloc[0]
    assert "OWN WORDING. Note follows.\n" + note + "\nWrite 5 questions as a JSON list." in chunks.loc["yes_no", "prompt"]
    assert "OWN WORDING" not in chunks.loc["numeric", "prompt"]  # the shipped numeric template stays
    assert json.loads((tmp_path / "out" / "manifest.json").read_text())["prompt_dir"] == str(own_prompts)

    # stage C: the training prompts use the folder's answer prompt and system message
    make_stage_a_outputs(tmp_path / "c")
    execute("synthetic-b-post_process_join_notes.ipynb", tmp_path, data_dir=str(tmp_path / "c"), dataset="12")
    execute("synthetic-c-prep-training.ipynb", tmp_path, data_dir=str(tmp_path / "c"), input_file="all",
            tokenizer=str(tiny_model_dir), prompt_dir=str(own_prompts))
    first = load_from_disk(str(tmp_path / "c" / "synthetic-raw" / "train_all_1.arrow"))[0]["prompt"]
    assert first[0]["content"] == "You answer from the note alone."
    assert first[1]["content"].startswith("OWN ANSWER PROMPT\n<<<\n") and "\n>>>\nQ: " in first[1]["content"]

    # evaluation: prompts built and read back (note found for shortening) with the same templates
    own = load_templates(str(own_prompts))
    prompts = apixaban_prompts(SAMPLES / "apixaban", own)
    assert prompts["prompt"].iloc[0].startswith("OWN ANSWER PROMPT")
    fitted = eval_inference.fit_prompts(__import__("transformers").AutoTokenizer.from_pretrained(tiny_model_dir),
                                   list(prompts["prompt"].iloc[:1]), 300, own)[0]
    assert fitted.note_truncated and fitted.messages[0]["content"] == "You answer from the note alone."
    assert fitted.messages[1]["content"].endswith(prompts["question"].iloc[0])  # the question kept whole

    # the driver hands the folder to every stage that takes one
    settings = run_settings.RunSettings.from_values(dict(notes=str(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz"),
                                                     data_dir=str(tmp_path / "d"), prompt_dir=str(own_prompts)))
    plan = {stage.name: stage for stage in pipeline.plan(run_settings.layout_for(settings))}
    for name in ("create", "finetune", "eval_inference"):
        assert all(str(own_prompts) in step.command.argv for step in plan[name].steps), name
    for name in ("prep_training", "preprocess"):
        assert all(json.loads(step.command.argv[-1])["prompt_dir"] == str(own_prompts) for step in plan[name].steps)
