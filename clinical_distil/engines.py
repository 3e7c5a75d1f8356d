"""One generation interface, two backends: vLLM on GPU nodes, transformers everywhere else.

    engine = load_engine("models/SmolLM2-135M-Instruct", engine="auto", max_model_len=8192)
    results = engine.generate(conversations, Sampling(max_tokens=256))

`generate` takes chat conversations (lists of {"role", "content"} messages) and returns one
`Generation` per conversation, in input order: text, finish reason ("stop" or "length"; vLLM
may also end a request with "abort", "error" or "repetition", kept as it says), prompt and
output token counts. Both backends render prompts with the model's own chat
template into token ids (the same ids on both; a caller that already rendered them, as
fit_notes does, passes them as `prompt_ids`), stop on the model's own end tokens (read
from its generation config and tokenizer, never hard-coded) and can constrain the output
to a JSON schema.
"""

from __future__ import annotations

import importlib.util
import logging
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from clinical_distil.files import InputError, check_model_folder

log = logging.getLogger(__name__)


@dataclass
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    json_schema: dict[str, Any] | list[dict[str, Any]] | None = None  # one schema, or one per conversation
    # subtracted from a token's logit once per time the reply already holds it (vLLM's and OpenAI's meaning):
    # breaks the loops a small model falls into; stage A's retries use it
    frequency_penalty: float = 0.0


@dataclass
class Generation:
    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int


def per_request(schema, count: int) -> list | None:
    if schema is None:
        return None
    if isinstance(schema, list):
        if len(schema) != count:
            raise ValueError(f"{len(schema)} JSON schemas for {count} conversations")
        return schema
    return [schema] * count


def vllm_available() -> bool:
    if importlib.util.find_spec("vllm") is None:
        return False
    import torch

    return torch.cuda.is_available()


DTYPES = ("auto", "bfloat16", "float16", "float32")


def check_engine_options(engine: str, dtype: str, adapter: str | None = None) -> str:
    """The engine that will run (auto: vLLM where it imports and a GPU is visible), after the checks a model
    load would fail on: known engine and dtype, an adapter folder with its config, vLLM's LoRA dtypes."""
    if engine not in ("auto", "vllm", "transformers"):
        raise InputError(f"unknown engine {engine!r}; choose auto, vllm or transformers")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose {', '.join(DTYPES)}")
    if adapter and not (Path(adapter) / "adapter_config.json").exists():
        raise InputError(f"adapter folder has no adapter_config.json: {adapter}")
    chosen = engine if engine != "auto" else ("vllm" if vllm_available() else "transformers")
    if chosen == "vllm" and adapter and dtype == "float32":
        # vLLM's LoRA kernels assert bf16/fp16 weights (seen failing on an H100 with vLLM 0.24)
        raise InputError("vLLM serves adapters in bfloat16 or float16 only; use --dtype bfloat16, or "
                         "--engine transformers for float32")
    if chosen == "vllm" and importlib.util.find_spec("vllm") is None:
        raise InputError("--engine vllm asked for, but vllm is not installed (pip install -r requirements.txt)")
    return chosen


# vLLM compiles the model (torch.compile) and captures CUDA graphs when it starts; the faster decoding they buy pays
# that back only over many decoding steps. Measured on an H200 (bench/RESULTS.md, "vLLM's start"): compiling costs
# 51-57 s with an empty compile cache (10-19 s with a warm one) and saves 15.7 ms per decoding step of 256 prompts
# for a 135M model, 2.2 ms for an 8B one. CUDA graphs of the decoding steps alone need no compiling: they take
# seconds to capture and remove most of eager decoding's kernel-launch time, which is what slows a small model.
VLLM_START_MODES = ("on", "graphs", "off")  # how VLLMEngine starts vLLM
VLLM_COMPILE = ("auto", *VLLM_START_MODES)
VLLM_COMPILE_HELP = ("vLLM's torch.compile and CUDA graphs: on (vLLM's default: up to a minute more at start, fastest "
                     "decoding), graphs (CUDA graphs of decoding steps, no torch.compile: seconds at start), off "
                     "(eager), auto (graphs when the run decodes fewer than 5,000 steps: waves of 256 prompts x the "
                     "longest reply; else on)")
COMPILE_FROM_DECODE_STEPS = 5_000
DECODE_WAVE = 256  # prompts vLLM decodes together (its max_num_seqs for offline LLM use on a large GPU)


def vllm_start_mode(vllm_compile: str, prompts: int, max_tokens: int) -> str:
    """How vLLM should start: on, graphs or off as asked, or, for `auto`, graphs when the run's decoding steps
    (waves of DECODE_WAVE prompts, each up to `max_tokens` long) are too few to win back compiling's start-up
    cost, else on."""
    if vllm_compile not in VLLM_COMPILE:
        raise InputError(f"--vllm_compile must be one of {', '.join(VLLM_COMPILE)}, got {vllm_compile!r}")
    if vllm_compile != "auto":
        return vllm_compile
    steps = math.ceil(max(prompts, 1) / DECODE_WAVE) * max_tokens
    return "graphs" if steps < COMPILE_FROM_DECODE_STEPS else "on"


def load_engine(model_id: str, engine: str = "auto", max_model_len: int | None = None,
                tensor_parallel_size: int | None = None, batch_size: int = 16, seed: int = 0,
                adapter: str | None = None, dtype: str = "auto", **vllm_options) -> Any:
    """The vLLM engine where vLLM imports and a GPU is visible (for engine='auto'), else transformers.

    dtype "auto" is bf16 on a GPU (float32 for the transformers engine on a CPU); float32 on both
    engines makes greedy replies comparable token for token (bf16 kernels differ between them).
    `vllm_options` go to the vLLM engine (start_mode, ...); the transformers engine has no use for them.
    """
    check_model_folder(model_id)
    chosen = check_engine_options(engine, dtype, adapter)
    log.info("engine: %s for %s", chosen, model_id)
    if chosen == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise InputError("--engine vllm asked for, but vllm is not installed (pip install -r requirements.txt)")
        from clinical_distil.vllm_engine import VLLMEngine

        return VLLMEngine(str(model_id), max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                          seed=seed, adapter=adapter, dtype=dtype, **vllm_options)
    from clinical_distil.hf_engine import TransformersEngine

    return TransformersEngine(str(model_id), max_model_len=max_model_len, batch_size=batch_size, adapter=adapter,
                              dtype=dtype)
