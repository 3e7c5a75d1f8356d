"""vLLM's start against its decoding: compiled (cold and warm compile cache) and eager, one process each.

    python bench/vllm_start.py --models models/SmolLM2-135M-Instruct,llama-3.1-8b --output /tmp/vllm_start.json

For each model (a folder, or a Llama shape of bench/shapes.py served with vLLM's dummy weights) and each
mode, a fresh process times `import vllm`, the engine's start (vllm.LLM through the project's VLLMEngine)
and one wave of `--prompts` prompts of `--prompt_tokens` tokens decoding exactly `--output_tokens` tokens
(end tokens ignored). Modes: `compiled_cold` (torch.compile and CUDA graphs, an empty compile cache),
`compiled_warm` (the same again, its cache kept), `eager` (enforce_eager), `eager_inprocess` (eager with
vLLM's engine core in the calling process, VLLM_ENABLE_V1_MULTIPROCESSING=0: no second process to start
and import). The per-step decoding time of
each mode gives the number of decoding steps after which compiling pays for its start:
clinical_distil.engines.EAGER_BELOW_DECODE_STEPS is set from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from shapes import LLAMA_SHAPES, build_random_model

from clinical_distil.cli import run
from clinical_distil.files import InputError

REPO = Path(__file__).resolve().parent.parent
MODES = ("compiled_cold", "compiled_warm", "eager", "eager_inprocess")

ONE_START = """
import json, sys, time
started = time.perf_counter()
import vllm  # noqa: F401
imported = time.perf_counter()
from clinical_distil.vllm_engine import VLLMEngine
from vllm import SamplingParams
from vllm.inputs import TokensPrompt
model, eager, prompts, prompt_tokens, output_tokens, dummy = json.loads(sys.argv[1])
options = {"load_format": "dummy"} if dummy else {}
engine = VLLMEngine(model, max_model_len=prompt_tokens + output_tokens + 16, enforce_eager=eager,
                    enable_prefix_caching=False, **options)
ready = time.perf_counter()
vocabulary = engine.tokenizer.vocab_size
requests = [TokensPrompt(prompt_token_ids=[(index * 7919 + position * 104729) % (vocabulary - 1000) + 500
                                           for position in range(prompt_tokens)]) for index in range(prompts)]
params = SamplingParams(max_tokens=output_tokens, ignore_eos=True, temperature=0.0)
engine.llm.generate(requests[:2], SamplingParams(max_tokens=4, ignore_eos=True), use_tqdm=False)
warm = time.perf_counter()
outputs = engine.llm.generate(requests, params, use_tqdm=False)
done = time.perf_counter()
produced = sum(len(output.outputs[0].token_ids) for output in outputs)
print("RESULT " + json.dumps({"import_seconds": round(imported - started, 2),
                             "start_seconds": round(ready - imported, 2),
                             "generate_seconds": round(done - warm, 3), "output_tokens": produced}))
"""


def one_start(model: str, mode: str, cache_dir: str, prompts: int, prompt_tokens: int, output_tokens: int,
              dummy: bool) -> dict:
    env = {**os.environ, "VLLM_CACHE_ROOT": cache_dir, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
    if mode == "eager_inprocess":
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "0"
    arguments = json.dumps([model, mode.startswith("eager"), prompts, prompt_tokens, output_tokens, dummy])
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-c", ONE_START, arguments], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    lines = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    if finished.returncode != 0 or not lines:
        return {"mode": mode, "error": (finished.stderr.strip().splitlines() or ["no output"])[-1]}
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(mode=mode, process_seconds=round(wall, 2),
                  decode_ms_per_step=round(1e3 * result["generate_seconds"] / output_tokens, 3))
    return result


def listed(value: str | tuple) -> list[str]:
    """A comma-separated flag's items (fire reads `a,b` of plain words as a tuple)."""
    return [part.strip() for part in value.split(",")] if isinstance(value, str) else [str(part) for part in value]


def main(models: str | tuple = "models/SmolLM2-135M-Instruct", modes: str | tuple = ",".join(MODES), prompts: int = 256,
         prompt_tokens: int = 512, output_tokens: int = 256, work_dir: str = "/tmp/vllm-start",
         tokenizer: str = "models/smollm2-tokenizer", output: str = "") -> None:
    """Time vLLM's start and one decoding wave per model and mode; print the rows and the break-even.

    Args:
        models: model folders or Llama shape names (dummy weights), comma-separated.
        modes: some of compiled_cold, compiled_warm, eager, eager_inprocess (compiled_warm reuses
            compiled_cold's cache).
        prompts: prompts decoded together (one wave).
        prompt_tokens: tokens per prompt.
        output_tokens: tokens decoded per prompt (end tokens ignored).
        work_dir: where shapes' configs and the compile caches go.
        tokenizer: tokenizer folder for a shape.
        output: a JSON file for the rows (with the card and the date).
    """
    import torch

    chosen = listed(modes)
    unknown = [mode for mode in chosen if mode not in MODES]
    if unknown:
        raise InputError(f"--modes: unknown mode(s) {unknown}; choose from {', '.join(MODES)}")
    rows = []
    for model in listed(models):
        dummy = model in LLAMA_SHAPES
        folder = str(build_random_model(model, Path(work_dir) / model, tokenizer_dir=REPO / tokenizer, weights=False)
                     if dummy else model)
        cache = tempfile.mkdtemp(prefix="vllm-cache-", dir=work_dir if Path(work_dir).is_dir() else None)
        by_mode = {}
        for mode in chosen:
            row = {"model": model, **one_start(folder, mode, cache, prompts, prompt_tokens, output_tokens, dummy)}
            by_mode[mode] = row
            rows.append(row)
            print(json.dumps(row), flush=True)
        eager, compiled = by_mode.get("eager"), by_mode.get("compiled_cold")
        warm = by_mode.get("compiled_warm")
        if eager and compiled and "error" not in eager and "error" not in compiled:
            extra_ms = eager["decode_ms_per_step"] - compiled["decode_ms_per_step"]
            for name, row in (("cold", compiled), ("warm", warm)):
                if row and "error" not in row:
                    saved = row["start_seconds"] - eager["start_seconds"]
                    steps = round(1e3 * saved / extra_ms) if extra_ms > 0 else None
                    print(f"{model}: compiling ({name} cache) costs {saved:.1f} s more at start and saves "
                          f"{extra_ms:.2f} ms per decoding step of {prompts} prompts: it pays after "
                          f"{steps if steps is not None else 'no number of'} steps")
                    rows.append({"model": model, "break_even": name, "start_seconds_saved_by_eager": round(saved, 2),
                                 "decode_ms_per_step_lost_by_eager": round(extra_ms, 3), "break_even_steps": steps})
    if output:
        card = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
        Path(output).write_text(json.dumps({"date": time.strftime("%Y-%m-%d"), "card": card,
                                            "command": " ".join(["python bench/vllm_start.py", *sys.argv[1:]]),
                                            "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    run(main)
