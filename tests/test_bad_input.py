"""Bad input at every entry point: one line on stderr naming the problem, exit code 2, nothing written or changed.

Broad on purpose: misspelt and unknown flags, wrong types, values out of range, missing or empty or
malformed files, outputs that cannot be written.
"""

import gzip
import json
import os
import shutil

import pandas as pd
import papermill
import pytest

from clinical_distil.files import write_csv
from clinical_distil.layout import REPO_ROOT

from conftest import SAMPLES, make_stage_a_outputs, run_script

SELECT = "a-generate-synthetic-training-data/synthetic-0-select-notes.py"
CREATE = "a-generate-synthetic-training-data/synthetic-a-create.py"
MERGE = "a-generate-synthetic-training-data/synthetic-e-convert-peft.py"
EVAL = "eval-inference.py"
FINETUNE = "finetune.py"
DRIVER = "run-pipeline.py"
MIMIC_III = str(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz")
TINY = str(REPO_ROOT / "models" / "tiny-random-llama")


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """A data root with good and bad inputs of every kind, shared by the cases (which must not change it)."""
    from datasets import Dataset

    root = tmp_path_factory.mktemp("bad-input")
    notes = pd.DataFrame({"subject_id": [1, 2, 3], "hadm_id": [4, 5, 6], "note_id": [7, 8, 9],
                          "text": ["Chief Complaint:\nfever", "Chief Complaint:\ncough", "Chief Complaint:\nrash"]})
    write_csv(notes, root / "mimic" / "notes_3.csv.gz")
    write_csv(notes.iloc[:0], root / "mimic" / "notes_0.csv.gz")
    write_csv(notes.assign(text=["", " ", ""]), root / "mimic" / "notes_blank.csv.gz")
    (root / "blocker").write_text("a file where a folder should be")
    prompts = pd.DataFrame({"id": ["a", "b", "c"], "label": ["Yes", "No", "NA"],
                            "prompt": ["Clinical note:\n<note>\nASA 81 mg\n</note>\n\nQuestion: aspirin?"] * 3})
    write_csv(prompts, root / "eval-data" / "mini" / "prompts.csv")
    write_csv(prompts.iloc[:0], root / "eval-data" / "empty" / "prompts.csv")
    write_csv(prompts.drop(columns="prompt"), root / "eval-data" / "noprompt" / "prompts.csv")
    write_csv(prompts.assign(output="x"), root / "answers-0-2" / "prompts_0_3_chunk_0.csv")
    rows = [{"id": "x", "prompt": [{"role": "user", "content": "q"}], "output": "a", "question_type": "yes_no",
             "subject_id": 1, "note_id": "1"}]
    for split in ("train", "test"):
        Dataset.from_list(rows).save_to_disk(str(root / "synthetic-raw" / f"{split}_all_1.arrow"))
        Dataset.from_list(rows).select([]).save_to_disk(str(root / "synthetic-raw" / f"{split}_all_2.arrow"))
    (root / "adapter-empty").mkdir()
    (root / "adapter-badjson").mkdir()
    (root / "adapter-badjson" / "adapter_config.json").write_text("{not json")
    (root / "adapter-ok").mkdir()  # as PEFT writes one: its settings and a safetensors file (header, no tensor)
    (root / "adapter-ok" / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": TINY}))
    (root / "adapter-ok" / "adapter_model.safetensors").write_bytes(b"\x02" + b"\x00" * 7 + b"{}")
    (root / "prompts-bad").mkdir()
    (root / "prompts-bad" / "answer.txt").write_text("Question: $question")
    (root / "prompts-bad" / "teacher_yes_no.txt").write_text("Note: $note. Unknown: $nonsense")
    (root / "bad.yaml").write_text("teacher: [unclosed\n")
    (root / "list.yaml").write_text("- a\n- b\n")
    (root / "run-dir").mkdir()
    (root / "simulated").mkdir()  # notes with a facts file that holds none of them (the reference teacher)
    shutil.copy(root / "mimic" / "notes_3.csv.gz", root / "simulated" / "notes_3.csv.gz")
    (root / "simulated" / "facts.jsonl.gz").write_bytes(gzip.compress(b""))
    _, chunks = make_stage_a_outputs(root)  # stage A's files for the notebook B cases, as dataset "annot"
    chunks.rename(chunks.with_name("annot"))
    (root / "mimic" / "latin-1.csv").write_bytes("note_id,text\n1,caf\xe9 au lait spots\n".encode("latin-1"))
    (root / "mimic" / "zero-bytes.csv").write_bytes(b"")
    return root


def snapshot(root):
    """Every file with its size and time, every folder by name: what "nothing written or changed" compares."""
    return {str(path): None if path.is_dir() else (path.stat().st_size, path.stat().st_mtime_ns)
            for path in sorted(root.rglob("*"))}


def D(work):
    return ["--data_dir", str(work)]


# (id, script, arguments (a function of the work folder), what the one line says)
CASES = [
    # ---- stage 0
    ("select-type-notes", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "abc", *D(w)], "--num_notes must be a whole number, got 'abc'"),
    ("select-fraction", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "2.5", *D(w)], "--num_notes must be a whole number, got 2.5"),
    ("select-zero", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "0", *D(w)], "--num_notes must be at least 1, got 0"),
    ("select-negative", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "-3", *D(w)], "--num_notes must be at least 1"),
    ("select-seed-type", SELECT, lambda w: ["--source", MIMIC_III, "--seed", "abc", *D(w)], "--seed must be a whole number"),
    ("select-missing-source", SELECT, lambda w: ["--source", str(w / "none.csv.gz"), "--num_notes", "2", *D(w)], "not found"),
    ("select-wrong-columns", SELECT, lambda w: ["--source", str(w / "mimic" / "notes_3.csv.gz"), "--num_notes", "2", *D(w)], "not a MIMIC-III NOTEEVENTS"),
    ("select-too-many", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "100000", *D(w)], "100000"),
    ("select-output-folder", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "2", "--output", str(w / "mimic"), *D(w)], "is a folder"),
    ("select-output-under-file", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "2", "--output", str(w / "blocker" / "n.csv.gz"), *D(w)], "blocker"),
    ("select-unknown", SELECT, lambda w: ["--source", MIMIC_III, "--foo", "1", *D(w)], "unknown flag --foo"),
    ("select-misspelt", SELECT, lambda w: ["--source", MIMIC_III, "--num_note", "5", *D(w)], "did you mean --num_notes?"),
    ("select-positional", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "2", "extra", *D(w)], "unexpected argument 'extra'"),
    ("select-exclude-missing", SELECT, lambda w: ["--source", MIMIC_III, "--num_notes", "2", "--exclude_subjects", str(w / "nobody.csv"), *D(w)], "not found"),
    ("select-bool", SELECT, lambda w: ["--source", MIMIC_III, "--overwrite", "maybe", *D(w)], "--overwrite must be true or false"),
    # ---- stage A
    ("create-misspelt", CREATE, lambda w: ["--dataset", "3", "--max_token", "2", *D(w)], "unknown flag --max_token; did you mean --max_tokens?"),
    ("create-unknown", CREATE, lambda w: ["--dataset", "3", "--foo", *D(w)], "unknown flag --foo"),
    ("create-limit-type", CREATE, lambda w: ["--dataset", "3", "--limit", "abc", *D(w)], "--limit must be a whole number or None, got 'abc'"),
    ("create-limit-zero", CREATE, lambda w: ["--dataset", "3", "--limit", "0", *D(w)], "--limit must be at least 1, got 0"),
    ("create-limit-negative", CREATE, lambda w: ["--dataset", "3", "--limit", "-1", *D(w)], "--limit must be at least 1, got -1"),
    ("create-chunk-type", CREATE, lambda w: ["--dataset", "3", "--chunk_size", "abc", *D(w)], "--chunk_size must be a whole number"),
    ("create-chunk-zero", CREATE, lambda w: ["--dataset", "3", "--chunk_size", "0", *D(w)], "--chunk_size must be at least 1"),
    ("create-k-zero", CREATE, lambda w: ["--dataset", "3", "--questions_per_type", "0", *D(w)], "--questions_per_type must be at least 1"),
    ("create-k-negative", CREATE, lambda w: ["--dataset", "3", "--questions_per_type", "-3", *D(w)], "--questions_per_type must be at least 1"),
    ("create-tokens-zero", CREATE, lambda w: ["--dataset", "3", "--max_tokens", "0", *D(w)], "--max_tokens must be at least 1"),
    ("create-tokens-negative", CREATE, lambda w: ["--dataset", "3", "--max_tokens", "-1", *D(w)], "--max_tokens must be at least 1"),
    ("create-temperature", CREATE, lambda w: ["--dataset", "3", "--temperature", "-1", *D(w)], "--temperature must be at least 0"),
    ("create-top-p-zero", CREATE, lambda w: ["--dataset", "3", "--top_p", "0", *D(w)], "--top_p must be more than 0"),
    ("create-top-p-two", CREATE, lambda w: ["--dataset", "3", "--top_p", "2", *D(w)], "--top_p must be at most 1"),
    ("create-batch-negative", CREATE, lambda w: ["--dataset", "3", "--batch_size", "-1", *D(w)], "--batch_size must be at least 1"),
    ("create-batch-zero", CREATE, lambda w: ["--dataset", "3", "--batch_size", "0", *D(w)], "--batch_size must be at least 1"),
    ("create-reference-no-facts", CREATE, lambda w: ["--dataset", "3", "--model_id", "reference", *D(w)], "the reference teacher writes about the notes of a corpus written by python -m simulation.corpus"),
    ("create-reference-other-notes", CREATE, lambda w: ["--dataset", "3", "--model_id", "reference", "--notes_file", str(w / "simulated" / "notes_3.csv.gz"), *D(w)], "3 note(s) are not in"),
    ("create-qtype", CREATE, lambda w: ["--dataset", "3", "--qtypes", "yes_no,essay", *D(w)], "unknown question type(s) essay"),
    ("create-engine", CREATE, lambda w: ["--dataset", "3", "--engine", "gpt", *D(w)], "--engine must be one of auto, vllm, transformers"),
    ("create-dtype", CREATE, lambda w: ["--dataset", "3", "--dtype", "int8", *D(w)], "--dtype must be one of"),
    ("create-shards-zero", CREATE, lambda w: ["--dataset", "3", "--num_shards", "0", *D(w)], "--num_shards must be at least 1"),
    ("create-shard-index", CREATE, lambda w: ["--dataset", "3", "--num_shards", "2", "--shard_index", "2", *D(w)], "--shard_index must be in 0..1"),
    ("create-retries", CREATE, lambda w: ["--dataset", "3", "--retries", "-1", *D(w)], "--retries must be at least 0"),
    ("create-start-row", CREATE, lambda w: ["--dataset", "3", "--start_row", "1000", "--model_id", TINY, *D(w)], "--start_row 1000 is outside the notes table"),
    ("create-notes-missing", CREATE, lambda w: ["--dataset", "9", *D(w)], "notes file not found"),
    ("create-notes-header-only", CREATE, lambda w: ["--dataset", "0", "--model_id", TINY, *D(w)], "has no note to ask about"),
    ("create-notes-blank", CREATE, lambda w: ["--dataset", "blank", "--model_id", TINY, *D(w)], "has no note to ask about"),
    ("create-output-file", CREATE, lambda w: ["--dataset", "3", "--model_id", TINY, "--output_dir", str(w / "blocker"), *D(w)], "is a file, not a folder"),
    ("create-model-missing", CREATE, lambda w: ["--dataset", "3", "--model_id", str(w / "no-model"), "--engine", "transformers", *D(w)], "is not a model folder"),
    ("create-positional", CREATE, lambda w: ["--dataset", "3", "yes", *D(w)], "unexpected argument 'yes'"),
    ("create-prompt-dir-missing", CREATE, lambda w: ["--dataset", "3", "--prompt_dir", str(w / "nowhere"), *D(w)], "is not a folder"),
    ("create-prompt-dir-bad", CREATE, lambda w: ["--dataset", "3", "--prompt_dir", str(w / "prompts-bad"), *D(w)], "lacks $note"),
    ("create-bool", CREATE, lambda w: ["--dataset", "3", "--structured_output", "maybe", *D(w)], "--structured_output must be true or false"),
    ("create-notes-file-missing", CREATE, lambda w: ["--notes_file", str(w / "none.csv"), *D(w)], "not found"),
    # ---- eval-inference
    ("eval-misspelt", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--num_inferences", "1", *D(w)], "did you mean --num_inference?"),
    ("eval-rows-type", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--num_inference", "abc", *D(w)], "--num_inference must be a whole number or 'all'"),
    ("eval-rows-zero", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--num_inference", "0", *D(w)], "--num_inference must be at least 1"),
    ("eval-tokens-zero", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--max_output_tokens", "0", *D(w)], "--max_output_tokens must be at least 1"),
    ("eval-tokens-negative", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--max_output_tokens", "-5", *D(w)], "--max_output_tokens must be at least 1"),
    ("eval-top-p", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--top_p", "0", *D(w)], "--top_p must be more than 0"),
    ("eval-batch-zero", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--batch_size", "0", *D(w)], "--batch_size must be at least 1"),
    ("eval-chunk-zero", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--chunk_size", "0", *D(w)], "--chunk_size must be at least 1"),
    ("eval-temperature", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--temperature", "-0.5", *D(w)], "--temperature must be at least 0"),
    ("eval-start-negative", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--start_row", "-1", *D(w)], "--start_row must be at least 0"),
    ("eval-file-missing", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "test", *D(w)], "not found"),
    ("eval-header-only", EVAL, lambda w: ["--dataset_name", "empty", "--input_file", "prompts", "--model_id", TINY, *D(w)], "has no row to answer"),
    ("eval-output-file", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--model_id", TINY, "--output_dir", str(w / "blocker"), *D(w)], "is a file, not a folder"),
    ("eval-model-missing", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--model_id", str(w / "no-model"), "--output_dir", str(w / "o1"), *D(w)], "is not a model folder"),
    ("eval-adapter-empty", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--model_id", TINY, "--adapter", str(w / "adapter-empty"), "--output_dir", str(w / "o2"), *D(w)], "adapter folder has no adapter_config.json"),
    ("eval-adapter-float32-vllm", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--model_id", TINY, "--adapter", str(w / "adapter-ok"), "--engine", "vllm", "--dtype", "float32", "--output_dir", str(w / "o3"), *D(w)], "vLLM serves adapters in bfloat16 or float16 only"),
    ("eval-shard-index", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--num_shards", "2", "--shard_index", "3", *D(w)], "--shard_index must be in 0..1"),
    ("eval-dtype", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--dtype", "bogus", *D(w)], "--dtype must be one of"),
    ("eval-positional", EVAL, lambda w: ["--dataset_name", "mini", "prompts", *D(w)], "unexpected argument 'prompts'"),
    ("eval-no-prompt-column", EVAL, lambda w: ["--dataset_name", "noprompt", "--input_file", "prompts", *D(w)], "lacks column(s) prompt"),
    ("eval-stale-rows", EVAL, lambda w: ["--dataset_name", "mini", "--input_file", "prompts", "--num_inference", "1", "--model_id", TINY, "--output_dir", str(w / "answers-0-2"), *D(w)], "outside the rows asked for"),
    ("eval-unknown", EVAL, lambda w: ["--dataset_name", "mini", "--bogus", "1", *D(w)], "unknown flag --bogus"),
    # ---- finetune
    ("ft-steps-type", FINETUNE, lambda w: ["--max_steps", "abc", *D(w)], "--max_steps must be a whole number"),
    ("ft-steps-zero", FINETUNE, lambda w: ["--max_steps", "0", *D(w)], "--max_steps must be -1"),
    ("ft-compile-liger", FINETUNE, lambda w: ["--compile_layers", "True", "--fused_kernels", "True", *D(w)],
     "--compile_layers and --fused_kernels True do not combine"),
    ("ft-epochs-zero", FINETUNE, lambda w: ["--num_train_epochs", "0", *D(w)], "--num_train_epochs must be more than 0"),
    ("ft-epochs-negative", FINETUNE, lambda w: ["--num_train_epochs", "-1", *D(w)], "--num_train_epochs must be more than 0"),
    ("ft-save-steps", FINETUNE, lambda w: ["--save_steps", "0", *D(w)], "--save_steps must be at least 1"),
    ("ft-batch", FINETUNE, lambda w: ["--per_device_train_batch_size", "0", *D(w)], "--per_device_train_batch_size must be at least 1"),
    ("ft-accumulation", FINETUNE, lambda w: ["--gradient_accumulation_steps", "0", *D(w)], "--gradient_accumulation_steps must be at least 1"),
    ("ft-learning-rate", FINETUNE, lambda w: ["--learning_rate", "-1", *D(w)], "--learning_rate must be more than 0"),
    ("ft-rank", FINETUNE, lambda w: ["--lora_r", "0", *D(w)], "--lora_r must be at least 1"),
    ("ft-report-to", FINETUNE, lambda w: ["--report_to", "bogus", *D(w)], "--report_to must be one of none, wandb"),
    ("ft-logging", FINETUNE, lambda w: ["--logging_steps", "0", *D(w)], "--logging_steps must be at least 1"),
    ("ft-resume-missing", FINETUNE, lambda w: ["--model_id", TINY, "--min_difficulty", "1", "--output_dir", str(w / "run-dir"), "--resume_from_checkpoint", str(w / "no-checkpoint"), *D(w)], "is not a folder"),
    ("ft-resume-last-none", FINETUNE, lambda w: ["--model_id", TINY, "--min_difficulty", "1", "--output_dir", str(w / "run-dir"), "--resume_from_checkpoint", "last", *D(w)], "no complete checkpoint"),
    ("ft-empty-data", FINETUNE, lambda w: ["--model_id", TINY, "--min_difficulty", "2", "--output_dir", str(w / "r2"), *D(w)], "holds no example"),
    ("ft-missing-data", FINETUNE, lambda w: ["--model_id", TINY, "--min_difficulty", "3", "--output_dir", str(w / "r3"), *D(w)], "training data not found"),
    ("ft-output-file", FINETUNE, lambda w: ["--model_id", TINY, "--min_difficulty", "1", "--output_dir", str(w / "blocker"), *D(w)], "is a file, not a folder"),
    ("ft-input-file", FINETUNE, lambda w: ["--input_file", "numeric", *D(w)], "--input_file must be one of all, bool, bool_num"),
    ("ft-difficulty", FINETUNE, lambda w: ["--min_difficulty", "10", *D(w)], "--min_difficulty must be at most 9"),
    ("ft-sampling", FINETUNE, lambda w: ["--train_sampling_strategy", "shortest", *D(w)], "--train_sampling_strategy must be one of"),
    ("ft-unknown", FINETUNE, lambda w: ["--foo", "1", *D(w)], "unknown flag --foo"),
    ("ft-model-missing", FINETUNE, lambda w: ["--model_id", str(w / "no-model"), *D(w)], "is not a model folder"),
    ("ft-bool", FINETUNE, lambda w: ["--load_in_4bit", "maybe", *D(w)], "--load_in_4bit must be true or false or None"),
    ("ft-positional", FINETUNE, lambda w: ["all", *D(w)], "unexpected argument 'all'"),
    # ---- stage E
    ("merge-no-adapter", MERGE, lambda w: [], "pass --adapter_dir"),
    ("merge-adapter-empty", MERGE, lambda w: ["--adapter_dir", str(w / "adapter-empty"), "--output_dir", str(w / "m1")], "no adapter_config.json"),
    ("merge-adapter-badjson", MERGE, lambda w: ["--adapter_dir", str(w / "adapter-badjson"), "--output_dir", str(w / "m2")], "is not JSON"),
    ("merge-dtype", MERGE, lambda w: ["--adapter_dir", str(w / "adapter-badjson"), "--dtype", "bogus"], "--dtype must be one of bfloat16, float16, float32"),
    ("merge-dtype-int8", MERGE, lambda w: ["--adapter_dir", str(w / "adapter-badjson"), "--dtype", "int8"], "--dtype must be one of"),
    ("merge-unknown", MERGE, lambda w: ["--adapter", str(w / "adapter-badjson")], "did you mean --adapter_dir?"),
    # ---- the driver
    ("driver-section-misspelt", DRIVER, lambda w: ["--notes", MIMIC_III, "--create", "{max_tokenz: 1}", *D(w)], "did you mean --max_tokens?"),
    ("driver-notes-missing", DRIVER, lambda w: ["--notes", str(w / "none.csv.gz"), *D(w)], "notes file not found"),
    ("driver-stage", DRIVER, lambda w: ["--notes", MIMIC_III, "--from_stage", "train", *D(w)], "unknown stage 'train'"),
    ("driver-stage-order", DRIVER, lambda w: ["--notes", MIMIC_III, "--from_stage", "evaluate", "--to_stage", "finetune", *D(w)], "comes after"),
    ("driver-task", DRIVER, lambda w: ["--notes", MIMIC_III, "--tasks", "i2b2,mimic", *D(w)], "unknown evaluation task 'mimic'"),
    ("driver-config-missing", DRIVER, lambda w: ["--config", str(w / "none.yaml"), *D(w)], "config file not found"),
    ("driver-config-not-yaml", DRIVER, lambda w: ["--config", str(w / "bad.yaml"), *D(w)], "is not valid YAML"),
    ("driver-config-list", DRIVER, lambda w: ["--config", str(w / "list.yaml"), *D(w)], "must hold a mapping"),
    ("driver-difficulty", DRIVER, lambda w: ["--notes", MIMIC_III, "--min_difficulty", "10", *D(w)], "--min_difficulty must be at most 9"),
    ("driver-unknown", DRIVER, lambda w: ["--notes", MIMIC_III, "--foo", "1", *D(w)], "unknown flag --foo"),
    ("driver-moved", DRIVER, lambda w: ["--notes", MIMIC_III, "--generation_max_tokens", "5", *D(w)], "unknown flag --generation_max_tokens"),
    ("driver-finetune-range", DRIVER, lambda w: ["--notes", MIMIC_III, "--finetune", "{max_steps: 0}", *D(w)], "--max_steps must be -1"),
    ("driver-eval-key", DRIVER, lambda w: ["--notes", MIMIC_III, "--eval", "{i2b2: {rows: 3}}", *D(w)], "eval: i2b2 takes a mapping"),
    ("driver-owned", DRIVER, lambda w: ["--notes", MIMIC_III, "--finetune", "{output_dir: x}", *D(w)], "finetune.output_dir is set by the run"),
    ("driver-positional", DRIVER, lambda w: ["--notes", MIMIC_III, "go", *D(w)], "unexpected argument 'go'"),
    ("driver-gpus", DRIVER, lambda w: ["--notes", MIMIC_III, "--num_gpus", "-1", *D(w)], "--num_gpus must be at least 0"),
]


@pytest.mark.parametrize("script, arguments, message", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_bad_input_is_one_line_exit_2_and_nothing_written(work, script, arguments, message):
    before = snapshot(work)
    result = run_script(script, *arguments(work), env={"CLINICAL_DISTIL_DATA": str(work)})
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert message in lines[0], lines[0]
    assert snapshot(work) == before


def test_the_table_is_broad():
    assert len(CASES) + len(NOTEBOOK_CASES) >= 100
    assert {case[1] for case in CASES} == {SELECT, CREATE, EVAL, FINETUNE, MERGE, DRIVER}


# ---- the notebooks: their parameters checked in the cell after `parameters`, with the same messages

NOTEBOOK_CASES = [
    ("b-threshold", "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
     {"dataset": "3", "fuzzy_threshold": "abc"}, "--fuzzy_threshold must be a number, got 'abc'"),
    ("b-threshold-range", "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
     {"dataset": "3", "fuzzy_threshold": 120}, "--fuzzy_threshold must be at most 100"),
    ("b-unknown", "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
     {"datset": "3"}, "unknown parameter datset; did you mean --dataset?"),
    ("b-no-chunks", "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
     {"dataset": "3"}, "no stage A chunk files"),
    ("b-notes-missing", "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
     {"dataset": "annot"}, "notes file not found"),
    ("b-notes-header-only", "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
     {"dataset": "annot", "notes_file": "{work}/mimic/notes_0.csv.gz"}, "has no note to join the items to"),
    ("b-notes-not-utf8", "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
     {"dataset": "annot", "notes_file": "{work}/mimic/latin-1.csv"}, "cannot read notes file"),
    ("b-notes-zero-bytes", "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
     {"dataset": "annot", "notes_file": "{work}/mimic/zero-bytes.csv"}, "cannot read notes file"),
    ("c-test-size-zero", "a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb",
     {"test_size": 0}, "--test_size must be more than 0"),
    ("c-test-size-large", "a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb",
     {"test_size": 1.5}, "--test_size must be at most 0.9"),
    ("c-per-type", "a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb",
     {"per_type": -1}, "--per_type must be at least 1"),
    ("c-combo", "a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb",
     {"combo": "bool"}, "unknown parameter combo (the parameters cell lists them)"),
    ("c-tokenizer", "a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb",
     {"tokenizer": "/nowhere/tokenizer", "min_difficulty": 5}, "is not a model folder"),
    ("c-no-stage-b", "a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb",
     {"min_difficulty": 9}, "stage B file not found"),
    ("c-seed", "a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb",
     {"seed": "abc"}, "--seed must be a whole number, got 'abc'"),
    ("annotated-missing", "b-synthetic-eval-task/annotated_synthetic-a-preprocess.ipynb",
     {"input_dir": "{work}/nowhere"}, "nowhere"),
    ("i2b2-missing-split", "c-i2b2-eval-task/i2b2-a-preprocess.ipynb",
     {"input_dir": str(SAMPLES / "n2c2-2018-track1"), "splits": ["train", "dev"]}, "dev"),
    ("apixaban-missing", "d-apixaban-eval-task/apixaban-a-preprocess.ipynb",
     {"input_dir": "nowhere"}, "no apixaban CSV files"),
    ("evaluate-resamples", "d-apixaban-eval-task/apixaban-b-evaluate-performance.ipynb",
     {"resamples": 0}, "--resamples must be at least 1"),
    ("evaluate-model-missing", "c-i2b2-eval-task/i2b2-b-evaluate-performance.ipynb",
     {"models": "nobody"}, "no outputs for model nobody"),
    ("evaluate-no-answers", "b-synthetic-eval-task/annotated_synthetic-b-evaluate-performance.ipynb",
     {}, "no model output folders"),
]


@pytest.mark.slow  # a kernel per case
@pytest.mark.parametrize("notebook, parameters, message", [pytest.param(*case[1:], id=case[0])
                                                          for case in NOTEBOOK_CASES])
def test_bad_notebook_parameters_stop_in_one_line_with_nothing_written(work, tmp_path, notebook, parameters, message):
    before = snapshot(work)
    path = REPO_ROOT / notebook
    parameters = {key: value.format(work=work) if isinstance(value, str) else value
                  for key, value in parameters.items()}
    with pytest.raises(papermill.PapermillExecutionError) as failure:
        papermill.execute_notebook(str(path), str(tmp_path / path.name), parameters={"data_dir": str(work),
                                                                                     **parameters},
                                   kernel_name="python3", progress_bar=False)
    assert failure.value.ename == "InputError" and message in failure.value.evalue, failure.value.evalue
    assert len(failure.value.evalue.strip().splitlines()) == 1
    assert snapshot(work) == before
    assert os.listdir(tmp_path) == [path.name]  # only papermill's copy of the notebook
    json.loads((tmp_path / path.name).read_text())
