"""vLLM's start against its decoding: compiled (cold and warm compile cache), CUDA graphs only, eager; one process each.

    python bench/vllm_start.py --models models/SmolLM2-135M-Instruct,llama-3.1-8b --output /tmp/vllm_start.json

For each model (a folder, or a Llama shape of bench/shapes.py served with vLLM's dummy weights) and each
mode, a fresh process times `import vllm`, the engine's start (vllm.LLM through the project's VLLMEngine),
one wave of `--prompts` prompts of `--prompt_tokens` tokens decoding exactly `--output_tokens` tokens (end
tokens ignored), and one prompt alone decoding as many (the tail of a run, where one long reply is left).
Modes: `compiled_cold` (torch.compile and CUDA graphs, an empty compile cache), `compiled_warm` (the same
again, its cache kept), `graphs` (CUDA graphs of decoding steps, no torch.compile), `eager` (enforce_eager);
all with the engine core in the calling process, as VLLMEngine starts it on one GPU, and `eager_two_process`
(eager, the engine core in a process of its own: vLLM's default). The per-step decoding times give the
number of decoding steps after which compiling pays for its start:
clinical_distil.engines.COMPILE_FROM_DECODE_STEPS is set from it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from clinical_distil.provenance import provenance
from shapes import LLAMA_SHAPES, build_random_model

from clinical_distil.cli import run
from clinical_distil.files import InputError

REPO = Path(__file__).resolve().parent.parent
# bench mode -> how VLLMEngine starts vLLM (eager_two_process: eager, the engine core in its own process)
START_MODE = {"compiled_cold": "on", "compiled_warm": "on", "graphs": "graphs", "eager": "off",
              "eager_two_process": "off"}
MODES = tuple(START_MODE)

ONE_START = """
import json, sys, time
started = time.perf_counter()
import vllm  # noqa: F401
imported = time.perf_counter()
from clinical_distil.vllm_engine import VLLMEngine
from vllm import SamplingParams
from vllm.inputs import TokensPrompt
model, start_mode, prompts, prompt_tokens, output_tokens, dummy = json.loads(sys.argv[1])
options = {"load_format": "dummy"} if dummy else {}
engine = VLLMEngine(model, max_model_len=prompt_tokens + output_tokens + 16, start_mode=start_mode,
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
engine.llm.generate(requests[-1:], params, use_tqdm=False)
alone = time.perf_counter()
produced = sum(len(output.outputs[0].token_ids) for output in outputs)
print("RESULT " + json.dumps({"import_seconds": round(imported - started, 2),
                             "start_seconds": round(ready - imported, 2),
                             "generate_seconds": round(done - warm, 3), "output_tokens": produced,
                             "one_prompt_seconds": round(alone - done, 3)}))
"""


def one_start(model: str, mode: str, cache_dir: str, prompts: int, prompt_tokens: int, output_tokens: int,
              dummy: bool) -> dict:
    env = {**os.environ, "VLLM_CACHE_ROOT": cache_dir, "PYTHONPATH": f"{REPO}:{os.environ.get('PYTHONPATH', '')}"}
    if mode == "eager_two_process":
        env["VLLM_ENABLE_V1_MULTIPROCESSING"] = "1"
    arguments = json.dumps([model, START_MODE[mode], prompts, prompt_tokens, output_tokens, dummy])
    started = time.perf_counter()
    finished = subprocess.run([sys.executable, "-c", ONE_START, arguments], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - started
    lines = [line for line in finished.stdout.splitlines() if line.startswith("RESULT ")]
    if finished.returncode != 0 or not lines:
        return {"mode": mode, "error": (finished.stderr.strip().splitlines() or ["no output"])[-1]}
    result = json.loads(lines[-1][len("RESULT "):])
    result.update(mode=mode, process_seconds=round(wall, 2),
                  decode_ms_per_step=round(1e3 * result["generate_seconds"] / output_tokens, 3),
                  one_prompt_ms_per_step=round(1e3 * result["one_prompt_seconds"] / output_tokens, 3))
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
        modes: some of compiled_cold, compiled_warm, graphs, eager, eager_two_process (compiled_warm
            reuses compiled_cold's cache).
        prompts: prompts decoded together (one wave).
        prompt_tokens: tokens per prompt.
        output_tokens: tokens decoded per prompt (end tokens ignored).
        work_dir: where shapes' configs and the compile caches go.
        tokenizer: tokenizer folder for a shape.
        output: a JSON file for the run: its date, card, command and code, and the rows.
    """
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
        for cheaper in ("graphs", "eager"):  # a start without compiling, against compiling
            quick = by_mode.get(cheaper)
            if not quick or "error" in quick:
                continue
            for name in ("compiled_cold", "compiled_warm"):
                row = by_mode.get(name)
                if not row or "error" in row:
                    continue
                extra_ms = quick["decode_ms_per_step"] - row["decode_ms_per_step"]
                saved = row["start_seconds"] - quick["start_seconds"]
                steps = round(1e3 * saved / extra_ms) if extra_ms > 0 else None
                print(f"{model}: {name} costs {saved:.1f} s more at start than {cheaper} and saves {extra_ms:.2f} ms "
                      f"per decoding step of {prompts} prompts: it pays after "
                      f"{steps if steps is not None else 'no number of'} steps")
                rows.append({"model": model, "break_even": f"{name} vs {cheaper}",
                             "start_seconds_saved": round(saved, 2),
                             "decode_ms_per_step_lost": round(extra_ms, 3), "break_even_steps": steps})
    if output:  # one run record: append it to bench/vllm_start.json's runs for bench/RESULTS.md
        Path(output).write_text(json.dumps({**provenance("bench/vllm_start.py"), "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    run(main)
