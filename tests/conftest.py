"""Shared fixtures: offline hub, the embedded default model and the tiny random model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"


@pytest.fixture(scope="session")
def default_model_dir() -> Path:
    from clinical_distil.default_model import convert_default_model

    return convert_default_model()


@pytest.fixture(scope="session")
def tiny_model_dir(default_model_dir) -> Path:
    from clinical_distil.default_model import build_tiny_model

    return build_tiny_model(tokenizer_dir=default_model_dir)


def run_script(script: str, *args: str, cwd: Path | None = None, env: dict | None = None) -> subprocess.CompletedProcess:
    """Run a project script the way a researcher does, from any directory."""
    return subprocess.run([sys.executable, str(REPO / script), *args], capture_output=True, text=True,
                          cwd=cwd or REPO, env={**os.environ, **(env or {})}, timeout=900)
