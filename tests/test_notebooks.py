"""Stage B and C notebooks executed with papermill on files made from the bundled samples."""

import json

import pandas as pd
import papermill
import pytest
from datasets import load_from_disk

from conftest import REPO, make_stage_a_outputs

FOLDER = REPO / "a-generate-synthetic-training-data"


def execute(name, output_dir, **parameters):
    return papermill.execute_notebook(str(FOLDER / name), str(output_dir / name), parameters=parameters,
                                      kernel_name="python3", cwd=str(FOLDER), progress_bar=False)


def test_stage_b_and_c_notebooks(tmp_path, default_model_dir):
    make_stage_a_outputs(tmp_path)
    execute("synthetic-b-post_process_join_notes.ipynb", tmp_path, data_dir=str(tmp_path), dataset="12")
    raw = tmp_path / "synthetic-raw"
    all_1 = pd.read_csv(raw / "synth_all_1_df.csv.gz")
    assert len(all_1) == 56 and {"note_id", "question", "answer", "difficulty", "text", "source_in_note"} <= set(all_1)
    assert sorted(pd.read_csv(raw / "parse_failures.csv")["reason"]) == ["empty", "no_json"]

    executed = execute("synthetic-c-prep-training.ipynb", tmp_path, data_dir=str(tmp_path), input_file="all",
                       min_difficulty=1, tokenizer=str(default_model_dir))
    train, test = load_from_disk(str(raw / "train_all_1.arrow")), load_from_disk(str(raw / "test_all_1.arrow"))
    assert train.column_names == ["id", "prompt", "output", "question_type", "subject_id", "note_id"]
    assert set(train["subject_id"]).isdisjoint(test["subject_id"])
    assert len(train) + len(test) == 4 * 11  # balanced to the smallest type (na-bool: 11 items)
    printed = "".join(output.get("text", "") for cell in executed.cells for output in cell.get("outputs", []))
    assert "patients in both splits: 0" in printed
    # the notebook's length table against the lengths counted here from the datasets it wrote
    from transformers import AutoTokenizer

    from clinical_distil.chat import render_ids

    tokenizer = AutoTokenizer.from_pretrained(default_model_dir)
    prompt_tokens = [len(render_ids(tokenizer, row["prompt"])) for split in (train, test) for row in split]
    table = next(output["data"]["text/plain"] for cell in executed.cells if "lengths.describe()" in cell.source
                 for output in cell.get("outputs", []) if "data" in output)
    described = {line.split()[0]: [float(value) for value in line.split()[1:]] for line in table.splitlines()[1:]}
    assert described["count"][0] == len(prompt_tokens) == 44
    assert described["min"][0] == min(prompt_tokens) and described["max"][0] == max(prompt_tokens)
    # stage C's targets are strict JSON (no NaN for a "not in the note" answer) with the stage B answers
    targets = [json.loads(row["output"].removeprefix("```json\n").removesuffix("\n```"), parse_constant=_refuse)
               for split in (train, test) for row in split]
    assert sum(target["answer"] == "NA" for target in targets) == 22  # the two N/A types, 11 each


def _refuse(constant: str):
    raise ValueError(f"{constant} is not JSON")


def test_stage_b_notebook_names_the_missing_stage_a_folder(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="synthetic-a-create.py"):
        execute("synthetic-b-post_process_join_notes.ipynb", tmp_path, data_dir=str(tmp_path), dataset="7")


def test_stage_c_variants_get_their_own_files_and_old_names_are_refused(tmp_path, default_model_dir):
    """An ablation (hardest items, no support) never replaces the main training set; `combo` (this notebook's
    earlier name for input_file, the seed's name) is refused with its new name instead of being ignored."""
    make_stage_a_outputs(tmp_path)
    execute("synthetic-b-post_process_join_notes.ipynb", tmp_path, data_dir=str(tmp_path), dataset="12")
    raw = tmp_path / "synthetic-raw"
    execute("synthetic-c-prep-training.ipynb", tmp_path, data_dir=str(tmp_path), input_file="bool", per_type=4,
            hardest=True, support=False, tokenizer=str(default_model_dir))
    assert sorted(path.name for path in raw.glob("train_*")) == ["train_bool_1_per4-hardest-nosupport.arrow",
                                                                  "train_bool_1_per4-hardest-nosupport.csv.gz"]
    train = load_from_disk(str(raw / "train_bool_1_per4-hardest-nosupport.arrow"))
    assert set(train["question_type"]) == {"yes_no"}
    assert all(list(json.loads(row.removeprefix("```json\n").removesuffix("\n```"))) ==
               ["question", "type", "answer", "section"] for row in train["output"])
    with pytest.raises(papermill.PapermillExecutionError, match="unknown parameter combo "):
        execute("synthetic-c-prep-training.ipynb", tmp_path, data_dir=str(tmp_path), combo="bool",
                tokenizer=str(default_model_dir))
