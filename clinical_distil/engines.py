"""One generation interface, two backends: vLLM on GPU nodes, transformers everywhere else.

    engine = load_engine("models/SmolLM2-135M-Instruct", engine="auto", max_model_len=8192)  # backends.py
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
import math
from dataclasses import dataclass
from typing import Any, Iterable

from clinical_distil.chat import TRUNCATION_MARK, Conversation, render_ids_batch
from clinical_distil.prompts import note_slot
from clinical_distil.files import InputError, check_adapter_folder, model_location


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


def written_reply(text: str, tokenizer, prompt_ids: list[int] | None) -> Generation:
    """A whole reply written by an engine that is no model (the reference and text-only teachers), its tokens
    counted with `tokenizer` as a model's would be for the manifest."""
    return Generation(text, "stop", len(prompt_ids or []), len(tokenizer.encode(text, add_special_tokens=False)))


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
    if adapter:
        check_adapter_folder(adapter)
    chosen = engine if engine != "auto" else ("vllm" if vllm_available() else "transformers")
    if chosen == "vllm" and adapter and dtype == "float32":
        # vLLM's LoRA kernels assert bf16/fp16 weights (seen failing on an H100 with vLLM 0.24)
        raise InputError("vLLM serves adapters in bfloat16 or float16 only; use --dtype bfloat16, or "
                         "--engine transformers for float32")
    if chosen == "vllm" and importlib.util.find_spec("vllm") is None:
        raise InputError("--engine vllm asked for, but vllm is not installed (pip install -r requirements.txt)")
    return chosen


def load_tokenizer(model_id: str) -> Any | None:
    """The model's tokenizer alone (no weights are read), for checks before the model loads; None where it
    cannot be read here (a hub id not in the cache, say): the model's load then says why."""
    try:
        from transformers import AutoTokenizer

        tokenizer = AutoTokenizer.from_pretrained(model_location(model_id))
    except Exception:  # noqa: BLE001 (whatever the reason, the load itself reports it)
        return None
    return tokenizer if getattr(tokenizer, "chat_template", None) else None


def check_prompt_room(tokenizer, prompts: Iterable[tuple[Conversation, str | None]], max_model_len: int,
                      max_tokens: int, tokens_flag: str) -> None:
    """Every prompt fits `max_model_len` beside `max_tokens` of reply, checked with the tokenizer alone before the
    model loads. `prompts` are (conversation, its note text or None) pairs, as fit_notes takes them: a prompt
    that does not fit is sent with its note shortened, which needs room for its instructions, the shortening
    mark and a token of note (chat.fit_note's rule); a prompt without a note is sent whole. Each distinct
    prompt-without-its-note is measured once; a whole prompt only where its instructions leave no such room."""
    room = max_model_len - max_tokens
    if room <= 0:
        raise InputError(f"--max_model_len {max_model_len} leaves no room for a prompt beside {tokens_flag} "
                         f"{max_tokens}; raise --max_model_len above {max_tokens} or lower {tokens_flag}")
    mark = len(tokenizer.encode(TRUNCATION_MARK, add_special_tokens=False)) + 9  # fit_note's slack and a note token
    margin = 4  # a note's tokens and the prompt's around it may merge differently than the two apart
    measured: dict[tuple, int] = {}
    tight: list[tuple[Conversation, str | None]] = []  # prompts that must fit whole, or be shortened to the token

    def settle(pending: list[tuple[Conversation, str | None]]) -> None:
        for (messages, note), ids in zip(pending, render_ids_batch(tokenizer, [messages for messages, _ in pending])):
            if len(ids) <= room:
                continue
            below = f"--max_model_len {max_model_len} is below the prompt: with {tokens_flag} {max_tokens}, {room} " \
                f"tokens are left for a prompt of {len(ids)} tokens"
            if note is None:
                raise InputError(f"{below} without a note to shorten; raise --max_model_len to at least "
                                 f"{len(ids) + max_tokens} or lower {tokens_flag}")
            overhead = len(ids) - len(tokenizer.encode(note, add_special_tokens=False))
            if overhead + mark > room:
                raise InputError(f"{below} whose instructions alone take {overhead} (its note can be shortened, they "
                                 f"cannot); raise --max_model_len to at least {overhead + mark + max_tokens} or lower "
                                 f"{tokens_flag}")

    for messages, note in prompts:
        bare = messages
        if note:
            index, start, end = note_slot(messages, note)
            bare = [dict(message) for message in messages]
            bare[index]["content"] = messages[index]["content"][:start] + messages[index]["content"][end:]
        key = tuple((message["role"], message["content"]) for message in bare)
        if key not in measured:
            measured[key] = len(render_ids_batch(tokenizer, [bare])[0])
        if measured[key] + (mark + margin if note is not None else 0) > room:
            tight.append((messages, note))
            if len(tight) >= 32:
                settle(tight)
                tight = []
    settle(tight)


# vLLM compiles the model (torch.compile) and captures CUDA graphs when it starts; the faster decoding they buy pays
# that back only over thousands of decoding steps (bench/RESULTS.md, "vLLM's start", gives the figures: compiling
# costs tens of seconds at start and saves milliseconds per decoding step, most for a small model). CUDA graphs
# of the decoding steps alone need no compiling: they take
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
