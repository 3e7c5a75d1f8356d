"""Every entry point answers --help with its flags, from any directory, without a traceback."""

import subprocess
import sys

import pytest

from conftest import REPO, run_script

SCRIPTS = {
    "a-generate-synthetic-training-data/synthetic-0-select-notes.py": ["--source", "--num_notes", "--exclude_subjects"],
    "a-generate-synthetic-training-data/synthetic-e-convert-peft.py": ["--adapter_dir", "--base_model_id", "--dtype"],
    "finetune.py": ["--model_id", "--input_file", "--min_difficulty", "--max_seq_length"],
    "eval-inference.py": ["--model_id", "--dataset_name", "--input_file", "--num_inference", "--chunk_size"],
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
