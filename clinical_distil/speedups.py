"""How finetune.py computes its updates faster: the presets, and the opt-in speed-ups they turn on.

A preset decides, from the flags and what this machine has, how each optimizer step's examples are
batched and which speed-ups run (training_plan): fused kernels (Liger's), a varlen attention kernel
for padding-free batches (attention.NAME registered with transformers), compiled decoder layers with
their checkpoint inside the compiled region, the 4-bit base's block scales dequantized once, and a
trainer that skips per-step work whose result cannot change. None of them changes the update.
"""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from typing import Any

from clinical_distil.stages import FinetuneSettings


@dataclass(frozen=True)
class TrainingPlan:
    """How finetune.py computes its updates: what a preset makes of the flags on this machine."""

    preset: str
    per_device_train_batch_size: int
    gradient_accumulation_steps: int
    padding_free: bool
    gradient_checkpointing: bool
    liger_kernels: bool
    attention: str | None  # a transformers attn_implementation; None: the model's default (SDPA)
    compiled_layers: bool = False  # torch.compile of each decoder layer (--compile_layers)
    optimizer: str = "paged_adamw_8bit"  # a transformers optim name (--optim on CUDA; adamw_torch without)


def installed(module: str) -> bool:
    return importlib.util.find_spec(module) is not None


# each preset's optimizer on CUDA when --optim is not given (without CUDA: adamw_torch)
PRESET_OPTIMIZERS = {"paper": "paged_adamw_8bit", "fast": "adamw_torch_fused"}


def asked_optimizer(settings: FinetuneSettings) -> str:
    """The optimizer the flags ask for on CUDA: --optim, else the preset's."""
    return settings.optim or PRESET_OPTIMIZERS[settings.preset]


def training_plan(settings: FinetuneSettings, cuda: bool, liger: bool | None = None,
                  flash_attention: bool | None = None, torch_varlen: bool | None = None) -> TrainingPlan:
    """The preset applied. `paper` keeps the flags. `fast` computes the same update (the same examples per
    optimizer step, learning rate and LoRA) in fewer, fuller passes: the step's examples in one batch, no
    activation recomputation, Liger's Triton kernels (RMSNorm, SwiGLU, RoPE; TRL's fused LM head does the
    cross-entropy) where installed on a GPU, padding-free batches attended by a varlen flash kernel
    (flash-attn's where installed, else PyTorch's own: attention.NAME), and PyTorch's fused AdamW: the same
    AdamW with its moments in the adapter's own dtype (fp32 on a bf16 base; bf16 under QLoRA, where TRL casts
    the adapter) instead of 8-bit blocks, stepped by a few multi-tensor kernels where bitsandbytes launches
    one per LoRA weight (448 on the 8B shape; bench/RESULTS.md). A
    LoRA's moments take tens of MiB, so the 8-bit state saves nothing that matters. Without a varlen kernel a
    padding-free batch gets a block-diagonal SDPA mask, cheap for at most two examples; larger batches are
    padded instead. `--fused_kernels` turns Liger's kernels on or off for either preset (default: with `fast`);
    `--optim` sets the optimizer of either."""
    liger = installed("liger_kernel") if liger is None else liger
    optimizer = asked_optimizer(settings) if cuda else "adamw_torch"
    # compiled layers fuse their own operations; Liger's kernels, which torch.compile cannot trace, stay out
    wanted = settings.preset == "fast" and not settings.compile_layers if settings.fused_kernels is None \
        else settings.fused_kernels
    fused = cuda and liger and wanted
    if settings.preset == "paper":
        return TrainingPlan("paper", settings.per_device_train_batch_size, settings.gradient_accumulation_steps,
                            settings.padding_free, settings.gradient_checkpointing, fused, None,
                            settings.compile_layers, optimizer)
    from clinical_distil import attention  # imports torch

    flash_attention = installed("flash_attn") if flash_attention is None else flash_attention
    torch_varlen = attention.available(cuda) if torch_varlen is None else torch_varlen
    kernel = "flash_attention_2" if flash_attention else attention.NAME if torch_varlen else None
    varlen = cuda and kernel is not None
    batch = settings.per_device_train_batch_size * settings.gradient_accumulation_steps
    padding_free = not settings.packing and (settings.padding_free or varlen or batch <= 2)
    return TrainingPlan("fast", batch, 1, padding_free, False, fused, kernel if varlen else None,
                        settings.compile_layers, optimizer)


def compile_decoder_layers(model, checkpointing: bool = False, backend: str = "inductor") -> int:
    """torch.compile each decoder layer in place (regional compilation: the layers share their code, so one
    compile serves them all; dynamic=True keeps one graph for every sequence length). With `checkpointing` (the
    plan's gradient checkpointing, which the trainer turns on later) each layer checkpoints inside its compiled
    region (checkpointing_inside), and inductor draws dropout with PyTorch's own kernel: under PyTorch 2.11 on
    CUDA its partitioner fails on a checkpointed region holding inductor's fused dropout ("Node ... was invalid,
    but is output"), while PyTorch's dropout is replayed from the saved random state. State dict keys and the
    saved adapter are unchanged. Returns the number of layers compiled. `backend`: torch.compile's (a test traces
    with "eager", which compiles nothing)."""
    from transformers.modeling_layers import GradientCheckpointingLayer

    layers = [module for module in model.modules() if isinstance(module, GradientCheckpointingLayer)]
    options = {"options": {"fallback_random": True}} if checkpointing and backend == "inductor" else {}
    for layer in layers:
        if checkpointing:
            layer.__class__ = checkpointing_inside(type(layer))
        layer.compile(dynamic=True, backend=backend, **options)
    return len(layers)


CHECKPOINTING_INSIDE: dict[type, type] = {}  # a decoder layer class -> its subclass made by checkpointing_inside


def checkpointing_inside(layer_class: type) -> type:
    """`layer_class` with transformers' gradient checkpointing moved from around the layer's call into its forward.

    transformers checkpoints a layer by wrapping its call in torch.utils.checkpoint. Around a compiled layer that
    runs each compiled forward twice a training step (once more inside the backward) and passes every tensor the
    forward keeps through autograd's saved-tensor hooks in Python: 2 x 32 layer calls and 4,224 hook calls a
    step of the paper's batch on the 8B shape. Inside the forward, torch.compile sees the checkpoint and makes one
    forward graph and one backward graph that recomputes the layer, replaying dropout from the saved random
    state: the same update with half the layer calls and no hooks. On CPU the forward graph keeps only the
    layer's inputs; on CUDA it keeps more, so the peak memory is higher than eager (bench/RESULTS.md gives both
    the step times and the memory). Checkpointing stays non-reentrant, as finetune.py asks
    for it. The subclass keeps the class's name and module; with checkpointing off (evaluation, the fast preset)
    its forward is the class's."""
    if layer_class.__dict__.get("checkpoints_inside"):
        return layer_class
    if layer_class in CHECKPOINTING_INSIDE:
        return CHECKPOINTING_INSIDE[layer_class]
    import torch
    from torch.utils.checkpoint import checkpoint

    def __call__(self, *args, **kwargs):
        # transformers' __call__ would wrap the call in its own checkpoint; training passes no KV cache to clear
        return torch.nn.Module.__call__(self, *args, **kwargs)

    def forward(self, *args, **kwargs):
        if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
            return checkpoint(layer_class.forward, self, *args, use_reentrant=False, **kwargs)
        return layer_class.forward(self, *args, **kwargs)

    subclass = type(layer_class.__name__, (layer_class,),
                    {"__call__": __call__, "forward": forward, "checkpoints_inside": True,
                     "__module__": layer_class.__module__, "__qualname__": layer_class.__qualname__})
    CHECKPOINTING_INSIDE[layer_class] = subclass
    return subclass


def trainer_class():
    """TRL's SFTTrainer, counting each step's floating-point operations from a parameter count taken once.

    transformers estimates a step's FLOPs as 6 x tokens x parameters (embeddings left out) and counts the
    parameters again at every forward, walking every module of the model (2,665 in the 8B shape under PEFT)
    in Python while the GPU waits for the next step. The count cannot change while training, so it is taken
    at the first step; the estimate (`total_flos` in the trainer's state) is the same."""
    from trl import SFTTrainer

    class StudentTrainer(SFTTrainer):
        counted_parameters: int | None = None

        def floating_point_ops(self, inputs: dict[str, Any]) -> int:
            main_input = getattr(self.model, "main_input_name", "input_ids")
            if main_input not in inputs or not hasattr(self.model, "num_parameters"):
                return super().floating_point_ops(inputs)
            if self.counted_parameters is None:
                self.counted_parameters = self.model.num_parameters(exclude_embeddings=True)
            return 6 * inputs[main_input].numel() * self.counted_parameters

        def training_step(self, model, *args, **kwargs):
            """transformers' step, without its model.train() at every micro-step when the model already trains.

            That call walks every module (2,665 in the 8B shape under PEFT) and sets each one's flag again, CPU
            time at every micro-step while the GPU waits. Only an evaluation turns training off, and it does
            so for the whole model; after one the real call runs. Both flags are read: a data-parallel wrapper
            (DDP, DeepSpeed) is made in training mode around a model that is not yet."""
            if not (model.training and self.model.training):
                return super().training_step(model, *args, **kwargs)
            model.train = lambda mode=True: model  # noqa: ARG005 (shadows the method for this one call)
            try:
                return super().training_step(model, *args, **kwargs)
            finally:
                del model.train

    return StudentTrainer


def expand_nested_scales(model) -> int:
    """Dequantize, once, the 8-bit block scales of the paper's double-quantized 4-bit weights.

    With double quantization bitsandbytes stores each weight's block scales (absmax) in 8 bits and dequantizes
    them again at every use: two more kernels and their Python at each 4-bit matmul's forward, recomputation and
    backward (224 linears of the 8B shape, three times an example). The base is frozen, so they are dequantized
    here once, as bitsandbytes' own CPU path does: the same float32 scales, to the bit, kept in 4 bytes per 64
    weights instead of about 1 (0.3 GiB more on the 8B shape). Returns the number of weights changed."""
    import bitsandbytes.functional as bnb_functional

    expanded = 0
    for module in model.modules():
        state = getattr(getattr(module, "weight", None), "quant_state", None)
        if state is None or not getattr(state, "nested", False):
            continue
        scales = bnb_functional.dequantize_blockwise(state.absmax, state.state2)
        scales += state.offset
        state.absmax, state.nested, state.state2, state.offset = scales.float(), False, None, None
        expanded += 1
    return expanded



def without_cudnn_attention() -> None:
    """Keep PyTorch's SDPA off cuDNN attention (on CUDA)."""
    import torch

    # PyTorch's SDPA prefers cuDNN attention on Hopper, which builds a plan for every new sequence length:
    # with examples of many lengths that costs CPU time at every layer and call (bench/RESULTS.md)
    torch.backends.cuda.enable_cudnn_sdp(False)


def attention_kwargs(plan: TrainingPlan) -> dict[str, Any]:
    """The model's attn_implementation as the plan asks (nothing: the model's default, SDPA); PyTorch's own varlen
    kernel (attention.NAME) is registered with transformers first."""
    from clinical_distil import attention

    if plan.attention == attention.NAME:
        attention.register()
    return {"attn_implementation": plan.attention} if plan.attention else {}
