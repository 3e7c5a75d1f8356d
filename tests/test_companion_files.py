"""Companion files and values that make no sense, refused before any model loads (issue 35, items 5, 7, 8).

Every refusal runs with a model folder whose weights fail if they are read (its tokenizer and config are
real, its model.safetensors is not): a refusal that came after loading would end in a traceback, not in
one line and exit code 2. Stage E never replaces a folder that does not hold a merged model of this project.
"""

import gzip
import json
import random
import shutil
import struct

import pandas as pd
import pytest

from clinical_distil import convert_peft, prompts
from clinical_distil.files import InputError, write_csv
from clinical_distil.layout import REPO_ROOT

from conftest import run_script
from test_bad_input import CREATE, EVAL, FINETUNE, MERGE, SELECT, snapshot

SMOL = REPO_ROOT / "models" / "SmolLM2-135M-Instruct"
# stage E's record of a merge, as it writes it: the on-disk mark of a merged model of this project
MERGE_WRITER = "clinical_distil stage E (synthetic-e-convert-peft.py)"
RUN_FILES = ["final/adapter_config.json", "final/adapter_model.safetensors", "final/tokenizer_config.json",
             "checkpoint-2/adapter_config.json", "checkpoint-2/adapter_model.safetensors", "training_summary.json"]


def unreadable_model(folder):
    """A model folder whose tokenizer and config are SmolLM2's and whose weights are not weights."""
    folder.mkdir(parents=True)
    for name in ("config.json", "generation_config.json", "tokenizer.json", "tokenizer_config.json",
                 "chat_template.jinja"):
        shutil.copy(SMOL / name, folder / name)
    (folder / "model.safetensors").write_bytes(b"not weights: reading this file fails\n" * 4)
    return folder


def adapter(folder, config=None, weights=b"{}", tokenizer=True):
    """An adapter folder as finetune.py writes one (adapter_config.json, a safetensors file, a tokenizer)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text(config if isinstance(config, str) else json.dumps(config))
    if weights is not None:
        (folder / "adapter_model.safetensors").write_bytes(struct.pack("<Q", len(weights)) + weights
                                                           if weights.startswith(b"{") else weights)
    if tokenizer:
        (folder / "tokenizer_config.json").write_text("{}")
    return folder


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    from datasets import Dataset

    root = tmp_path_factory.mktemp("companion")
    model = unreadable_model(root / "unreadable-model")
    base = {"base_model_name_or_path": str(model), "peft_type": "LORA", "r": 8}
    for folder in ("final", "checkpoint-2"):
        adapter(root / "run" / folder, base, tokenizer=folder == "final")
    (root / "run" / "training_summary.json").write_text("{}")
    adapter(root / "adapter-list", [base])
    adapter(root / "adapter-badjson", "{not json")
    adapter(root / "adapter-noweights", base, weights=None)
    adapter(root / "adapter-cut", base, weights=b"\x10\x00\x00\x00\x00\x00\x00\x00{\"a\"")
    adapter(root / "adapter-nobase", {**base, "base_model_name_or_path": str(root / "deleted-base")})
    (root / "mine").mkdir()
    (root / "mine" / "notes.txt").write_text("one's own files")
    merged = root / "merged"
    merged.mkdir()
    (merged / "config.json").write_text("{}")
    (merged / "merge.json").write_text(json.dumps({"written_by": MERGE_WRITER}))
    notes = pd.DataFrame({"subject_id": [1, 2, 3], "hadm_id": [4, 5, 6], "note_id": [7, 8, 7],
                          "text": ["Chief Complaint:\nfever", "Chief Complaint:\ncough", "Chief Complaint:\nrash"]})
    write_csv(notes, root / "mimic" / "notes_repeated.csv.gz")
    write_csv(notes.assign(note_id=[7, 8, 9]), root / "mimic" / "notes_3.csv.gz")
    rng = random.Random(0)  # bytes of every value below 128: control characters in the header row too
    (root / "random.csv").write_bytes(bytes(rng.getrandbits(7) for _ in range(2000)))
    (root / "mimic" / "notes_random.csv.gz").write_bytes(gzip.compress(bytes(rng.getrandbits(8) for _ in range(2000))))
    question = prompts.answer_messages("ASA 81 mg daily", "Is the patient on aspirin?")
    write_csv(pd.DataFrame({"id": ["a", "b"], "prompt": [question[-1]["content"]] * 2}),
              root / "eval-data" / "mini" / "prompts.csv")
    rows = [{"id": "x", "prompt": question, "output": '{"answer": "Yes"}', "question_type": "yes_no",
             "subject_id": 1, "note_id": "1"}]
    for split in ("train", "test"):
        Dataset.from_list(rows).save_to_disk(str(root / "synthetic-raw" / f"{split}_all_1.arrow"))
        Dataset.from_list([{k: v for k, v in row.items() if k != "output"} for row in rows]).save_to_disk(
            str(root / "synthetic-raw" / f"{split}_all_2.arrow"))
    return root


def M(work):
    return str(work / "unreadable-model")


def D(work):
    return ["--data_dir", str(work)]


# (id, script, arguments (a function of the work folder), what the one line says)
CASES = [
    # ---- item 5: stage E replaces only an earlier merge, and only with --overwrite
    ("merge-into-its-run", MERGE, lambda w: ["--adapter_dir", str(w / "run" / "final"), "--output_dir", str(w / "run")],
     "--output_dir {w}/run is a fine-tuning run's folder (final, training_summary.json, checkpoint-2); a merge "
     "replaces only an earlier merge (with --overwrite): give a new --output_dir"),
    ("merge-into-its-run-overwrite", MERGE, lambda w: ["--adapter_dir", str(w / "run" / "final"), "--output_dir",
                                                       str(w / "run"), "--overwrite"], "is a fine-tuning run's folder"),
    ("merge-into-other-folder-overwrite", MERGE, lambda w: ["--adapter_dir", str(w / "run" / "final"), "--output_dir",
                                                            str(w / "mine"), "--overwrite"],
     "--output_dir {w}/mine is a folder that holds no merged model of this project (no merge.json of stage E)"),
    ("merge-into-a-base-model-overwrite", MERGE, lambda w: ["--adapter_dir", str(w / "run" / "final"), "--output_dir",
                                                            M(w), "--overwrite"],
     "holds no merged model of this project"),
    ("merge-over-a-merge", MERGE, lambda w: ["--adapter_dir", str(w / "run" / "final"), "--output_dir",
                                             str(w / "merged")],
     "{w}/merged exists and holds a merged model; pass --overwrite to replace it"),
    # ---- item 7: adapters, base models, training sets, contexts
    ("merge-adapter-list", MERGE, lambda w: ["--adapter_dir", str(w / "adapter-list"), "--output_dir", str(w / "m1")],
     "{w}/adapter-list/adapter_config.json holds a JSON list, not the object of LoRA settings PEFT writes"),
    ("merge-adapter-no-weights", MERGE, lambda w: ["--adapter_dir", str(w / "adapter-noweights"), "--output_dir",
                                                   str(w / "m2")],
     "adapter folder {w}/adapter-noweights has no adapter weights (adapter_model.safetensors or adapter_model.bin)"),
    ("merge-base-missing", MERGE, lambda w: ["--adapter_dir", str(w / "adapter-nobase"), "--output_dir", str(w / "m3")],
     "the base model (from {w}/adapter-nobase/adapter_config.json) {w}/deleted-base is not a model folder (no "
     "config.json in {w}/deleted-base); give a folder holding a model or a hub id"),
    ("eval-adapter-not-json", EVAL, lambda w: ["--model_id", M(w), "--adapter", str(w / "adapter-badjson"),
                                               "--dataset_name", "mini", "--input_file", "prompts", *D(w)],
     "{w}/adapter-badjson/adapter_config.json is not JSON"),
    ("eval-adapter-list", EVAL, lambda w: ["--model_id", M(w), "--adapter", str(w / "adapter-list"), "--dataset_name",
                                           "mini", "--input_file", "prompts", *D(w)], "holds a JSON list"),
    ("eval-adapter-cut-weights", EVAL, lambda w: ["--model_id", M(w), "--adapter", str(w / "adapter-cut"),
                                                  "--dataset_name", "mini", "--input_file", "prompts", *D(w)],
     "{w}/adapter-cut/adapter_model.safetensors is not a readable safetensors file"),
    ("eval-context-below-prompt", EVAL, lambda w: ["--model_id", M(w), "--max_model_len", "300", "--max_output_tokens",
                                                   "100", "--dataset_name", "mini", "--input_file", "prompts", *D(w)],
     "--max_model_len 300 is below the prompt: with --max_output_tokens 100, 200 tokens are left for a prompt of "),
    ("create-context-below-prompt", CREATE, lambda w: ["--model_id", M(w), "--dataset", "3", "--max_model_len", "600",
                                                       "--max_tokens", "100", *D(w)],
     "--max_model_len 600 is below the prompt: with --max_tokens 100, 500 tokens are left for a prompt of "),
    ("ft-no-output-column", FINETUNE, lambda w: ["--model_id", M(w), "--min_difficulty", "2", "--output_dir",
                                                 str(w / "r1"), *D(w)],
     "training data {w}/synthetic-raw/train_all_2.arrow lacks column(s) output"),
    ("ft-max-seq-length-over-a-run", FINETUNE, lambda w: ["--model_id", M(w), "--min_difficulty", "1", "--output_dir",
                                                          str(w / "run"), "--overwrite", "--max_seq_length", "100",
                                                          *D(w)],
     "--max_seq_length 100 is too small: the instructions and the response of an example leave no room for its note"),
    ("ft-prompt-dir-missing", FINETUNE, lambda w: ["--model_id", M(w), "--min_difficulty", "1", "--prompt_dir",
                                                   str(w / "nowhere"), "--output_dir", str(w / "r3"), *D(w)],
     "--prompt_dir {w}/nowhere is not a folder"),
    # ---- item 8: values that would run and make no sense
    ("eval-temperature-inf", EVAL, lambda w: ["--model_id", M(w), "--temperature", "inf", "--dataset_name", "mini",
                                              "--input_file", "prompts", *D(w)],
     "--temperature must be a finite number, got inf"),
    ("create-temperature-nan", CREATE, lambda w: ["--model_id", M(w), "--dataset", "3", "--temperature", "nan", *D(w)],
     "--temperature must be a number, got 'nan'"),
    ("create-repeated-note-ids", CREATE, lambda w: ["--model_id", M(w), "--dataset", "repeated", *D(w)],
     "{w}/mimic/notes_repeated.csv.gz repeats note_id 7 (rows 0, 2): give every note its own note_id"),
    ("create-random-bytes", CREATE, lambda w: ["--model_id", M(w), "--dataset", "random", *D(w)],
     "cannot read notes file {w}/mimic/notes_random.csv.gz"),
    ("select-random-bytes", SELECT, lambda w: ["--source", str(w / "random.csv"), "--num_notes", "1", *D(w)],
     "not a MIMIC-III NOTEEVENTS (ROW_ID, CATEGORY, TEXT, ...) or MIMIC-IV-Note discharge"),
]


@pytest.mark.parametrize("script, arguments, message", [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_refused_in_one_line_before_the_model_loads_with_nothing_written(work, script, arguments, message):
    before = snapshot(work)
    result = run_script(script, *arguments(work))
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2, result.stderr[-2000:]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr[-2000:]
    assert message.format(w=work) in lines[0], lines[0]
    assert snapshot(work) == before


def test_the_run_a_merge_was_pointed_at_is_whole(work):
    """The refusals above left every file of the fine-tuning run where it was (snapshot compares sizes and
    times; this names them)."""
    assert sorted(str(path.relative_to(work / "run")) for path in (work / "run").rglob("*") if path.is_file()) == \
        sorted(RUN_FILES)


def test_the_model_of_these_cases_fails_when_its_weights_are_read(work):
    """What makes the refusals above provably before loading: this folder's tokenizer reads, its model does not."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    assert AutoTokenizer.from_pretrained(M(work)).chat_template
    with pytest.raises(Exception, match="header"):
        AutoModelForCausalLM.from_pretrained(M(work))


def test_the_context_check_names_the_length_that_fits(work):
    """The context a refusal asks for is the one the note's shortening (chat.fit_note) then works with, and one
    token less is refused by both."""
    from transformers import AutoTokenizer

    from clinical_distil.eval_inference import check_context, fit_prompts

    tokenizer = AutoTokenizer.from_pretrained(M(work))
    prompt = prompts.answer_messages("Creatinine 1.4 on admission. " * 200, "Highest creatinine?")[-1]["content"]
    with pytest.raises(InputError) as refused:
        check_context(tokenizer, [prompt], 300, 100)
    enough = int(str(refused.value).split("at least ")[1].split()[0])
    check_context(tokenizer, [prompt], enough, 100)
    fitted = fit_prompts(tokenizer, [prompt], enough - 100)[0]
    assert fitted.note_truncated and len(fitted.prompt_ids) <= enough - 100
    with pytest.raises(InputError, match=f"--max_model_len {enough - 1} is below the prompt"):
        check_context(tokenizer, [prompt], enough - 1, 100)
    with pytest.raises(InputError, match="the instructions alone take"):
        fit_prompts(tokenizer, [prompt], enough - 1 - 100)


@pytest.mark.parametrize("folder, expected", [
    ("merged", True), ("run", False), ("mine", False), ("unreadable-model", False), ("nowhere", False)])
def test_a_merged_model_of_this_project_is_known_by_its_merge_record(work, folder, expected):
    assert convert_peft.is_merged_model(work / folder) is expected


def test_a_model_card_alone_does_not_make_a_merge(tmp_path):
    """Only stage E's merge.json marks a folder --overwrite may replace; a copied model card does not."""
    (tmp_path / "config.json").write_text("{}")
    (tmp_path / "README.md").write_text(convert_peft.model_card(tmp_path / "final", {
        "base_model": "base", "dtype": "bfloat16", "max_logit_difference": 0.0, "tolerance": 1e-3,
        "same_top_token": True}))
    assert not convert_peft.is_merged_model(tmp_path)
    with pytest.raises(InputError, match="holds no merged model of this project"):
        convert_peft.check_merge_target(tmp_path, overwrite=True)


@pytest.mark.parametrize("flag, value", [("temperature", "inf"), ("temperature", "-inf"), ("top_p", "inf"),
                                         ("retry_temperature", "inf"), ("retry_frequency_penalty", "1e999")])
def test_no_number_flag_takes_an_infinity(flag, value):
    from clinical_distil.stages import CreateSettings, EvalInferenceSettings, N2c2EvaluateSettings

    settings = CreateSettings if flag.startswith("retry") else EvalInferenceSettings
    with pytest.raises(InputError, match=f"^--{flag} must be "):
        settings.from_values({flag: value})
    # the one number where infinity means something: the paper's open-ended HbA1c range
    assert N2c2EvaluateSettings.from_values({"hba1c_high": "inf"}).hba1c_high == float("inf")
