"""Every entry point answers --help with its flags, from any directory, without a traceback."""

import subprocess
import sys

import pytest

from conftest import REPO, run_script

SCRIPTS = {
    "a-generate-synthetic-training-data/synthetic-0-select-notes.py": ["--source", "--num_notes", "--exclude_subjects"],
    "a-generate-synthetic-training-data/synthetic-e-convert-peft.py": ["--adapter_dir", "--base_model_id", "--dtype"],
    "a-generate-synthetic-training-data/synthetic-b2-verify.py": ["--model_id", "--num_items", "--engine"],
    "finetune.py": ["--model_id", "--input_file", "--min_difficulty", "--max_seq_length"],
    "eval-inference.py": ["--model_id", "--dataset_name", "--input_file", "--num_inference", "--chunk_size"],
    "extract.py": ["--criteria", "--notes", "--model_id", "--num_notes", "--fuzzy_threshold", "--engine"],
}
MODULES = {
    "simulation.samples": ["--output_dir", "--seed"],
    "clinical_distil.default_model": ["--output_dir", "--tiny"],
}


@pytest.mark.parametrize("script", sorted(SCRIPTS))
def test_script_help(script, tmp_path):
    result = run_script(script, "--help", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    for flag in SCRIPTS[script]:
        assert flag in result.stdout + result.stderr


@pytest.mark.parametrize("module", sorted(MODULES))
def test_module_help(module, tmp_path):
    result = subprocess.run([sys.executable, "-m", module, "--help"], capture_output=True, text=True, cwd=REPO)
    assert result.returncode == 0, result.stderr
    for flag in MODULES[module]:
        assert flag in result.stdout + result.stderr


@pytest.mark.parametrize("script, arguments, message", [
    ("bench/decode_loop.py", ["--workloads", "eval"], "unknown flag --workloads; did you mean --workload?"),
    ("bench/decode_loop.py", ["--notes", "two"], "--notes must be a whole number, got 'two'"),
    ("bench/finetune_speed.py", ["--train_exampels", "4"], "unknown flag --train_exampels; did you mean --train_examples?"),
    ("bench/generation_speed.py", ["--bogus", "1"], "unknown flag --bogus"),
    ("bench/compare_engines.py", ["--first", "a", "--second", "b", "--model", "m", "--tokens", "x"],
     "--tokens must be a whole number, got 'x'"),
    ("bench/compare_engines.py", ["a", "b"], "unexpected argument 'a': every setting is given by name"),
    ("bench/gpu_throughput.py", ["table", "--bogus", "1"], "unknown flag --bogus"),
    ("bench/finetune_speed.py", ["--configs", "fastest"], "--configs: unknown configuration(s) ['fastest']; choose "
     "from paper, fast_4bit, fast_bf16, paper_seed_43, paper_fused, paper_compiled, fast_bf16_compiled, "
     "fast_4bit_compiled, packed_bf16"),
    ("bench/finetune_speed.py", ["--processes", "1,x"], "--processes takes GPU counts of at least 1"),
    ("bench/finetune_speed.py", ["--launchers", "ddp,slurm"],
     "--launchers: unknown launcher(s) ['slurm']; choose from ddp, deepspeed"),
    ("bench/finetune_speed.py", ["--shortest_example", "2000", "--longest_example", "1700"],
     "--shortest_example 2000 and --longest_example 1700: give 0 < shortest <= longest"),
    ("bench/finetune_profile.py", ["--stepz", "3"], "unknown flag --stepz; did you mean --steps?"),
    ("bench/finetune_profile.py", ["--shortest_example", "0"],
     "--shortest_example 0 and --longest_example 4000: give 0 < shortest <= longest"),
    ("bench/finetune_profile.py", ["--python_steps", "-1"], "--python_steps must be 0 (no cProfile) or more, got -1"),
    ("bench/finetune_profile.py", ["--sync_steps", "2"],
     "--sync_steps 2: give 0, or a number of steps on a machine with CUDA"),
    ("bench/finetune_profile.py", ["--optim", "sgd"], "--optim must be one of paged_adamw_8bit, adamw_8bit, "
     "paged_adamw_32bit, adamw_torch_fused, adamw_torch, got 'sgd'"),
    ("bench/vllm_start.py", ["--modes", "eager,cached"], "--modes: unknown mode(s) ['cached']; choose from "
     "compiled_cold, compiled_warm, graphs, eager, eager_two_process"),
])
def test_bench_scripts_refuse_bad_flags_in_one_line_before_any_work(script, arguments, message, tmp_path):
    """The benchmarks check their flags like the stages (one command of several: that command's flags)."""
    result = run_script(script, *arguments, cwd=tmp_path)
    lines = result.stderr.strip().splitlines()
    assert result.returncode == 2 and len(lines) == 1 and lines[0].startswith(f"error: {message}"), result.stderr
