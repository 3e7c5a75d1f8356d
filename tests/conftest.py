"""Shared fixtures: offline hub, the embedded default model and the tiny random model."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import settings

# no per-example deadline: on a busy 2-core machine a first call (imports, warm-up) can take 300 ms
settings.register_profile("project", deadline=None)
settings.load_profile("project")

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")

REPO = Path(__file__).resolve().parent.parent
SAMPLES = REPO / "data" / "samples"
# a test that uses one of these runs a model (or the whole driver): marked slow, left out of `make test-fast`
MODEL_FIXTURES = {"default_model_dir", "tiny_model_dir", "whole_run", "smol_run"}


def pytest_collection_modifyitems(items):
    for item in items:
        if MODEL_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


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


def kill_when(script: str, *args: str, ready, timeout: float = 600) -> bool:
    """Start a project script and SIGKILL it as soon as `ready()` holds; whether it was still running then."""
    import time

    process = subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=REPO, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL, env=dict(os.environ))
    deadline = time.monotonic() + timeout
    try:
        while process.poll() is None and time.monotonic() < deadline:
            if ready():
                process.kill()
                process.wait()
                return True
            time.sleep(0.01)
        return False
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def manifest_records(path: Path, *keys: str) -> int:
    """A figure of a chunked run's manifest (`"counts", "requests"` or `"answered"`), 0 while it is not written:
    a session's manifest is written before its first chunk, so "killed after some work" waits for a figure."""
    import json

    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return 0
    for key in keys:
        value = value.get(key, 0) if isinstance(value, dict) else 0
    return int(value or 0)


def start_script(script: str, *args: str) -> subprocess.Popen:
    """A project script started in the background (its output kept in pipes for the test to read)."""
    return subprocess.Popen([sys.executable, str(REPO / script), *args], cwd=REPO, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=dict(os.environ))


def wait_for(condition, timeout: float = 300, process: subprocess.Popen | None = None) -> bool:
    """Poll `condition` until it holds (True) or the time, or the given process, ends (False)."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        if process is not None and process.poll() is not None:
            return bool(condition())
        time.sleep(0.02)
    return False


def processes_mentioning(*texts: str) -> list[int]:
    """Live processes whose command line contains each of `texts` (zombies excluded)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if all(text in command for text in texts) and state != "Z":
            found.append(int(entry.name))
    return found


def holds_lock(folder: Path, name: str | None = None) -> bool:
    """Whether a run has taken the folder's lock (the lock file names its holder once taken)."""
    from clinical_distil.layout import lock_name

    path = folder / (name or lock_name())
    return path.exists() and path.read_text().startswith("pid ")


TYPE_OF_ANNOTATION = {"yes": "yes_no", "numeric": "numeric", "na-numeric": "na-numeric", "na-bool": "na-bool"}


def make_stage_a_outputs(root: Path) -> tuple[Path, Path]:
    """Stage A chunk files built from the bundled annotated-synthetic samples, as a teacher would write them.

    Replies come in the shapes real teachers produce (fenced, with prose, trailing commas, cut off),
    plus one empty reply and one refusal, so that stage B sees failures too.
    """
    import json

    import pandas as pd

    from clinical_distil.files import write_csv
    from clinical_distil.create import OUTPUT_COLUMNS

    annotated = pd.concat([pd.read_csv(path, keep_default_na=False)
                           for path in sorted((SAMPLES / "annotated-synthetic").glob("*.csv"))])
    notes = annotated.drop_duplicates("note_id")[["subject_id", "hadm_id", "note_id", "text"]].reset_index(drop=True)
    notes_path = root / "mimic" / f"notes_{len(notes)}.csv.gz"
    write_csv(notes, notes_path)
    rows = []
    for position, (note_id, group) in enumerate(annotated.groupby("note_id", sort=True)):
        for annotation_type, question_type in TYPE_OF_ANNOTATION.items():
            subset = group[group["type"] == annotation_type]
            items = [{"question": q, "type": "numeric" if "numeric" in annotation_type else "boolean",
                      "answer": a, "section": s, "source": "not found" if annotation_type.startswith("na") else str(a),
                      "difficulty": int(d), "explanation": "From the note."}
                     for q, a, s, d in zip(subset["question"], subset["answer"], subset["section"], subset["difficulty"])]
            text, finish = json.dumps(items, indent=2), "stop"
            if position % 4 == 1:
                text = f"Here are the questions:\n```json\n{text}\n```"
            elif position % 4 == 2:
                text = text.replace("}\n]", "},\n]")  # trailing comma
            if position == 3 and question_type == "yes_no":
                text, finish = "", "stop"
            if position == 5 and question_type == "na-bool":
                text = "I am unable to write questions about this note."
            attempts = 1
            if position == 6 and question_type == "yes_no":
                text, finish, attempts = text[: len(text) // 2], "length", 3  # its two retries were cut too
            if position == 7 and question_type == "numeric":
                attempts = 2  # the first reply failed, the retry is this one
            note = notes[notes["note_id"] == note_id].iloc[0]
            rows.append({**note.to_dict(), "question_type": question_type, "prompt": "(prompt)", "output": text,
                         "model_id": "fixture-teacher", "finish_reason": finish, "prompt_tokens": 1000,
                         "output_tokens": 100, "note_truncated": False, "note_tokens_dropped": 0,
                         "attempts": attempts})
    frame = pd.DataFrame(rows, columns=OUTPUT_COLUMNS)
    chunks = root / "synthetic-output" / str(len(notes))
    for question_type, part in frame.groupby("question_type"):
        write_csv(part, chunks / f"df_{question_type}_0_{len(notes)}.csv")
    return notes_path, chunks


def sdpa_per_sequence(query, key, value, cu_seq, longest, scale, causal):
    """SDPA over each sequence that cu_seq delimits in (tokens, heads, dim) tensors: what a varlen attention
    kernel computes (the reference the attention tests hold clinical_distil.attention to)."""
    import torch

    assert int((cu_seq[1:] - cu_seq[:-1]).max()) == longest
    pieces = []
    for start, end in zip(cu_seq[:-1].tolist(), cu_seq[1:].tolist()):
        q, k, v = (tensor[start:end].transpose(0, 1) for tensor in (query, key, value))
        pieces.append(torch.nn.functional.scaled_dot_product_attention(
            q, k, v, is_causal=causal, scale=scale, enable_gqa=True).transpose(0, 1))
    return torch.cat(pieces)


def lora_directional_derivative(model_dir: Path, device: str, compiled: bool, four_bit: bool = False,
                                preserve_rng_state: bool = True) -> tuple[float, float]:
    """A LoRA model trained as finetune.py trains it (non-reentrant gradient checkpointing, LoRA dropout, decoder
    layers compiled where asked), checked against its own loss: the gradient's derivative along a random
    direction, and the loss's central difference along it with the same dropout masks (the same seed before each
    forward). They agree only when the backward recomputed each layer with the masks of its forward."""
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM

    from clinical_distil import finetune, speedups

    kwargs = {"quantization_config": finetune.quantization_config(torch.float32)} if four_bit else {}
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, device_map={"": device}, **kwargs)
    if four_bit:
        speedups.expand_nested_scales(base)
    base.config.use_cache = False
    model = get_peft_model(base, LoraConfig(r=8, target_modules="all-linear", lora_dropout=0.3,
                                            init_lora_weights=False))
    if compiled:
        speedups.compile_decoder_layers(model, checkpointing=True)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False,
                                                                       "preserve_rng_state": preserve_rng_state})
    model.train()
    ids = torch.randint(3, 200, (1, 41), generator=torch.Generator().manual_seed(1)).to(device)

    def loss() -> torch.Tensor:
        torch.manual_seed(7)
        return model(input_ids=ids, labels=ids).loss

    loss().backward()
    weights = [weight for weight in model.parameters() if weight.requires_grad]
    generator = torch.Generator().manual_seed(2)
    direction = [torch.randn(weight.shape, generator=generator).to(device) for weight in weights]
    derivative = sum(float((weight.grad * step).sum()) for weight, step in zip(weights, direction))
    epsilon, losses = 1e-3, []
    for sign in (1, -2):
        with torch.no_grad():
            for weight, step in zip(weights, direction):
                weight.add_(sign * epsilon * step)
        losses.append(float(loss()))
    return derivative, (losses[0] - losses[1]) / (2 * epsilon)
