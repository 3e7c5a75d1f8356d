"""Stage B and C notebooks executed with papermill on files made from the bundled samples."""

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

    executed = execute("synthetic-c-prep-training.ipynb", tmp_path, data_dir=str(tmp_path), combo="all",
                       min_difficulty=1, tokenizer=str(default_model_dir))
    train, test = load_from_disk(str(raw / "train_all_1.arrow")), load_from_disk(str(raw / "test_all_1.arrow"))
    assert train.column_names == ["id", "prompt", "output", "question_type", "subject_id", "note_id"]
    assert set(train["subject_id"]).isdisjoint(test["subject_id"])
    assert len(train) + len(test) == 4 * 11  # balanced to the smallest type (na-bool: 11 items)
    printed = "".join(output.get("text", "") for cell in executed.cells for output in cell.get("outputs", []))
    assert "patients in both splits: 0" in printed
    lengths = next(output["data"]["text/plain"] for cell in executed.cells if "prompt_tokens" in cell.source
                   for output in cell.get("outputs", []) if "data" in output)
    assert "prompt_tokens" in lengths
    min_prompt_tokens = float(lengths.split("min")[1].split()[0])
    assert min_prompt_tokens > 500  # a whole note with instructions, counted with the student's chat template


def test_stage_b_notebook_names_the_missing_stage_a_folder(tmp_path):
    with pytest.raises(papermill.PapermillExecutionError, match="synthetic-a-create.py"):
        execute("synthetic-b-post_process_join_notes.ipynb", tmp_path, data_dir=str(tmp_path), dataset="7")
