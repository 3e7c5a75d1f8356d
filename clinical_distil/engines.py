"""One generation interface, two backends: vLLM on GPU nodes, transformers everywhere else.

    engine = load_engine("models/SmolLM2-135M-Instruct", engine="auto", max_model_len=8192)
    results = engine.generate(conversations, Sampling(max_tokens=256))

`generate` takes chat conversations (lists of {"role", "content"} messages) and returns one
`Generation` per conversation, in input order: text, finish reason ("stop" or "length"),
prompt and output token counts. Both backends render prompts with the model's own chat
template into token ids (the same ids on both), stop on the model's own end tokens (read
from its generation config and tokenizer, never hard-coded) and can constrain the output
to a JSON schema.
"""

from __future__ import annotations

import importlib.util
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from clinical_distil.files import InputError

log = logging.getLogger(__name__)

Conversation = list[dict[str, str]]
TRUNCATION_MARK = "\n[... note shortened to fit the context ...]\n"


@dataclass
class Sampling:
    max_tokens: int = 256
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0
    json_schema: dict[str, Any] | list[dict[str, Any]] | None = None  # one schema, or one per conversation


@dataclass
class Generation:
    text: str
    finish_reason: str
    prompt_tokens: int
    output_tokens: int


@dataclass
class FittedPrompt:
    """A conversation that fits the context, and how much of its note was cut to get there."""

    messages: Conversation
    note_truncated: bool = False
    note_tokens_dropped: int = 0


def end_token_ids(tokenizer, generation_config=None) -> list[int]:
    """The model's own end tokens: generation config's eos ids plus the tokenizer's eos."""
    ids: set[int] = set()
    configured = getattr(generation_config, "eos_token_id", None)
    if isinstance(configured, int):
        ids.add(configured)
    elif configured:
        ids.update(configured)
    if tokenizer.eos_token_id is not None:
        ids.add(tokenizer.eos_token_id)
    return sorted(ids)


def render_ids(tokenizer, messages: Conversation) -> list[int]:
    """Token ids of a conversation through the model's chat template, ready for the reply."""
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return list(ids)


def fit_note(tokenizer, messages: Conversation, note_text: str, max_prompt_tokens: int) -> FittedPrompt:
    """Shorten the note inside `messages` until the rendered prompt fits `max_prompt_tokens`.

    Instructions and the request are kept whole; the middle of the note goes (its head has
    the history, its tail the discharge medications and plan). Cutting from the left, as
    the published code did, removed the system message and the instructions instead.
    """
    total = len(render_ids(tokenizer, messages))
    if total <= max_prompt_tokens:
        return FittedPrompt(messages)
    from clinical_distil.prompts import note_slot

    index, start, end = note_slot(messages, note_text)
    note_ids = tokenizer.encode(note_text, add_special_tokens=False)
    overhead = total - len(note_ids)
    mark_tokens = len(tokenizer.encode(TRUNCATION_MARK, add_special_tokens=False))
    keep = max_prompt_tokens - overhead - mark_tokens - 8  # a little slack for merges at the cut points
    if keep <= 0:
        raise InputError(f"the instructions alone take {overhead} tokens, more than the {max_prompt_tokens} "
                         "tokens left for the prompt; raise --max_model_len or lower --max_tokens")
    while True:
        head, tail = note_ids[: keep - keep // 2], note_ids[len(note_ids) - keep // 2:] if keep // 2 else []
        shortened = tokenizer.decode(head) + TRUNCATION_MARK + tokenizer.decode(tail)
        content = messages[index]["content"]
        fitted = [dict(message) for message in messages]
        fitted[index]["content"] = content[:start] + shortened + content[end:]
        if len(render_ids(tokenizer, fitted)) <= max_prompt_tokens or keep <= 1:
            return FittedPrompt(fitted, True, len(note_ids) - keep)
        keep -= max(1, keep // 50)


class TransformersEngine:
    """transformers backend: batches of similar length, left padding, greedy or sampled decoding."""

    name = "transformers"

    def __init__(self, model_id: str, max_model_len: int | None = None, batch_size: int = 16,
                 dtype: str = "auto", device: str | None = None, adapter: str | None = None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.model_id = model_id
        self.device = device or ("cuda" if torch.cuda.is_available() else "cpu")
        try:
            self.tokenizer = AutoTokenizer.from_pretrained(model_id)
            torch_dtype = (torch.bfloat16 if self.device == "cuda" else torch.float32) if dtype == "auto" else getattr(torch, dtype)
            self.model = AutoModelForCausalLM.from_pretrained(model_id, dtype=torch_dtype).to(self.device)
        except OSError as error:
            raise InputError(f"cannot load model {model_id!r}: not a local model folder, and the hub is offline "
                             "here; give a folder with config.json and weights") from error
        if adapter:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, adapter)
        self.model.eval()
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token_id is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.stop_ids = end_token_ids(self.tokenizer, self.model.generation_config)
        self.max_model_len = max_model_len or getattr(self.model.config, "max_position_embeddings", 8192)
        self.batch_size = batch_size
        self._grammar_compiler = None

    def _json_processor(self, schemas: list[dict]):
        import json

        import xgrammar

        if self._grammar_compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.model.config.vocab_size, stop_token_ids=self.stop_ids)
            self._grammar_compiler = xgrammar.GrammarCompiler(info)
        compiled = [self._grammar_compiler.compile_json_schema(json.dumps(schema)) for schema in schemas]
        return xgrammar.contrib.hf.LogitsProcessor(compiled)

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling,
                 progress: Callable[[int, int], None] | None = None) -> list[Generation]:
        import torch

        prompts = [render_ids(self.tokenizer, messages) for messages in conversations]
        schemas = _per_request(sampling.json_schema, len(prompts))
        # sort by length so each batch pads little; results go back to input order
        order = sorted(range(len(prompts)), key=lambda position: len(prompts[position]), reverse=True)
        results: list[Generation | None] = [None] * len(prompts)
        torch.manual_seed(sampling.seed)
        for batch_start in range(0, len(order), self.batch_size):
            batch = order[batch_start: batch_start + self.batch_size]
            longest = max(len(prompts[position]) for position in batch)
            input_ids = torch.full((len(batch), longest), self.tokenizer.pad_token_id, dtype=torch.long)
            attention = torch.zeros((len(batch), longest), dtype=torch.long)
            for row, position in enumerate(batch):
                ids = prompts[position]
                input_ids[row, longest - len(ids):] = torch.tensor(ids)
                attention[row, longest - len(ids):] = 1
            max_new = max(1, min(sampling.max_tokens, self.max_model_len - longest))
            kwargs: dict[str, Any] = dict(max_new_tokens=max_new, eos_token_id=self.stop_ids,
                                          pad_token_id=self.tokenizer.pad_token_id)
            if sampling.temperature > 0:
                kwargs.update(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p, top_k=0)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if schemas is not None:
                kwargs["logits_processor"] = [self._json_processor([schemas[position] for position in batch])]
            with torch.inference_mode():
                output = self.model.generate(input_ids=input_ids.to(self.device),
                                             attention_mask=attention.to(self.device), **kwargs)
            for row, position in enumerate(batch):
                new_tokens = output[row, longest:].tolist()
                stop_at = next((index for index, token in enumerate(new_tokens) if token in self.stop_ids), None)
                if stop_at is None:
                    kept, reason = [token for token in new_tokens if token != self.tokenizer.pad_token_id], "length"
                    counted = len(kept)
                else:
                    kept, reason, counted = new_tokens[:stop_at], "stop", stop_at + 1
                results[position] = Generation(self.tokenizer.decode(kept, skip_special_tokens=True), reason,
                                               len(prompts[position]), counted)
            if progress:
                progress(len(batch), sum(results[position].output_tokens for position in batch))
        return results  # type: ignore[return-value]


class VLLMEngine:
    """vLLM backend: tensor parallel, bf16, prefix caching, optional JSON-schema structured output."""

    name = "vllm"

    def __init__(self, model_id: str, max_model_len: int | None = None, tensor_parallel_size: int | None = None,
                 gpu_memory_utilization: float = 0.9, enforce_eager: bool = False, seed: int = 0,
                 adapter: str | None = None, max_lora_rank: int = 64):
        import torch
        from vllm import LLM

        if not Path(model_id).exists() and "/" not in model_id:
            raise InputError(f"model not found: {model_id!r} is neither a folder nor a hub id")
        self.model_id = model_id
        self.adapter = adapter
        options: dict[str, Any] = dict(
            model=model_id, tensor_parallel_size=tensor_parallel_size or max(1, torch.cuda.device_count()),
            dtype="bfloat16", enable_prefix_caching=True, gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager, seed=seed)
        if max_model_len:
            options["max_model_len"] = max_model_len
        if adapter:
            options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        self.llm = LLM(**options)
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        from transformers import GenerationConfig

        try:
            generation_config = GenerationConfig.from_pretrained(model_id)
        except OSError:
            generation_config = None
        self.stop_ids = end_token_ids(self.tokenizer, generation_config)

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling,
                 progress: Callable[[int, int], None] | None = None) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        prompts = [render_ids(self.tokenizer, messages) for messages in conversations]
        schemas = _per_request(sampling.json_schema, len(prompts))
        params = []
        for position, ids in enumerate(prompts):
            options: dict[str, Any] = dict(
                max_tokens=max(1, min(sampling.max_tokens, self.max_model_len - len(ids))),
                temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                seed=sampling.seed + position, stop_token_ids=self.stop_ids, skip_special_tokens=True)
            if schemas is not None:
                options["structured_outputs"] = StructuredOutputsParams(json=schemas[position])
            params.append(SamplingParams(**options))
        lora = None
        if self.adapter:
            from vllm.lora.request import LoRARequest

            lora = LoRARequest("adapter", 1, self.adapter)
        outputs = self.llm.generate([TokensPrompt(prompt_token_ids=ids) for ids in prompts], params,
                                    use_tqdm=progress is None, lora_request=lora)
        results = []
        for ids, output in zip(prompts, outputs):
            completion = output.outputs[0]
            reason = "length" if completion.finish_reason == "length" else "stop"
            results.append(Generation(completion.text, reason, len(ids), len(completion.token_ids)))
        if progress:
            progress(len(results), sum(result.output_tokens for result in results))
        return results


def _per_request(schema, count: int) -> list | None:
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


def load_engine(model_id: str, engine: str = "auto", max_model_len: int | None = None,
                tensor_parallel_size: int | None = None, batch_size: int = 16, seed: int = 0,
                adapter: str | None = None, **vllm_options) -> TransformersEngine | VLLMEngine:
    """The vLLM engine where vLLM imports and a GPU is visible (for engine='auto'), else transformers."""
    if engine not in ("auto", "vllm", "transformers"):
        raise InputError(f"unknown engine {engine!r}; choose auto, vllm or transformers")
    local = Path(model_id).expanduser()
    if (local.is_absolute() or model_id.startswith((".", "~")) or local.exists()) and not (local / "config.json").exists():
        raise InputError(f"model folder not found or has no config.json: {model_id}")
    if adapter and not (Path(adapter) / "adapter_config.json").exists():
        raise InputError(f"adapter folder has no adapter_config.json: {adapter}")
    chosen = engine if engine != "auto" else ("vllm" if vllm_available() else "transformers")
    log.info("engine: %s for %s", chosen, model_id)
    if chosen == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise InputError("--engine vllm asked for, but vllm is not installed (pip install -r requirements.txt)")
        return VLLMEngine(str(model_id), max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                          seed=seed, adapter=adapter, **vllm_options)
    return TransformersEngine(str(model_id), max_model_len=max_model_len, batch_size=batch_size, adapter=adapter)


class Throughput:
    """Counts requests and output tokens for a tqdm bar and the run summary."""

    def __init__(self, total: int, description: str, disable: bool = False):
        self.bar = tqdm(total=total, desc=description, unit="prompt", disable=disable)
        self.started = time.perf_counter()
        self.requests = 0
        self.output_tokens = 0

    def __call__(self, requests: int, output_tokens: int) -> None:
        self.requests += requests
        self.output_tokens += output_tokens
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.bar.update(requests)
        self.bar.set_postfix(prompts_s=f"{self.requests / elapsed:.2f}", out_tok_s=f"{self.output_tokens / elapsed:.1f}")

    @property
    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def close(self) -> None:
        self.bar.close()


def chunk_ranges(start: int, stop: int, chunk_size: int) -> list[tuple[int, int]]:
    if chunk_size < 1:
        raise InputError(f"--chunk_size must be positive, got {chunk_size}")
    return [(low, min(low + chunk_size, stop)) for low in range(start, stop, chunk_size)]


def shard_chunks(chunks: list[tuple[int, int]], num_shards: int, shard_index: int) -> list[tuple[int, int]]:
    """Chunks of one shard: round-robin, so shards together cover every chunk exactly once."""
    if num_shards < 1:
        raise InputError(f"--num_shards must be at least 1, got {num_shards}")
    if not 0 <= shard_index < num_shards:
        raise InputError(f"--shard_index must be in 0..{num_shards - 1}, got {shard_index}")
    return [chunk for position, chunk in enumerate(chunks) if position % num_shards == shard_index]


def package_versions() -> dict[str, str]:
    from importlib.metadata import PackageNotFoundError, version

    found = {}
    for name in ("torch", "transformers", "vllm", "xgrammar"):
        try:
            found[name] = version(name)
        except PackageNotFoundError:
            pass
    return found
