"""The vLLM engine: tensor parallel, bf16, prefix caching, JSON-schema structured output, LoRA adapters."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any, Callable, Sequence

from clinical_distil.chat import Conversation, conversation_ids, end_token_ids
from clinical_distil.engines import VLLM_START_MODES, Generation, Sampling, per_request
from clinical_distil.files import InputError

LORA_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # the max_lora_rank values vLLM accepts


def lora_rank_limit(adapter: str, at_least: int = 1) -> int:
    """The smallest max_lora_rank vLLM accepts that serves `adapter` (its adapter_config.json's r)."""
    rank = int(json.loads((Path(adapter) / "adapter_config.json").read_text()).get("r", at_least))
    return next((limit for limit in LORA_RANKS if limit >= max(rank, at_least)), LORA_RANKS[-1])


MEMORY_SHARE_VARIABLE = "CLINICAL_DISTIL_VLLM_MEMORY"
# of a shared engine's memory share, the part its KV cache gets up front; the rest holds the weights, activations
# and CUDA graphs (a student of 135M parameters needs well under a GiB of it)
SHARED_KV_CACHE_PART = 0.5


def memory_share() -> float:
    """The share of the GPU's memory a vLLM engine takes: 0.9, or less where several processes share one GPU
    (experiments/known_answer.py --parallel sets CLINICAL_DISTIL_VLLM_MEMORY for the arms it runs at once)."""
    value = os.environ.get(MEMORY_SHARE_VARIABLE, "").strip()
    if not value:
        return 0.9
    try:
        share = float(value)
    except ValueError:
        share = -1.0
    if not 0 < share <= 1:
        raise InputError(f"{MEMORY_SHARE_VARIABLE} must be a share of the GPU's memory in (0, 1], got {value!r}; "
                         "unset it for 0.9")
    return share


def shared_kv_cache_bytes(share: float, total_bytes: int | None = None) -> int:
    """The KV cache, in bytes per GPU, of an engine that shares its GPU with other processes (`share` of its
    memory, from MEMORY_SHARE_VARIABLE): SHARED_KV_CACHE_PART of that share. Sized up front because vLLM's own
    estimate profiles the GPU's free memory and counts what the other processes allocate or free meanwhile as its
    own: a negative KV cache ("No available memory for the cache blocks") or vllm-project/vllm#56830's failed
    check."""
    if total_bytes is None:
        import torch

        total_bytes = torch.cuda.get_device_properties(torch.cuda.current_device()).total_memory
    return int(share * total_bytes * SHARED_KV_CACHE_PART)


class VLLMEngine:
    """vLLM backend: tensor parallel, bf16, prefix caching, optional JSON-schema structured output."""

    name = "vllm"

    def __init__(self, model_id: str, max_model_len: int | None = None, tensor_parallel_size: int | None = None,
                 gpu_memory_utilization: float | None = None, start_mode: str = "on", seed: int = 0,
                 adapter: str | None = None, max_lora_rank: int | None = None,
                 max_num_batched_tokens: int | None = None, dtype: str = "auto", enable_prefix_caching: bool = True,
                 **llm_options: Any):
        """`start_mode`: on (vLLM's torch.compile and CUDA graphs), graphs (CUDA graphs of decoding steps only)
        or off (eager); see engines.VLLM_COMPILE_HELP. `gpu_memory_utilization`: the share of the GPU's memory
        this engine takes, by default memory_share(); where MEMORY_SHARE_VARIABLE sets it (a GPU shared with other
        processes) its KV cache is also sized up front (shared_kv_cache_bytes). `llm_options` go to vllm.LLM as
        they are (vLLM's own engine arguments)."""
        import torch

        if start_mode not in VLLM_START_MODES:
            raise ValueError(f"start_mode must be {', '.join(VLLM_START_MODES[:-1])} or {VLLM_START_MODES[-1]}, "
                             f"got {start_mode!r}")
        tensor_parallel = tensor_parallel_size or max(1, torch.cuda.device_count())
        # spawn, not fork: the parent may already hold a CUDA context (a model built or timed before)
        os.environ.setdefault("VLLM_WORKER_MULTIPROC_METHOD", "spawn")
        if tensor_parallel == 1:
            # on one GPU the engine core runs in this process: a second process would import torch and vLLM
            # again before the engine starts (bench/RESULTS.md, "vLLM's start")
            os.environ.setdefault("VLLM_ENABLE_V1_MULTIPROCESSING", "0")
        from vllm import LLM

        self.model_id = model_id
        self.adapter = adapter
        share = gpu_memory_utilization or memory_share()
        options: dict[str, Any] = dict(
            model=model_id, tensor_parallel_size=tensor_parallel,
            dtype="bfloat16" if dtype == "auto" else dtype, enable_prefix_caching=enable_prefix_caching,
            gpu_memory_utilization=share, enforce_eager=start_mode == "off", seed=seed)
        if not gpu_memory_utilization and os.environ.get(MEMORY_SHARE_VARIABLE, "").strip():
            options["kv_cache_memory_bytes"] = shared_kv_cache_bytes(share)  # beside other processes' memory
        if start_mode == "graphs":
            from vllm.config import CompilationConfig, CompilationMode, CUDAGraphMode

            options["compilation_config"] = CompilationConfig(mode=CompilationMode.NONE,
                                                              cudagraph_mode=CUDAGraphMode.FULL_DECODE_ONLY)
        if max_model_len:
            options["max_model_len"] = max_model_len
        if max_num_batched_tokens:
            options["max_num_batched_tokens"] = max_num_batched_tokens
        if adapter:
            options.update(enable_lora=True, max_lora_rank=max_lora_rank or lora_rank_limit(adapter), max_loras=1)
        options.update(llm_options)
        self.llm = LLM(**options)
        self.gpus = options["tensor_parallel_size"]
        self.start_mode = start_mode
        self.tokenizer = self.llm.get_tokenizer()
        self.max_model_len = self.llm.llm_engine.model_config.max_model_len
        from transformers import GenerationConfig

        try:
            generation_config = GenerationConfig.from_pretrained(model_id)
        except OSError:
            generation_config = None
        self.stop_ids = end_token_ids(self.tokenizer, generation_config)

    def base_only(self) -> "VLLMEngine":
        """The same engine answering with the base model alone (no adapter): both models from one start."""
        view = copy.copy(self)
        view.adapter = None
        return view

    def generate(self, conversations: Sequence[Conversation], sampling: Sampling,
                 progress: Callable[[int, int], None] | None = None,
                 prompt_ids: Sequence[list[int] | None] | None = None) -> list[Generation]:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt
        from vllm.sampling_params import StructuredOutputsParams

        prompts = conversation_ids(self.tokenizer, conversations, prompt_ids)
        schemas = per_request(sampling.json_schema, len(prompts))
        params = []
        for position, ids in enumerate(prompts):
            options: dict[str, Any] = dict(
                max_tokens=max(1, min(sampling.max_tokens, self.max_model_len - len(ids))),
                temperature=sampling.temperature, top_p=sampling.top_p if sampling.temperature > 0 else 1.0,
                stop_token_ids=self.stop_ids, skip_special_tokens=True,
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
