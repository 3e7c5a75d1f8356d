"""The transformers engine: batches of similar prompts, a shared note prefix computed once, batched decoding.

Used wherever vLLM is not (CPUs, machines without it). Greedy or sampled decoding with the
model's own chat template and end tokens, an OpenAI-style frequency penalty, and JSON-schema
constrained output through xgrammar.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Sequence

from clinical_distil.chat import Conversation, conversation_ids, end_token_ids
from clinical_distil.engines import Generation, Sampling, per_request
from clinical_distil.files import InputError


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
        self._adapter_off = False

    def base_only(self) -> "TransformersEngine":
        """The same loaded model answering with its adapter turned off (the base model alone)."""
        view = copy.copy(self)
        view._adapter_off = True
        return view

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
        schemas = per_request(sampling.json_schema, len(prompts))
        generator = torch.Generator().manual_seed(sampling.seed)
        results: list[Generation] = []
        # the PEFT model with its adapter off is the base model itself (no merge, no second copy)
        adapter_off = self.model.disable_adapter() if self._adapter_off and hasattr(self.model, "disable_adapter") \
            else contextlib.nullcontext()
        with adapter_off:
            for batch_start in range(0, len(prompts), self.batch_size):
                batch = list(range(batch_start, min(batch_start + self.batch_size, len(prompts))))
                with torch.inference_mode():
                    batch_results = self._generate_batch([prompts[position] for position in batch], sampling,
                                                         [schemas[position] for position in batch] if schemas
                                                         else None, generator)
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
