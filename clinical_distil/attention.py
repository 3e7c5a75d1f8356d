"""PyTorch's own varlen flash-attention kernel as a transformers attention implementation.

The fast preset trains on padding-free batches: a step's examples end to end in one row, their
boundaries given by TRL's collator as `cu_seq_lens_q` and `max_length_q`. transformers attends over
such a row with flash-attention's varlen kernel when the flash-attn package is installed; without it,
SDPA gets a block-diagonal mask and falls back to the memory-efficient kernel, which visits every
masked block. PyTorch ships the same kind of kernel (`torch.nn.attention.varlen.varlen_attn`, CUDA,
fp16/bf16) with no extra package: `register()` names it "torch_varlen" for `attn_implementation`.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch

try:  # PyTorch 2.10 and later
    from torch.nn.attention.varlen import varlen_attn
except ImportError:
    varlen_attn = None

NAME = "torch_varlen"


def kernel_options() -> dict[str, Any] | None:
    """How this PyTorch's varlen_attn is asked for causal attention and grouped KV heads; None without one."""
    if varlen_attn is None:
        return None
    parameters = inspect.signature(varlen_attn).parameters
    # the first releases take is_causal (and no scale or grouped KV heads); later ones a (left, right) window
    # where (-1, 0) is causal
    causal = "is_causal" if "is_causal" in parameters else "window_size" if "window_size" in parameters else None
    if causal is None:
        return None
    return {"causal": causal, "gqa": "enable_gqa" in parameters, "scale": "scale" in parameters}


KERNEL_OPTIONS = kernel_options()


def available(cuda: bool) -> bool:
    """Whether the kernel runs here: this PyTorch has it and the GPU is Ampere or newer."""
    return cuda and KERNEL_OPTIONS is not None and torch.cuda.get_device_capability() >= (8, 0)


def torch_varlen_kernel(query: torch.Tensor, key: torch.Tensor, value: torch.Tensor, cu_seq: torch.Tensor,
                        longest: int, scale: float | None, causal: bool) -> torch.Tensor:
    """varlen_attn on (tokens, heads, dim) tensors whose sequences are delimited by `cu_seq`."""
    # a module global, which torch.compile takes as a constant: looked up here through a cached function (with
    # importlib and inspect inside), it split every compiled layer into pieces under PyTorch 2.11
    options = KERNEL_OPTIONS
    if options is None:
        raise RuntimeError(f"this PyTorch has no varlen_attn kernel; the {NAME} attention cannot run")
    kwargs: dict[str, Any] = {}
    if options["scale"]:
        kwargs["scale"] = scale
    elif scale is not None and abs(scale - query.shape[-1] ** -0.5) > 1e-6 * scale:
        # the first releases scale by 1/sqrt(head dim) only
        raise ValueError(f"this PyTorch's varlen_attn takes no scale; the model asks for {scale}")
    if options["causal"] == "is_causal":
        kwargs["is_causal"] = causal
    elif causal:
        kwargs["window_size"] = (-1, 0)
    dtype = query.dtype
    if dtype not in (torch.float16, torch.bfloat16):  # flash kernels take half precision; PEFT may hand over float32
        query, key, value = (tensor.to(torch.bfloat16) for tensor in (query, key, value))
    if key.shape[1] != query.shape[1]:
        if options["gqa"]:
            kwargs["enable_gqa"] = True
        else:
            key, value = (tensor.repeat_interleave(query.shape[1] // key.shape[1], dim=1) for tensor in (key, value))
    return varlen_attn(query, key, value, cu_seq, cu_seq, longest, longest, **kwargs).to(dtype)


# the kernel the attention function calls; a test swaps in a reference that runs anywhere
varlen_kernel: Callable[..., torch.Tensor] = torch_varlen_kernel


def sequence_bounds(batch: int, length: int, attention_mask: torch.Tensor | None, device: torch.device,
                    **kwargs: Any) -> tuple[torch.Tensor, int, torch.Tensor | None]:
    """Cumulative sequence starts, the longest sequence and (for a padded batch) the kept token positions.

    In order of preference: the collator's `cu_seq_lens_q` (a padding-free row), a 2D padding mask (right or left
    padded rows), `position_ids` that restart inside a row (packed sequences), else every row is one sequence."""
    cu_seq = kwargs.get("cu_seq_lens_q")
    if cu_seq is not None:
        longest = kwargs.get("max_length_q")
        longest = int(cu_seq.diff().max()) if longest is None else int(longest)
        return cu_seq.to(device=device, dtype=torch.int32), longest, None
    if attention_mask is not None:
        keep = attention_mask.reshape(batch, -1)[:, -length:].bool()
        lengths = keep.sum(dim=1, dtype=torch.int32)
        cu_seq = torch.nn.functional.pad(lengths.cumsum(0, dtype=torch.int32), (1, 0))
        return cu_seq.to(device), int(lengths.max()), keep.reshape(-1).nonzero().flatten().to(device)
    position_ids = kwargs.get("position_ids")
    if position_ids is not None and position_ids.numel() == batch * length:
        from transformers.modeling_flash_attention_utils import prepare_fa_kwargs_from_position_ids

        # a sequence starts wherever the position is back at its smallest value (0 in training batches)
        (cu_seq, _), (longest, _) = prepare_fa_kwargs_from_position_ids(position_ids)
        return cu_seq.to(device=device, dtype=torch.int32), int(longest), None
    cu_seq = torch.arange(0, (batch + 1) * length, length, device=device, dtype=torch.int32)
    return cu_seq, length, None


def varlen_attention_forward(module: torch.nn.Module, query: torch.Tensor, key: torch.Tensor, value: torch.Tensor,
                             attention_mask: torch.Tensor | None, dropout: float = 0.0, scaling: float | None = None,
                             is_causal: bool | None = None, **kwargs: Any) -> tuple[torch.Tensor, None]:
    """transformers' attention interface: (batch, heads, length, dim) in, (batch, length, heads, dim) out."""
    batch, heads, length, dim = query.shape
    if key.shape[2] != length:
        raise ValueError(f"{NAME} attention is for training without a KV cache: queries and keys must have the same "
                         "length; load the model with attn_implementation='sdpa' to generate")
    if dropout:
        raise ValueError(f"{NAME} attention has no attention dropout; the model asks for {dropout}")
    causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    cu_seq, longest, kept = sequence_bounds(batch, length, attention_mask, query.device, **kwargs)
    q, k, v = (tensor.transpose(1, 2).reshape(batch * length, tensor.shape[1], dim) for tensor in (query, key, value))
    if kept is not None:
        q, k, v = q[kept], k[kept], v[kept]
    out = varlen_kernel(q, k, v, cu_seq, longest, scaling, causal)
    if kept is not None:
        full = out.new_zeros(batch * length, heads, dim)
        full[kept] = out
        out = full
    return out.reshape(batch, length, heads, dim), None


def register() -> str:
    """Make "torch_varlen" an attn_implementation (with the flash-attention mask rule: no mask without padding)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, flash_attention_mask

    AttentionInterface.register(NAME, varlen_attention_forward)
    AttentionMaskInterface.register(NAME, flash_attention_mask)
    return NAME
