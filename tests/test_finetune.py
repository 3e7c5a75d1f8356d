"""finetune.py on CPU: completion-only loss masking, the 4-bit and full-precision paths, resume, errors."""

import copy
import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from datasets import Dataset
from peft import LoraConfig
from transformers import AutoModelForCausalLM, AutoTokenizer
from trl import SFTConfig, SFTTrainer

from clinical_distil import chat, convert_peft, finetune, layout, post_process, prep_training, speedups, training_folder
from clinical_distil.files import read_csv
from clinical_distil.create import read_chunks

from conftest import (REPO, SAMPLES, holds_lock, kill_when, lora_directional_derivative, make_stage_a_outputs,
                      run_script, start_script, wait_for)

ANSWER = '```json\n{"question": "Is the patient on aspirin?", "type": "boolean", "answer": "Yes"}\n```'


def masked_text(tokenizer, model_dir):
    """What the real TRL collator leaves in the labels for one prompt-completion example."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    model.resize_token_embeddings(len(tokenizer))
    example = {"prompt": [{"role": "system", "content": "You extract facts."},
                          {"role": "user", "content": "Note: aspirin 81 mg daily. Question: on aspirin?"}],
               "completion": [{"role": "assistant", "content": ANSWER}]}
    trainer = SFTTrainer(model=model, args=SFTConfig(output_dir="/tmp/unused", report_to="none", use_cpu=True,
                                                     max_length=512),
                         train_dataset=Dataset.from_list([example]), processing_class=tokenizer,
                         peft_config=LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM"))
    batch = trainer.data_collator([trainer.train_dataset[0]])
    labels = batch["labels"][0]
    return tokenizer.decode(batch["input_ids"][0][labels != -100])


def test_loss_covers_only_the_assistant_message_smollm2_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    finetune.prepare_tokenizer(tokenizer)
    assert tokenizer.pad_token != tokenizer.eos_token
    assert masked_text(tokenizer, tiny_model_dir) == ANSWER + "<|im_end|>\n"  # the template's newline follows


def test_loss_covers_only_the_assistant_message_llama3_template(tiny_model_dir):
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    tokenizer = copy.deepcopy(tokenizer)
    tokenizer.chat_template = None  # a base model without a template or pad token, as Llama-3.1-8B
    tokenizer.pad_token = None
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|start_header_id|>", "<|end_header_id|>",
                                                                "<|eot_id|>", "<|finetune_right_pad_id|>"]})
    finetune.prepare_tokenizer(tokenizer)
    assert tokenizer.eos_token == "<|eot_id|>" and tokenizer.pad_token == "<|finetune_right_pad_id|>"
    # This vocabulary's BPE merges the header's "\n\n" with the answer's opening "```", so TRL starts the
    # completion at that merged token; the real Llama 3 tokenizer keeps "\n\n" a token of its own.
    assert masked_text(tokenizer, tiny_model_dir) == "\n\n" + ANSWER + "<|eot_id|>"


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ft")
    notes_path, chunks = make_stage_a_outputs(root)
    items, _, _ = post_process.parse_chunks(read_chunks(chunks))
    items = post_process.join_notes(post_process.normalize_items(items), read_csv(notes_path))
    examples = prep_training.format_examples(prep_training.balance(items, per_type=4, seed=1))
    train, test = prep_training.split(examples, test_size=0.25)
    prep_training.write_datasets(train, test, root / "synthetic-raw", "all_1")
    return root


def run_finetune(data_dir, output_dir, model, *extra):
    return run_script("finetune.py", "--model_id", str(model), "--input_file", "all", "--min_difficulty", "1",
                      "--data_dir", str(data_dir), "--output_dir", str(output_dir), "--max_seq_length", "640",
                      "--logging_steps", "1", "--save_steps", "2", *extra)


@pytest.mark.parametrize("four_bit", ["True", "False"])
def test_training_saves_adapter_and_resumes(data_dir, tiny_model_dir, tmp_path, four_bit):
    first = run_finetune(data_dir, tmp_path, tiny_model_dir, "--max_steps", "2", "--load_in_4bit", four_bit)
    assert first.returncode == 0, first.stderr[-3000:]
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["load_in_4bit"] is (four_bit == "True")
    assert summary["config"]["logging_nan_inf_filter"] is False  # no read-back of the loss after every backward
    assert summary["notes_shortened"]["train"] > 0  # 640 tokens cannot hold a whole sample note
    assert (tmp_path / "final" / "adapter_model.safetensors").exists() and (tmp_path / "checkpoint-2").exists()
    assert json.loads((tmp_path / "final" / "adapter_config.json").read_text())["r"] == 8
    progress = json.loads((tmp_path / "checkpoint-2" / layout.PROGRESS_FILE).read_text())
    assert progress["tokens"] == summary["trained_tokens"] > 0
    resumed = run_finetune(data_dir, tmp_path, tiny_model_dir, "--max_steps", "3", "--load_in_4bit", four_bit,
                       "--resume_from_checkpoint", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["resumed_from"] == str(tmp_path / "checkpoint-2")
    steps = [entry["step"] for entry in summary["log_history"] if "loss" in entry]
    assert steps == [1, 2, 3]  # the resumed run carried the first two steps' history and added one
    # the whole run's tokens and seconds: the checkpoint's two steps plus the resumed session's one
    session_tokens = [entry["num_tokens"] for entry in summary["log_history"] if "loss" in entry][-1]
    assert summary["trained_tokens"] == progress["tokens"] + session_tokens
    assert summary["seconds"] == pytest.approx(progress["seconds"] + summary["session_seconds"], abs=0.02)
    assert summary["tokens_per_second"] == pytest.approx(summary["trained_tokens"] / summary["seconds"], abs=0.1)
    if four_bit == "False":  # the same three steps in one session train on exactly as many tokens
        whole = run_finetune(data_dir, tmp_path / "whole", tiny_model_dir, "--max_steps", "3", "--load_in_4bit", four_bit)
        assert whole.returncode == 0, whole.stderr[-3000:]
        assert json.loads((tmp_path / "whole" / "training_summary.json").read_text())["trained_tokens"] == \
            summary["trained_tokens"]


def test_the_drivers_resume_of_an_interrupted_finetune_runs(data_dir, tiny_model_dir, tmp_path):
    """A run stopped after its second checkpoint (no final/, no summary): the command the driver plans resumes it."""
    from clinical_distil import pipeline, run_settings

    results = tmp_path / "results"
    interrupted = run_finetune(data_dir, results / "r", tiny_model_dir, "--max_steps", "2", "--save_steps", "1",
                           "--load_in_4bit", "False")
    assert interrupted.returncode == 0, interrupted.stderr[-3000:]
    shutil.rmtree(results / "r" / "final")
    (results / "r" / "training_summary.json").unlink()
    settings = run_settings.RunSettings.from_values(dict(
        notes=str(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz"), select={"num_notes": 12}, data_dir=str(data_dir),
        run="r", results_dir=str(results), student=str(tiny_model_dir), max_seq_length=640, min_difficulty=1,
        finetune={"max_steps": 3, "save_steps": 1, "logging_steps": 1, "load_in_4bit": False}))
    stages = pipeline.plan(run_settings.layout_for(settings))
    step = next(stage for stage in stages if stage.name == "finetune").steps[0]
    assert step.state() == "missing" and step.command.argv[-2:] == ["--resume_from_checkpoint", "last"]
    resumed = subprocess.run(step.command_to_run().argv, capture_output=True, text=True, cwd=REPO)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((results / "r" / "training_summary.json").read_text())
    assert summary["global_step"] == 3 and summary["resumed_from"].endswith("checkpoint-2")
    assert step.state() == "finished"


def test_a_checkpoint_cut_off_while_saving_is_never_resumed_from(data_dir, tiny_model_dir, tmp_path):
    """The newest checkpoint lost its last files (as when the process dies during the save): `last` resumes from
    the one before, sets the cut one aside, and the resumed run's history is whole."""
    first = run_finetune(data_dir, tmp_path, tiny_model_dir, "--max_steps", "2", "--save_steps", "1",
                     "--load_in_4bit", "False")
    assert first.returncode == 0, first.stderr[-3000:]
    shutil.rmtree(tmp_path / "final")
    (tmp_path / "training_summary.json").unlink()
    for name in ("trainer_state.json", layout.PROGRESS_FILE):
        (tmp_path / "checkpoint-2" / name).unlink()
    assert [path.name for path in training_folder.complete_checkpoints(tmp_path)] == ["checkpoint-1"]
    resumed = run_finetune(data_dir, tmp_path, tiny_model_dir, "--max_steps", "3", "--save_steps", "1",
                       "--load_in_4bit", "False", "--resume_from_checkpoint", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "checkpoint-2 was not written to its end; not resumed from" in resumed.stderr
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["resumed_from"] == str(tmp_path / "checkpoint-1") and summary["global_step"] == 3
    assert [entry["step"] for entry in summary["log_history"] if "loss" in entry] == [1, 2, 3]
    assert (tmp_path / "incomplete-checkpoint-2").is_dir()
    assert [path.name for path in training_folder.complete_checkpoints(tmp_path)] == [
        "checkpoint-1", "checkpoint-2", "checkpoint-3"]
    given = run_finetune(data_dir, tmp_path, tiny_model_dir, "--max_steps", "3", "--load_in_4bit", "False",
                     "--resume_from_checkpoint", str(tmp_path / "incomplete-checkpoint-2"))
    assert given.returncode == 2 and given.stderr.strip().splitlines() == [
        f"error: {tmp_path / 'incomplete-checkpoint-2'} was not written to its end (no {layout.PROGRESS_FILE} or "
        "trainer state); give another checkpoint, or last"]


def test_finetune_killed_while_saving_resumes(data_dir, tiny_model_dir, tmp_path):
    """SIGKILL as soon as the second checkpoint's folder appears (mid-save, or just after): the rerun the
    driver would make continues from a complete checkpoint and ends with every step trained once."""
    args = ["--max_steps", "4", "--save_steps", "1", "--load_in_4bit", "False", "--model_id", str(tiny_model_dir),
            "--input_file", "all", "--min_difficulty", "1", "--data_dir", str(data_dir), "--output_dir",
            str(tmp_path), "--max_seq_length", "640", "--logging_steps", "1"]
    assert kill_when("finetune.py", *args, ready=(tmp_path / "checkpoint-2").exists), \
        "the run ended before it could be killed"
    assert not (tmp_path / "final").exists()
    resumed = run_script("finetune.py", *args, "--resume_from_checkpoint", "last")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["global_step"] == 4
    resumed_from = summary["resumed_from"]
    assert resumed_from in (str(tmp_path / "checkpoint-1"), str(tmp_path / "checkpoint-2"))
    if (tmp_path / "incomplete-checkpoint-2").exists():  # the kill came inside the save
        assert resumed_from == str(tmp_path / "checkpoint-1")
    assert [entry["step"] for entry in summary["log_history"] if "loss" in entry] == [1, 2, 3, 4]


def test_a_second_finetune_on_the_folder_is_refused(data_dir, tiny_model_dir, tmp_path):
    args = ["--model_id", str(tiny_model_dir), "--input_file", "all", "--min_difficulty", "1", "--data_dir",
            str(data_dir), "--output_dir", str(tmp_path), "--max_seq_length", "640", "--max_steps", "2",
            "--load_in_4bit", "False"]
    first = start_script("finetune.py", *args)
    try:
        assert wait_for(lambda: holds_lock(tmp_path), process=first), first.communicate()[1][-3000:]
        second = run_script("finetune.py", *args)
        assert second.returncode == 2
        assert second.stderr.strip().splitlines() == [
            f"error: another run is writing to {tmp_path} (pid {first.pid} on {os.uname().nodename}); wait for it "
            "to end, or write this run elsewhere"]
        assert first.wait(timeout=600) == 0, first.stderr.read()[-3000:]
    finally:
        first.kill()
    assert json.loads((tmp_path / "training_summary.json").read_text())["global_step"] == 2
    assert not (tmp_path / layout.lock_name()).exists()  # released at the end


@pytest.mark.slow
def test_two_processes_compute_the_update_of_one(data_dir, tiny_model_dir, tmp_path):
    """Data parallel on CPU (`torchrun`, gloo): two processes of one example each make the update one process
    makes from both examples (the same examples per step, the gradients averaged over every rank's tokens), so
    the run matches one process up to LoRA dropout's masks, which another seed changes ten times as much. The
    two processes also start again over a finished run with --overwrite, which only the first one clears."""
    flags = ["--num_train_epochs", "1", "--load_in_4bit", "False", "--preset", "fast", "--learning_rate", "0.003",
             "--train_sampling_strategy", "sequential", "--per_device_train_batch_size", "1", "--save_steps", "100"]
    one = run_finetune(data_dir, tmp_path / "one", tiny_model_dir, *flags, "--gradient_accumulation_steps", "2")
    assert one.returncode == 0, one.stderr[-3000:]
    shutil.copytree(tmp_path / "one", tmp_path / "two")
    launch = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", str(REPO / "finetune.py"),
              "--model_id", str(tiny_model_dir), "--input_file", "all", "--min_difficulty", "1", "--data_dir",
              str(data_dir), "--output_dir", str(tmp_path / "two"), "--max_seq_length", "640", "--logging_steps", "1",
              *flags, "--gradient_accumulation_steps", "1", "--overwrite"]
    two = subprocess.run(launch, capture_output=True, text=True, cwd=REPO, timeout=900,
                         env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert two.returncode == 0, two.stderr[-3000:]
    assert two.stdout.count("trained 6 steps") == 1  # the summary line of the first process only
    runs = [json.loads((tmp_path / name / "training_summary.json").read_text()) for name in ("one", "two")]
    assert [run["global_step"] for run in runs] == [6, 6]  # twelve examples, two per update either way
    assert runs[1]["trained_tokens"] == runs[0]["trained_tokens"]  # counted over both processes
    assert runs[1]["config"]["ddp_find_unused_parameters"] is False
    losses = [[entry["loss"] for entry in run["log_history"] if "loss" in entry] for run in runs]
    assert len(losses[0]) == 6 and losses[1] == pytest.approx(losses[0], rel=1e-3)
    drops = [run["eval_loss_before"] - run["eval_loss"] for run in runs]
    assert runs[1]["eval_loss_before"] == pytest.approx(runs[0]["eval_loss_before"], rel=1e-6)
    assert drops[0] > 0.1 and drops[1] == pytest.approx(drops[0], rel=0.015)


def test_balanced_sampling_trains_on_every_example_once(data_dir, tiny_model_dir, tmp_path):
    """batch_rebalance deals each step's examples out by tokens; over an epoch it must drop or repeat none."""
    runs = {}
    for strategy in ("random", "batch_rebalance"):
        result = run_finetune(data_dir, tmp_path / strategy, tiny_model_dir, "--num_train_epochs", "1",
                          "--load_in_4bit", "False", "--save_steps", "100", "--train_sampling_strategy", strategy)
        assert result.returncode == 0, result.stderr[-3000:]
        runs[strategy] = json.loads((tmp_path / strategy / "training_summary.json").read_text())
    assert runs["batch_rebalance"]["config"]["train_sampling_strategy"] == "batch_rebalance"
    assert runs["batch_rebalance"]["trained_tokens"] == runs["random"]["trained_tokens"] > 0


@pytest.mark.parametrize("case, message", [
    ("missing_data", "training data not found"),
    ("bad_model", "is not a model folder"),
    ("tiny_length", "--max_seq_length 20 is too small"),
    ("bad_sampling", "--train_sampling_strategy must be one of random, sequential, group_by_length, batch_rebalance, "
                     "got 'shortest_first'"),
])
def test_bad_input(case, message, data_dir, tiny_model_dir, tmp_path):
    args = {"missing_data": ["--data_dir", str(tmp_path)], "bad_model": [], "tiny_length": ["--max_seq_length", "20"],
            "bad_sampling": ["--train_sampling_strategy", "shortest_first"]}
    model = tmp_path / "nowhere" if case == "bad_model" else tiny_model_dir
    result = run_finetune(data_dir, tmp_path / "run", model, "--max_steps", "1", *args[case])
    assert result.returncode == 2, result.stderr[-2000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and message in errors[0]
    if case == "missing_data":
        assert "synthetic-c-prep-training.ipynb" in errors[0]
    assert not (tmp_path / "run" / "final").exists()


def test_merge_matches_adapter_and_loads_plainly(tiny_model_dir, tmp_path):
    from peft import get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    # a non-zero update (a fresh LoRA adds nothing), so the merge has something to prove
    adapter = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules="all-linear", task_type="CAUSAL_LM",
                                              init_lora_weights=False))
    adapter.save_pretrained(tmp_path / "run" / "final")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(tmp_path / "run" / "final")
    result = run_script("a-generate-synthetic-training-data/synthetic-e-convert-peft.py", "--adapter_dir",
                        str(tmp_path / "run" / "final"), "--output_dir", str(tmp_path / "merged"), "--dtype", "float32")
    assert result.returncode == 0, result.stderr[-3000:]
    assert "max next-token logit difference" in result.stdout
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "merged")
    assert not any("lora" in name for name, _ in merged.named_parameters())
    tokenizer = AutoTokenizer.from_pretrained(tmp_path / "merged")
    assert tokenizer.chat_template == AutoTokenizer.from_pretrained(tiny_model_dir).chat_template
    ids = torch.tensor([chat.render_ids(tokenizer, convert_peft.PROBE)])
    with torch.no_grad():
        expected = adapter(input_ids=ids).logits[0, -1]
        got = merged(input_ids=ids).logits[0, -1]
    assert torch.allclose(expected, got, atol=1e-4)
    output = merged.generate(input_ids=ids, max_new_tokens=3, do_sample=False)
    assert ids.shape[1] < output.shape[1] <= ids.shape[1] + 3  # it generates
    record = json.loads((tmp_path / "merged" / "merge.json").read_text())
    assert record["written_by"] == "clinical_distil stage E (synthetic-e-convert-peft.py)"
    assert record["adapter"] == str(tmp_path / "run" / "final") and record["dtype"] == "float32"
    again = run_script("a-generate-synthetic-training-data/synthetic-e-convert-peft.py", "--adapter_dir",
                       str(tmp_path / "run" / "final"), "--output_dir", str(tmp_path / "merged"))
    assert again.returncode == 2 and f"{tmp_path / 'merged'} exists and holds a merged model" in again.stderr


def test_a_merge_replaces_only_an_earlier_merge(tiny_model_dir, tmp_path):
    """Stage E pointed at the fine-tuning run's own folder (which today's merge emptied) is refused with or
    without --overwrite, before a model loads; --overwrite replaces an earlier merge, renamed into place."""
    from peft import get_peft_model

    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    adapter = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", task_type="CAUSAL_LM",
                                              init_lora_weights=False))
    run = tmp_path / "run"
    adapter.save_pretrained(run / "final")
    AutoTokenizer.from_pretrained(tiny_model_dir).save_pretrained(run / "final")
    (run / "training_summary.json").write_text("{}")
    files = sorted(str(path.relative_to(run)) for path in run.rglob("*"))
    script = "a-generate-synthetic-training-data/synthetic-e-convert-peft.py"
    for extra in ([], ["--overwrite"]):
        refused = run_script(script, "--adapter_dir", str(run / "final"), "--output_dir", str(run), *extra)
        assert refused.returncode == 2, refused.stderr[-2000:]
        assert refused.stderr.startswith(f"error: --output_dir {run} is a fine-tuning run's folder (final, "
                                         "training_summary.json)")
        assert sorted(str(path.relative_to(run)) for path in run.rglob("*")) == files
    earlier = tmp_path / "merged"  # an earlier merge, as stage E leaves one: a model and its merge record
    earlier.mkdir()
    (earlier / "config.json").write_text("{}")
    (earlier / "merge.json").write_text(json.dumps({"written_by": "clinical_distil stage E (synthetic-e-convert-peft.py)"}))
    (earlier / "stale.txt").write_text("from the earlier merge")
    replaced = run_script(script, "--adapter_dir", str(run / "final"), "--output_dir", str(tmp_path / "merged"),
                          "--overwrite", "--dtype", "float32")
    assert replaced.returncode == 0, replaced.stderr[-2000:]
    assert not (tmp_path / "merged" / "stale.txt").exists()
    assert json.loads((tmp_path / "merged" / "merge.json").read_text())["dtype"] == "float32"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["merged", "run"]  # no staging folder left


def test_an_earlier_run_is_kept_unless_asked(data_dir, tiny_model_dir, tmp_path):
    (tmp_path / "final").mkdir()
    (tmp_path / "final" / "adapter_config.json").write_text("{}")
    refused = run_finetune(data_dir, tmp_path, tiny_model_dir, "--max_steps", "1", "--load_in_4bit", "False")
    assert refused.returncode == 2 and "already holds a run" in refused.stderr
    assert (tmp_path / "final" / "adapter_config.json").read_text() == "{}"
    replaced = run_finetune(data_dir, tmp_path, tiny_model_dir, "--max_steps", "1", "--load_in_4bit", "False",
                        "--overwrite")
    assert replaced.returncode == 0, replaced.stderr[-3000:]
    assert json.loads((tmp_path / "final" / "adapter_config.json").read_text())["r"] == 8
    assert not (tmp_path / "final.partial").exists()


def test_smollm2_eval_loss_falls_on_the_sample_training_set(data_dir, default_model_dir, tmp_path):
    # a short run: notes shortened to 640 tokens keep CPU steps to a few seconds
    result = run_finetune(data_dir, tmp_path, default_model_dir, "--max_steps", "2", "--load_in_4bit", "False",
                      "--gradient_accumulation_steps", "1", "--gradient_checkpointing", "False",
                      "--learning_rate", "5e-4", "--save_steps", "100")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "training_summary.json").read_text())
    assert summary["global_step"] == 2 and summary["test_examples"] > 0
    assert summary["eval_loss"] < summary["eval_loss_before"]
    assert f"eval loss {summary['eval_loss_before']:.4f} -> {summary['eval_loss']:.4f}" in result.stdout


def test_fast_preset_computes_the_papers_update(data_dir, tiny_model_dir, tmp_path):
    """The paper's two examples per update (batch 1 x accumulation 2, recomputation on) and the fast preset's
    one padding-free batch of two give the same losses step by step, and the same eval loss, within rounding."""
    losses = {}
    for preset in ("paper", "fast"):
        result = run_finetune(data_dir, tmp_path / preset, tiny_model_dir, "--max_steps", "3", "--load_in_4bit", "False",
                          "--preset", preset, "--learning_rate", "0.01")
        assert result.returncode == 0, result.stderr[-3000:]
        summary = json.loads((tmp_path / preset / "training_summary.json").read_text())
        losses[preset] = ([entry["loss"] for entry in summary["log_history"] if "loss" in entry],
                          summary["eval_loss_before"], summary["eval_loss"], summary["plan"])
    paper, fast = losses["paper"], losses["fast"]
    assert paper[3] == {"preset": "paper", "per_device_train_batch_size": 1, "gradient_accumulation_steps": 2,
                        "padding_free": False, "gradient_checkpointing": True, "liger_kernels": False,
                        "attention": None, "compiled_layers": False, "optimizer": "adamw_torch"}
    assert fast[3] == {"preset": "fast", "per_device_train_batch_size": 2, "gradient_accumulation_steps": 1,
                       "padding_free": True, "gradient_checkpointing": False, "liger_kernels": False,
                       "attention": None, "compiled_layers": False, "optimizer": "adamw_torch"}
    assert len(paper[0]) == len(fast[0]) == 3
    assert fast[0] == pytest.approx(paper[0], rel=1e-4)  # step 2 and 3 also compare the updates made before them
    assert fast[1] == pytest.approx(paper[1], rel=1e-5) and fast[2] == pytest.approx(paper[2], rel=1e-4)
    assert paper[0][2] != pytest.approx(paper[0][0], rel=1e-3)  # the steps moved the weights


@pytest.mark.parametrize("flags, cuda, liger, flash, torch_varlen, expected", [
    ({}, True, True, True, True, (1, 2, False, True, False, None)),  # paper: the flags as given, nothing installed used
    ({"fused_kernels": True}, True, True, True, True, (1, 2, False, True, True, None)),  # asked for Liger's kernels
    ({"fused_kernels": True}, False, True, True, True, (1, 2, False, True, False, None)),  # no GPU: no Triton
    ({"preset": "fast"}, True, True, True, True, (2, 1, True, False, True, "flash_attention_2")),
    ({"preset": "fast"}, True, True, False, True, (2, 1, True, False, True, "torch_varlen")),  # PyTorch's own kernel
    ({"preset": "fast", "fused_kernels": False}, True, True, False, True, (2, 1, True, False, False, "torch_varlen")),
    ({"preset": "fast"}, False, True, True, True, (2, 1, True, False, False, None)),  # no GPU: no Triton or flash
    ({"preset": "fast", "per_device_train_batch_size": 16, "gradient_accumulation_steps": 1}, True, False, False,
     False, (16, 1, False, False, False, None)),  # 16 examples under SDPA: padded
    ({"preset": "fast", "per_device_train_batch_size": 4, "gradient_accumulation_steps": 4}, True, False, False,
     True, (16, 1, True, False, False, "torch_varlen")),  # a varlen kernel makes any padding-free batch cheap
    ({"preset": "fast", "per_device_train_batch_size": 8, "padding_free": True}, True, False, False, False,
     (16, 1, True, False, False, None)),  # asked for
    ({"preset": "fast", "packing": True}, True, False, True, True, (2, 1, False, False, False, "flash_attention_2")),
])
def test_training_plan_of_each_preset(flags, cuda, liger, flash, torch_varlen, expected):
    from clinical_distil.stages import FinetuneSettings

    plan = speedups.training_plan(FinetuneSettings.from_values(flags), cuda, liger=liger, flash_attention=flash,
                                    torch_varlen=torch_varlen)
    assert (plan.per_device_train_batch_size, plan.gradient_accumulation_steps, plan.padding_free,
            plan.gradient_checkpointing, plan.liger_kernels, plan.attention) == expected


@pytest.mark.parametrize("flags, cuda, expected", [
    ({}, True, "paged_adamw_8bit"),  # the published optimizer
    ({"preset": "fast"}, True, "adamw_torch_fused"),
    ({"preset": "fast", "optim": "paged_adamw_8bit"}, True, "paged_adamw_8bit"),  # --optim outranks the preset
    ({"optim": "adamw_torch_fused"}, True, "adamw_torch_fused"),
    ({"preset": "fast"}, False, "adamw_torch"),  # no CUDA: neither bitsandbytes nor the fused kernels
    ({"optim": "paged_adamw_8bit"}, False, "adamw_torch"),
])
def test_each_preset_brings_its_optimizer_unless_one_is_given(flags, cuda, expected):
    from clinical_distil.stages import FinetuneSettings

    plan = speedups.training_plan(FinetuneSettings.from_values(flags), cuda, liger=False, flash_attention=False,
                                    torch_varlen=True)
    assert plan.optimizer == expected


def test_the_trainer_counts_parameters_once_for_its_flops_estimate(tiny_model_dir, monkeypatch):
    """transformers' estimate (6 x tokens x parameters without embeddings) at every step, from one count."""
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    counted = []
    real_count = model.num_parameters
    monkeypatch.setattr(model, "num_parameters", lambda **kwargs: counted.append(kwargs) or real_count(**kwargs))
    trainer = speedups.trainer_class()(
        model=model, args=SFTConfig(output_dir="/tmp/unused", report_to="none", use_cpu=True),
        train_dataset=Dataset.from_list([{"prompt": "a", "completion": "b"}]),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    without_embeddings = real_count(exclude_embeddings=True)
    assert 0 < without_embeddings < real_count()
    for length in (7, 12, 30):
        inputs = {"input_ids": torch.zeros(1, length, dtype=torch.long)}
        assert trainer.floating_point_ops(inputs) == 6 * length * without_embeddings
        assert trainer.floating_point_ops(inputs) == SFTTrainer.floating_point_ops(trainer, inputs)
    assert counted.count({"exclude_embeddings": True}) == 1 + 3  # once for the trainer, thrice for the check above
    assert trainer.floating_point_ops({"pixel_values": torch.zeros(1)}) == 0  # no token input: transformers' 0


def test_the_trainer_walks_the_model_into_training_only_when_it_is_not_training(tiny_model_dir, monkeypatch, tmp_path):
    """transformers calls model.train() at every micro-step; the trainer lets the call through only when the model
    is not training (the first step, and the one after an evaluation), and trains the same."""
    from peft import get_peft_model

    def run(trainer_class):
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                               LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0))
        walks = []
        real_train = torch.nn.Module.train
        monkeypatch.setattr(torch.nn.Module, "train", lambda module, mode=True: (
            walks.append(mode) if module is model else None) or real_train(module, mode))
        trainer = trainer_class(model=model, train_dataset=Dataset.from_list(
            [{"prompt": f"question {index}", "completion": f"answer {index}"} for index in range(8)]),
            args=SFTConfig(output_dir=str(tmp_path / trainer_class.__name__), report_to="none", use_cpu=True,
                           max_steps=3, gradient_accumulation_steps=2, per_device_train_batch_size=1,
                           learning_rate=0.01, logging_steps=1, save_strategy="no", seed=0),
            processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
        model.eval()  # as after an evaluation: the first micro-step must turn training back on
        trainer.train()
        monkeypatch.setattr(torch.nn.Module, "train", real_train)
        return walks, [entry["loss"] for entry in trainer.state.log_history if "loss" in entry]

    transformers_walks, transformers_losses = run(SFTTrainer)
    walks, losses = run(speedups.trainer_class())
    assert transformers_walks.count(True) - walks.count(True) == 5  # six micro-steps: one walk instead of six
    assert walks[:2] == [False, True] and losses == transformers_losses  # the eval above, then the first step

    class Wrapper(torch.nn.Module):  # as DDP wraps a model: the wrapper is made in training mode
        def __init__(self, inner):
            super().__init__()
            self.module = inner

        def forward(self, **inputs):
            return self.module(**inputs)

    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                           LoraConfig(r=4, target_modules="all-linear"))
    trainer = speedups.trainer_class()(
        model=model, args=SFTConfig(output_dir=str(tmp_path / "wrapped"), report_to="none", use_cpu=True),
        train_dataset=Dataset.from_list([{"prompt": "question", "completion": "answer"}]),
        processing_class=AutoTokenizer.from_pretrained(tiny_model_dir))
    wrapper = Wrapper(model.eval())
    assert wrapper.training and not model.training
    trainer.current_gradient_accumulation_steps = 1  # set by the training loop
    trainer.training_step(wrapper, next(iter(trainer.get_train_dataloader())))
    assert model.training and all(module.training for module in model.modules())


def test_nested_block_scales_are_dequantized_once_to_the_same_values(tiny_model_dir):
    """The paper's double-quantized 4-bit base with its 8-bit block scales dequantized once: the same weights as
    bitsandbytes dequantizes them (to the bit), so the same logits and LoRA gradients, and no weight left nested."""
    import bitsandbytes.functional as bnb_functional
    from peft import get_peft_model

    def build():
        torch.manual_seed(0)
        return AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32, device_map={"": "cpu"},
                                                    quantization_config=finetune.quantization_config(torch.float32))

    def weights(model) -> list[torch.Tensor]:
        return [bnb_functional.dequantize_4bit(module.weight, module.weight.quant_state) for module in model.modules()
                if hasattr(getattr(module, "weight", None), "quant_state")]

    nested, expanded = build(), build()
    states = [module.weight.quant_state for module in expanded.modules()
              if hasattr(getattr(module, "weight", None), "quant_state")]
    assert states and all(state.nested for state in states)
    assert speedups.expand_nested_scales(expanded) == len(states) == 7 * expanded.config.num_hidden_layers
    assert not any(state.nested for state in states) and all(state.absmax.dtype == torch.float32 for state in states)
    assert speedups.expand_nested_scales(expanded) == 0  # nothing left to expand
    assert all(torch.equal(one, other) for one, other in zip(weights(nested), weights(expanded)))
    ids = torch.randint(3, 200, (1, 23), generator=torch.Generator().manual_seed(1))
    results = []
    for base in (nested, expanded):
        torch.manual_seed(0)
        model = get_peft_model(base, LoraConfig(r=4, target_modules="all-linear", lora_dropout=0.0,
                                                init_lora_weights=False))
        output = model(input_ids=ids, labels=ids)
        output.loss.backward()
        results.append((output.logits.detach(), [weight.grad for weight in model.parameters() if weight.requires_grad]))
    assert torch.equal(results[0][0], results[1][0])
    assert all(torch.equal(one, other) for one, other in zip(results[0][1], results[1][1]))


@pytest.mark.parametrize("preset", ["paper", "fast"])
def test_compile_layers_reaches_the_plan_of_either_preset(preset):
    from clinical_distil.files import InputError
    from clinical_distil.stages import FinetuneSettings

    for asked in (False, True):
        plan = speedups.training_plan(FinetuneSettings.from_values({"preset": preset, "compile_layers": asked}),
                                        True, liger=True, flash_attention=False, torch_varlen=True)
        assert plan.compiled_layers is asked
        # compiled layers leave Liger's kernels out (torch.compile cannot trace them)
        assert plan.liger_kernels is (preset == "fast" and not asked)
    with pytest.raises(InputError, match="--compile_layers and --fused_kernels True do not combine"):
        FinetuneSettings.from_values({"preset": preset, "compile_layers": True, "fused_kernels": True})


@pytest.mark.slow
@pytest.mark.parametrize("dropout", [0.0, 0.05])
def test_compiled_decoder_layers_compute_the_same_loss_and_gradients(tiny_model_dir, dropout):
    """Each decoder layer compiled (dynamic lengths) and checkpointed inside its graph, as finetune.py trains the
    paper preset: transformers' checkpoint around the call is never used, and the loss and every LoRA gradient
    of examples of three lengths match the eager model's under transformers' non-reentrant checkpointing. With
    LoRA dropout on, the compiled layers draw it with PyTorch's kernel, so the same seed gives the same masks."""
    from peft import get_peft_model

    def build():
        torch.manual_seed(0)
        model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32),
                               LoraConfig(r=8, target_modules="all-linear", lora_dropout=dropout,
                                          init_lora_weights=False))
        model.config.use_cache = False
        return model.train()

    plain, compiled = build(), build()
    # compiled before the checkpointing is turned on, as the trainer turns it on when training starts
    assert speedups.compile_decoder_layers(compiled, checkpointing=True) == plain.config.num_hidden_layers
    assert list(compiled.state_dict()) == list(plain.state_dict())  # the saved adapter's keys are unchanged
    layer_class = type(compiled.base_model.model.model.layers[0])
    assert layer_class.__name__ == type(plain.base_model.model.model.layers[0]).__name__
    assert speedups.checkpointing_inside(layer_class) is layer_class  # made once per class
    for model in (plain, compiled):
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    outer_calls = []
    for layer in compiled.base_model.model.model.layers:
        layer._gradient_checkpointing_func = lambda *args, **kwargs: outer_calls.append(args)
    generator = torch.Generator().manual_seed(1)
    for length in (37, 53, 91):
        ids = torch.randint(0, plain.config.vocab_size, (1, length), generator=generator)
        results = []
        for model in (plain, compiled):
            torch.manual_seed(5)
            model.zero_grad()
            loss = model(input_ids=ids, labels=ids).loss
            loss.backward()
            gradients = [weight.grad.clone() for weight in model.parameters() if weight.requires_grad]
            results.append((loss.item(), gradients))
        assert results[1][0] == pytest.approx(results[0][0], rel=1e-6)
        assert all(torch.allclose(got, want, rtol=1e-4, atol=1e-6) for got, want in zip(results[1][1], results[0][1]))
    assert outer_calls == []


@pytest.mark.slow
@pytest.mark.parametrize("compiled, preserve_rng_state, agrees", [
    (True, True, True),  # the checkpoint inside the compiled layer: dropout replayed in the backward graph
    (False, True, True),  # transformers' checkpoint around the eager layer
    (False, False, False),  # new dropout masks in the recomputation: the check must see it
])
def test_checkpointed_layers_take_the_gradient_of_their_own_loss(tiny_model_dir, compiled, preserve_rng_state,
                                                                  agrees):
    derivative, difference = lora_directional_derivative(tiny_model_dir, "cpu", compiled,
                                                         preserve_rng_state=preserve_rng_state)
    assert (abs(derivative - difference) <= 0.01 + 0.03 * abs(difference)) is agrees, (derivative, difference)


def test_finetune_speed_bench_compares_the_presets_on_the_same_examples(tiny_model_dir, tmp_path):
    """bench/finetune_speed.py on the tiny model: one row per configuration with its plan; the paper and the
    fast preset on the same 4-bit base start from the same eval loss and reach the same one."""
    output = tmp_path / "speed.json"
    finished = run_script("bench/finetune_speed.py", "--model", str(tiny_model_dir), "--train_examples", "4",
                          "--test_examples", "2", "--configs", "paper,fast_4bit", "--work_dir", str(tmp_path / "w"),
                          "--extra=--learning_rate 0.01", "--output", str(output),
                          "--longest_example", "700")
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = {row["config"]: row for row in json.loads(output.read_text())["rows"]}
    assert (rows["paper"]["padding_free"], rows["fast_4bit"]["padding_free"]) == (False, True)
    assert rows["paper"]["steps"] == rows["fast_4bit"]["steps"] == 2  # four examples, two per update
    assert rows["fast_4bit"]["eval_loss_before"] == pytest.approx(rows["paper"]["eval_loss_before"], abs=2e-4)
    # Adam's first steps divide by the gradients' own size, so rounding apart moves a few weights apart
    assert rows["fast_4bit"]["eval_loss"] == pytest.approx(rows["paper"]["eval_loss"], rel=1e-3)
    assert rows["paper"]["eval_loss"] != pytest.approx(rows["paper"]["eval_loss_before"], abs=1e-3)
    assert rows["fast_4bit"]["speedup"] > 0


def test_merged_student_carries_a_model_card(data_dir, tiny_model_dir, tmp_path):
    """Stage E writes README.md into the merged folder: base, the training data's card, the run's settings and
    counts as training_summary.json holds them, and the merge check."""
    card = data_dir / "synthetic-raw" / "all_1_dataset_card.md"
    card.write_text("---\npretty_name: x\n---\n# Training set all_1\n\n- teacher: teacher-x (vllm engine)\n")
    try:
        trained = run_finetune(data_dir, tmp_path / "run", tiny_model_dir, "--max_steps", "2", "--load_in_4bit", "False",
                           "--preset", "fast")
        assert trained.returncode == 0, trained.stderr[-3000:]
        merged = run_script("a-generate-synthetic-training-data/synthetic-e-convert-peft.py", "--adapter_dir",
                            str(tmp_path / "run" / "final"), "--output_dir", str(tmp_path / "merged"))
        assert merged.returncode == 0, merged.stderr[-3000:]
    finally:
        card.unlink()
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    text = (tmp_path / "merged" / "README.md").read_text()
    assert text.startswith(f"---\nbase_model: {summary['model_id']}\n")
    assert f"Dataset card: `{card}` (teacher: teacher-x (vllm engine))." in text
    assert f"{summary['train_examples']} training and {summary['test_examples']} test examples" in text
    assert f"- {summary['global_step']} optimizer steps" in text and "preset fast" in text
    assert "x 1 accumulated" in text and "2 examples per device" in text  # the fast plan: two in one pass
    assert "same top token: True" in text and "## Protected health information" in text


def test_profile_bench_gives_python_time_per_optimizer_step(monkeypatch):
    import cProfile
    import time

    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from finetune_profile import top_functions

    def step_work():
        deadline = time.perf_counter() + 0.02
        while time.perf_counter() < deadline:
            pass

    profile = cProfile.Profile()
    profile.enable()
    for _ in range(6):  # three optimizer steps of two calls each
        step_work()
    profile.disable()
    row = next(row for row in top_functions(profile, steps=3) if row["function"].endswith(" step_work"))
    assert row["function"].startswith("test_finetune.py:") and row["calls_per_step"] == 2
    assert 40 <= row["cumulative_ms_per_step"] < 80 and row["own_ms_per_step"] <= row["cumulative_ms_per_step"]


def test_finetune_speed_records_why_a_run_failed(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from finetune_speed import failure_line

    traceback = ("Traceback (most recent call last):\n  File \"x.py\", line 1\n"
                 "torch._dynamo.exc.Unsupported: graph break\n\nfrom user code:\n   File \"m.py\", line 3\n"
                 "  0%|          | 0/48 [01:32<?, ?it/s]\n")
    assert failure_line(traceback) == "torch._dynamo.exc.Unsupported: graph break"
    assert failure_line("loading\n 10%|#  | 1/10 [00:01<00:09, 1.0it/s]\n") == "loading"
    assert failure_line("") == "no output"


def test_finetune_speed_launches_several_processes_as_asked(monkeypatch, tmp_path):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    from finetune_speed import finetune_command

    def launch(processes, launcher=None):
        command = finetune_command(tmp_path / "m", tmp_path / "d", tmp_path / "o", ["--preset", "fast"], processes,
                                   launcher)
        return command[:command.index(str(REPO / "finetune.py"))]  # the launcher, without finetune.py's flags

    assert launch(1) == [sys.executable]
    ddp = launch(2, "ddp")
    assert ddp[ddp.index("--config_file") + 1] == str(layout.DATA_PARALLEL_CONFIGS["ddp"])
    assert ddp[ddp.index("--num_processes") + 1] == "2"
    assert launch(4)[launch(4).index("--config_file") + 1] == str(REPO / "configs" / "deep_speed2.yaml")
