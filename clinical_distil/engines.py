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
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tqdm.auto import tqdm

from clinical_distil.files import InputError, check_model_folder

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
    # subtracted from a token's logit once per time the reply already holds it (vLLM's and OpenAI's meaning):
    # breaks the loops a small model falls into; stage A's retries use it
    frequency_penalty: float = 0.0
    ignore_eos: bool = False  # benchmarks only: always generate max_tokens


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
    prompt_ids: list[int] | None = None  # the rendered conversation's token ids, for engine.generate
    prompt_text: str | None = None  # the same rendering as text (stage A writes it beside the reply)


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
    return render_ids_batch(tokenizer, [messages])[0]


def render_ids_batch(tokenizer, conversations: Sequence[Conversation]) -> list[list[int]]:
    """render_ids for many conversations with one batched encode."""
    return render_batch(tokenizer, conversations)[1]


def render_batch(tokenizer, conversations: Sequence[Conversation]) -> tuple[list[str], list[list[int]]]:
    """The conversations through the chat template: their texts, and their token ids in one batched encode.

    Stage A's prompts are whole notes (thousands of tokens each); encoding them one by one took
    about a fifth of a stage A run on an H100, while one batch runs on the tokenizer's threads.
    The template's text is encoded without added special tokens: the template writes them itself.
    """
    if not conversations:
        return [], []
    texts = [tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
             for messages in conversations]
    return texts, [list(ids) for ids in tokenizer(texts, add_special_tokens=False)["input_ids"]]


def conversation_ids(tokenizer, conversations: Sequence[Conversation],
                     prompt_ids: Sequence[list[int] | None] | None = None) -> list[list[int]]:
    """The token ids an engine sends: `prompt_ids` where the caller has them (FittedPrompt), else rendered."""
    if prompt_ids is None or any(ids is None for ids in prompt_ids):
        return render_ids_batch(tokenizer, conversations)
    if len(prompt_ids) != len(conversations):
        raise ValueError(f"{len(prompt_ids)} token id lists for {len(conversations)} conversations")
    return [list(ids) for ids in prompt_ids]


def fit_notes(tokenizer, requests: Sequence[tuple[Conversation, str | None]],
              max_prompt_tokens: int) -> list[FittedPrompt]:
    """fit_note for many (conversation, note text) pairs: one batched render, then only the prompts
    that are too long are shortened, one by one. A conversation without a note is sent as it is.
    Each result carries its rendering (text and token ids), so nothing renders it again."""
    texts, rendered = render_batch(tokenizer, [messages for messages, _ in requests])
    return [FittedPrompt(messages, prompt_ids=ids, prompt_text=text) if note_text is None
            else fit_note(tokenizer, messages, note_text, max_prompt_tokens, prompt_ids=ids, prompt_text=text)
            for (messages, note_text), text, ids in zip(requests, texts, rendered)]


def fit_note(tokenizer, messages: Conversation, note_text: str, max_prompt_tokens: int,
             prompt_ids: list[int] | None = None, prompt_text: str | None = None) -> FittedPrompt:
    """Shorten the note inside `messages` until the rendered prompt fits `max_prompt_tokens`.

    Instructions and the request are kept whole; the middle of the note goes (its head has
    the history, its tail the discharge medications and plan). Cutting from the left, as
    the published code did, removed the system message and the instructions instead.
    `prompt_ids`, `prompt_text`: the rendering of `messages`, where the caller has it.
    """
    if prompt_ids is None or prompt_text is None:
        (prompt_text,), (prompt_ids,) = render_batch(tokenizer, [messages])
    total = len(prompt_ids)
    if total <= max_prompt_tokens:
        return FittedPrompt(messages, prompt_ids=prompt_ids, prompt_text=prompt_text)
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
        (fitted_text,), (fitted_ids,) = render_batch(tokenizer, [fitted])
        if len(fitted_ids) <= max_prompt_tokens or keep <= 1:
            return FittedPrompt(fitted, True, len(note_ids) - keep, fitted_ids, fitted_text)
        keep -= max(1, keep // 50)


def _growing_cache(layers: list[tuple], reserve: int):
    """A DynamicCache whose layers write into preallocated buffers instead of concatenating.

    DynamicCache copies every layer's whole cache on each decode step (torch.cat), which on a
    CPU costs as much as the forward pass itself; these layers copy only the new token's
    keys and values, and grow their buffers by doubling when they must.
    """
    import torch
    from transformers.cache_utils import DynamicCache, DynamicLayer

    class GrowingLayer(DynamicLayer):
        def __init__(self, keys: torch.Tensor, values: torch.Tensor):
            super().__init__()
            self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
            self.length = keys.shape[2]
            shape = (keys.shape[0], keys.shape[1], self.length + reserve, keys.shape[3])
            self.key_buffer, self.value_buffer = keys.new_empty(shape), values.new_empty(shape)
            self.key_buffer[:, :, : self.length] = keys
            self.value_buffer[:, :, : self.length] = values
            self._expose()

        def _expose(self) -> None:
            self.keys = self.key_buffer[:, :, : self.length]
            self.values = self.value_buffer[:, :, : self.length]

        def update(self, key_states, value_states, *args, **kwargs):
            needed = self.length + key_states.shape[2]
            if needed > self.key_buffer.shape[2]:
                grown = list(self.key_buffer.shape)
                grown[2] = max(needed, 2 * grown[2])
                for name in ("key_buffer", "value_buffer"):
                    bigger = getattr(self, name).new_empty(grown)
                    bigger[:, :, : self.length] = getattr(self, name)[:, :, : self.length]
                    setattr(self, name, bigger)
            self.key_buffer[:, :, self.length: needed] = key_states
            self.value_buffer[:, :, self.length: needed] = value_states
            self.length = needed
            self._expose()
            return self.keys, self.values

        def batch_select_indices(self, indices: torch.Tensor) -> None:
            self.key_buffer, self.value_buffer = self.key_buffer[indices], self.value_buffer[indices]
            self._expose()

    cache = DynamicCache()
    cache.layers = [GrowingLayer(keys, values) for keys, values in layers]
    return cache


def _sdpa_gqa_attention(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None,
                        is_causal=None, **kwargs):
    """SDPA that keeps grouped-query attention native even with a padding mask.

    transformers' own SDPA path copies the keys and values once per query group whenever a
    mask is present (its GQA shortcut needs mask-free calls); on a CPU that copy costs more
    than the attention, and a padded decode batch always has a mask.
    """
    import torch

    causal = query.shape[2] > 1 and attention_mask is None and getattr(module, "is_causal", True)
    output = torch.nn.functional.scaled_dot_product_attention(
        query, key, value, attn_mask=attention_mask, dropout_p=dropout, scale=scaling, is_causal=causal,
        enable_gqa=key.shape[1] != query.shape[1])
    return output.transpose(1, 2).contiguous(), None


def _use_sdpa_gqa(model) -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, sdpa_mask

    AttentionInterface.register("sdpa_gqa", _sdpa_gqa_attention)
    ALL_MASK_ATTENTION_FUNCTIONS.register("sdpa_gqa", sdpa_mask)
    model.set_attn_implementation("sdpa_gqa")


class TransformersEngine:
    """transformers backend: batches of similar length, left padding, greedy or sampled decoding."""

    name = "transformers"
    MIN_SHARED_PREFIX = 32  # tokens; shorter common prefixes (the chat template's header) are recomputed
    PREFILL_CHUNK = 1024  # tokens per forward pass while prefilling, to bound attention memory

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
        if self.device == "cpu" and getattr(self.model.config, "_attn_implementation", "sdpa") == "sdpa":
            _use_sdpa_gqa(self.model)
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

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling,
                 progress: Callable[[int, int], None] | None = None,
                 prompt_ids: Sequence[list[int] | None] | None = None) -> list[Generation]:
        """Prefill each prompt alone (reusing a shared prefix), then decode the batch together.

        Prefill is compute bound, so batching it buys nothing on a CPU and padding it costs
        memory; decode is bound by reading the weights, so one step for many rows costs little
        more than for one. Consecutive prompts that share a prefix (a note's four stage A
        requests) prefill that prefix once, as vLLM's prefix cache does. Finished rows leave
        the decode batch at once.
        """
        import torch

        prompts = conversation_ids(self.tokenizer, conversations, prompt_ids)
        schemas = _per_request(sampling.json_schema, len(prompts))
        generator = torch.Generator().manual_seed(sampling.seed)
        results: list[Generation] = []
        for batch_start in range(0, len(prompts), self.batch_size):
            batch = list(range(batch_start, min(batch_start + self.batch_size, len(prompts))))
            with torch.inference_mode():
                batch_results = self._generate_batch([prompts[position] for position in batch], sampling,
                                                     [schemas[position] for position in batch] if schemas else None,
                                                     generator)
            results.extend(batch_results)
            if progress:
                progress(len(batch), sum(result.output_tokens for result in batch_results))
        return results

    def _prefill(self, prompts: list[list[int]]):
        """Per prompt: (per-layer keys and values, logits of the last position)."""
        import torch
        from transformers import DynamicCache

        prefilled = []
        previous_ids: list[int] = []
        previous_layers: list[tuple] = []
        for ids in prompts:
            shared = 0
            for left, right in zip(previous_ids, ids):
                if left != right:
                    break
                shared += 1
            shared = min(shared, len(ids) - 1)  # at least one token to compute the last logits from
            if shared >= self.MIN_SHARED_PREFIX:
                cache = DynamicCache(ddp_cache_data=[(keys[:, :, :shared], values[:, :, :shared])
                                                     for keys, values in previous_layers])
            else:
                cache, shared = DynamicCache(), 0
            logits = None
            for chunk_start in range(shared, len(ids), self.PREFILL_CHUNK):
                chunk = torch.tensor([ids[chunk_start: chunk_start + self.PREFILL_CHUNK]], device=self.device)
                output = self.model(input_ids=chunk, past_key_values=cache, use_cache=True, logits_to_keep=1)
                cache, logits = output.past_key_values, output.logits[0, -1].float()
            layers = [(layer.keys, layer.values) for layer in cache.layers]
            prefilled.append((layers, logits))
            previous_ids, previous_layers = ids, layers
        return prefilled

    def _generate_batch(self, prompts: list[list[int]], sampling: Sampling, schemas: list | None,
                        generator) -> list[Generation]:
        import torch

        prefilled = self._prefill(prompts)
        count = len(prompts)

        def budget_for(ids: list[int]) -> int:
            return max(1, min(sampling.max_tokens, self.max_model_len - len(ids)))

        lengths = torch.tensor([len(ids) for ids in prompts], device=self.device)
        longest = int(lengths.max())
        # left-pad every prompt's cache to the longest one; the mask hides the padding
        layers = []
        for layer_index in range(len(prefilled[0][0])):
            keys = prefilled[0][0][layer_index][0]
            shape = (count, keys.shape[1], longest, keys.shape[3])
            batch_keys = keys.new_zeros(shape)
            batch_values = keys.new_zeros(shape)
            for row, (row_layers, _) in enumerate(prefilled):
                row_keys, row_values = row_layers[layer_index]
                batch_keys[row, :, longest - row_keys.shape[2]:] = row_keys[0]
                batch_values[row, :, longest - row_values.shape[2]:] = row_values[0]
            layers.append((batch_keys, batch_values))
        budget = [budget_for(ids) for ids in prompts]
        cache = _growing_cache(layers, reserve=max(budget))
        logits = torch.stack([row_logits for _, row_logits in prefilled])
        del prefilled, layers
        mask = (torch.arange(longest, device=self.device)[None, :] >= (longest - lengths)[:, None]).long()
        positions = lengths.clone()  # the next token's position in each row
        rows = list(range(count))  # batch row -> prompt index, shrinking as rows finish
        matchers = self._json_matchers(schemas) if schemas else None
        tokens: list[list[int]] = [[] for _ in range(count)]
        reasons = ["length"] * count
        # per prompt: how often each token is already in its reply (for the frequency penalty)
        token_counts = torch.zeros((count, logits.shape[-1]), device=self.device) if sampling.frequency_penalty else None
        while rows:
            if token_counts is not None:
                logits = logits - sampling.frequency_penalty * token_counts[rows]
            if matchers is not None:
                import xgrammar

                bitmask = xgrammar.allocate_token_bitmask(len(rows), self.model.config.vocab_size)
                for row, prompt_index in enumerate(rows):
                    matchers[prompt_index].fill_next_token_bitmask(bitmask, row)
                logits = logits[:, : self.model.config.vocab_size].cpu()
                xgrammar.apply_token_bitmask_inplace(logits, bitmask)
            if sampling.ignore_eos:
                logits[:, self.stop_ids] = float("-inf")
            chosen = self._pick(logits, sampling, generator).tolist()
            keep = []
            for row, (prompt_index, token) in enumerate(zip(rows, chosen)):
                tokens[prompt_index].append(token)
                if token_counts is not None:
                    token_counts[prompt_index, token] += 1
                if matchers is not None:
                    matchers[prompt_index].accept_token(token)
                if token in self.stop_ids:
                    reasons[prompt_index] = "stop"
                elif len(tokens[prompt_index]) < budget[prompt_index]:
                    keep.append(row)
            if not keep:
                break
            if len(keep) < len(rows):
                index = torch.tensor(keep, device=self.device)
                cache.batch_select_indices(index)
                mask, positions = mask[index], positions[index]
                rows = [rows[row] for row in keep]
                chosen = [chosen[row] for row in keep]
            mask = torch.cat([mask, mask.new_ones((len(rows), 1))], dim=1)
            output = self.model(input_ids=torch.tensor(chosen, device=self.device)[:, None], attention_mask=mask,
                                position_ids=positions[:, None], past_key_values=cache, use_cache=True)
            cache, logits = output.past_key_values, output.logits[:, -1].float()
            positions = positions + 1
        results = []
        for ids, generated, reason in zip(prompts, tokens, reasons):
            text_tokens = generated[:-1] if reason == "stop" else generated
            results.append(Generation(self.tokenizer.decode(text_tokens, skip_special_tokens=True), reason,
                                      len(ids), len(generated)))
        return results

    @staticmethod
    def _pick(logits, sampling: Sampling, generator):
        import torch

        if sampling.temperature <= 0:
            return logits.argmax(dim=-1)
        probabilities = torch.softmax(logits / sampling.temperature, dim=-1)
        if sampling.top_p < 1.0:
            sorted_probabilities, order = probabilities.sort(dim=-1, descending=True)
            outside = sorted_probabilities.cumsum(dim=-1) - sorted_probabilities > sampling.top_p
            sorted_probabilities[outside] = 0.0
            probabilities = torch.zeros_like(probabilities).scatter(-1, order, sorted_probabilities)
        return torch.multinomial(probabilities.cpu(), 1, generator=generator)[:, 0].to(logits.device)

    def _json_matchers(self, schemas: list[dict]):
        import json

        import xgrammar

        if self._grammar_compiler is None:
            info = xgrammar.TokenizerInfo.from_huggingface(
                self.tokenizer, vocab_size=self.model.config.vocab_size, stop_token_ids=self.stop_ids)
            self._grammar_compiler = xgrammar.GrammarCompiler(info)
        compiled: dict[str, Any] = {}
        matchers = []
        for schema in schemas:
            key = json.dumps(schema, sort_keys=True)
            if key not in compiled:
                # compile the schema as written: its key order is the order the model writes the keys in
                compiled[key] = self._grammar_compiler.compile_json_schema(json.dumps(schema))
            matchers.append(xgrammar.GrammarMatcher(compiled[key]))
        return matchers


class VLLMEngine:
    """vLLM backend: tensor parallel, bf16, prefix caching, optional JSON-schema structured output."""

    name = "vllm"

    def __init__(self, model_id: str, max_model_len: int | None = None, tensor_parallel_size: int | None = None,
                 gpu_memory_utilization: float = 0.9, enforce_eager: bool = False, seed: int = 0,
                 adapter: str | None = None, max_lora_rank: int = 64, max_num_batched_tokens: int | None = None,
                 dtype: str = "auto", enable_prefix_caching: bool = True, **llm_options: Any):
        """`llm_options` go to vllm.LLM as they are (benchmarks: load_format="dummy", compilation_config)."""
        import os

        import torch

        # spawn, not fork: the parent may already hold a CUDA context (a model built or timed before)
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        from vllm import LLM

        self.model_id = model_id
        self.adapter = adapter
        options: dict[str, Any] = dict(
            model=model_id, tensor_parallel_size=tensor_parallel_size or max(1, torch.cuda.device_count()),
            dtype="bfloat16" if dtype == "auto" else dtype, enable_prefix_caching=enable_prefix_caching,
            gpu_memory_utilization=gpu_memory_utilization,
            enforce_eager=enforce_eager, seed=seed)
        if max_model_len:
            options["max_model_len"] = max_model_len
        if max_num_batched_tokens:
            options["max_num_batched_tokens"] = max_num_batched_tokens
        if adapter:
            options.update(enable_lora=True, max_lora_rank=max_lora_rank, max_loras=1)
        options.update(llm_options)
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
                 progress: Callable[[int, int], None] | None = None,
                 prompt_ids: Sequence[list[int] | None] | None = None) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        prompts = conversation_ids(self.tokenizer, conversations, prompt_ids)
        schemas = _per_request(sampling.json_schema, len(prompts))
        params = []
        for position, ids in enumerate(prompts):
            options: dict[str, Any] = dict(
                max_tokens=max(1, min(sampling.max_tokens, self.max_model_len - len(ids))),
                temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                stop_token_ids=self.stop_ids, skip_special_tokens=True, ignore_eos=sampling.ignore_eos,
                frequency_penalty=sampling.frequency_penalty)
            if sampling.temperature > 0:
                # a seed per request: the same request samples the same reply whatever its batch
                options["seed"] = sampling.seed + position
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
            # vLLM's own word: folding "abort" or "error" into "stop" would pass a broken reply as whole
            reason = completion.finish_reason or "stop"
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


DTYPES = ("auto", "bfloat16", "float16", "float32")


def load_engine(model_id: str, engine: str = "auto", max_model_len: int | None = None,
                tensor_parallel_size: int | None = None, batch_size: int = 16, seed: int = 0,
                adapter: str | None = None, dtype: str = "auto", **vllm_options) -> TransformersEngine | VLLMEngine:
    """The vLLM engine where vLLM imports and a GPU is visible (for engine='auto'), else transformers.

    dtype "auto" is bf16 on a GPU (float32 for the transformers engine on a CPU); float32 on both
    engines makes greedy replies comparable token for token (bf16 kernels differ between them).
    """
    if engine not in ("auto", "vllm", "transformers"):
        raise InputError(f"unknown engine {engine!r}; choose auto, vllm or transformers")
    if dtype not in DTYPES:
        raise InputError(f"unknown dtype {dtype!r}; choose {', '.join(DTYPES)}")
    check_model_folder(model_id)
    if adapter and not (Path(adapter) / "adapter_config.json").exists():
        raise InputError(f"adapter folder has no adapter_config.json: {adapter}")
    chosen = engine if engine != "auto" else ("vllm" if vllm_available() else "transformers")
    if chosen == "vllm" and adapter and dtype == "float32":
        # vLLM's LoRA kernels assert bf16/fp16 weights (seen failing on an H100 with vLLM 0.24)
        raise InputError("vLLM serves adapters in bfloat16 or float16 only; use --dtype bfloat16, or "
                         "--engine transformers for float32")
    log.info("engine: %s for %s", chosen, model_id)
    if chosen == "vllm":
        if importlib.util.find_spec("vllm") is None:
            raise InputError("--engine vllm asked for, but vllm is not installed (pip install -r requirements.txt)")
        return VLLMEngine(str(model_id), max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size,
                          seed=seed, adapter=adapter, dtype=dtype, **vllm_options)
    return TransformersEngine(str(model_id), max_model_len=max_model_len, batch_size=batch_size, adapter=adapter,
                              dtype=dtype)


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
