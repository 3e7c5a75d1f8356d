"""QLoRA supervised fine-tuning of the student on stage C's datasets (TRL 1.x).

Examples are prompt-completion conversations (system + user as prompt, the assistant's
JSON answer as completion), so TRL computes the loss on the completion only. An example
longer than `max_seq_length` has its note shortened inside the prompt; the response is
never cut (the published code truncated from the left, which dropped the instructions).
"""

from __future__ import annotations

import importlib.util
import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from clinical_distil import layout
from clinical_distil.chat import fit_note, render_ids
from clinical_distil.files import (InputError, check_adapter_folder, check_model_folder, check_output_folder,
                                   write_text)
from clinical_distil.prompts import PromptTemplates, load_templates, note_of
from clinical_distil.stages import FinetuneSettings

log = logging.getLogger(__name__)

# A Llama-3-style header template for base models that ship without a chat template.
LLAMA3_TEMPLATE = (
    "{{- bos_token }}"
    "{%- for message in messages %}"
    "{{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n' + message['content'] + '<|eot_id|>' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}{%- endif %}"
)
PAD_CANDIDATES = ("<|finetune_right_pad_id|>", "<|reserved_special_token_0|>", "<|endoftext|>")


def prepare_tokenizer(tokenizer) -> None:
    """The model's own chat template, or a Llama-3 header template; a pad distinct from end-of-turn."""
    if not tokenizer.chat_template:
        tokenizer.chat_template = LLAMA3_TEMPLATE
        if "<|eot_id|>" in tokenizer.get_vocab():
            tokenizer.eos_token = "<|eot_id|>"
    if tokenizer.pad_token is None or tokenizer.pad_token_id == tokenizer.eos_token_id:
        vocab = tokenizer.get_vocab()
        # a reserved token of the vocabulary where there is one; a new one only as a last resort
        choice = next((token for token in PAD_CANDIDATES if token in vocab and token != tokenizer.eos_token), None)
        if choice is None:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
        else:
            tokenizer.pad_token = choice


def to_conversations(rows: list[dict[str, Any]], tokenizer, max_seq_length: int,
                     templates: PromptTemplates | None = None) -> tuple[list[dict], int]:
    """prompt/completion messages with notes shortened so every example fits; and how many were shortened."""
    converted, shortened = [], 0
    for row in rows:
        prompt = [dict(message) for message in row["prompt"]]
        completion = [{"role": "assistant", "content": row["output"]}]
        prompt_tokens = len(render_ids(tokenizer, prompt))
        full = tokenizer.apply_chat_template(prompt + completion, tokenize=True)
        total_tokens = len(full["input_ids"] if hasattr(full, "keys") else full)
        completion_tokens = total_tokens - prompt_tokens
        if completion_tokens >= max_seq_length:
            raise InputError(f"--max_seq_length {max_seq_length} is too small: a response alone takes "
                             f"{completion_tokens} tokens; raise --max_seq_length")
        if total_tokens > max_seq_length:
            note = note_of(prompt[-1]["content"], templates) or ""
            try:
                prompt = fit_note(tokenizer, prompt, note, max_seq_length - completion_tokens).messages
            except InputError:
                raise InputError(f"--max_seq_length {max_seq_length} is too small: the instructions and the "
                                 "response of an example leave no room for its note; raise --max_seq_length") from None
            shortened += 1
        converted.append({"prompt": prompt, "completion": completion})
    return converted, shortened


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
    one per LoRA weight (448 on the 8B shape; a compiled fast step on an H200 went from 0.344 to 0.280 s). A
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
    state: the same update with half the layer calls and no hooks (the paper configuration on an H200: 0.55 s a
    step against 0.74-0.77). On CPU the forward graph keeps only the layer's inputs; on CUDA the 8B shape peaked
    at 17.1 GiB against 7.9 eager (bench/RESULTS.md). Checkpointing stays non-reentrant, as finetune.py asks
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

            That call walks every module (2,665 in the 8B shape under PEFT) and sets each one's flag again, about
            20 ms of the CPU per micro-step while the GPU waits. Only an evaluation turns training off, and it does
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


def process_state():
    """accelerate's view of this process among the run's processes. On a machine without CUDA it must be asked
    for CPU processes: otherwise each process of a `torchrun` launch takes itself for the only one (and the
    first of them) until the trainer sets up the process group later."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def check_run_folder(output_dir: Path, resume_from_checkpoint: str | None, overwrite: bool) -> bool:
    """Whether the run folder must be emptied first; refuse to train over an earlier run unless asked."""
    earlier = [*output_dir.glob(layout.CHECKPOINT_GLOB), layout.final_adapter(output_dir),
               layout.training_summary(output_dir)]
    if resume_from_checkpoint or not any(path.exists() for path in earlier):
        return False
    if overwrite:
        return True
    raise InputError(f"{output_dir} already holds a run; pass --resume_from_checkpoint last to continue it, "
                     "--overwrite to start again, or another --output_dir")


def write_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    write_text(json.dumps(summary, indent=2, default=str) + "\n", layout.training_summary(output_dir))




def checkpoint_complete(folder: Path) -> bool:
    """Whether a checkpoint was written to its end: the run's totals come last (after the trainer's state);
    a checkpoint of an earlier version counts when it has the trainer's state and adapter weights."""
    if (folder / layout.PROGRESS_FILE).exists():
        return True
    return (folder / "trainer_state.json").exists() and any(folder.glob("adapter_model.*"))


def checkpoints(run_dir: Path) -> list[Path]:
    """The run's checkpoint-N folders, oldest first."""
    found = [path for path in run_dir.glob(layout.CHECKPOINT_GLOB)
             if path.is_dir() and path.name.split("-", 1)[1].isdigit()] if run_dir.is_dir() else []
    return sorted(found, key=lambda path: int(path.name.split("-", 1)[1]))


def complete_checkpoints(run_dir: Path) -> list[Path]:
    return [path for path in checkpoints(run_dir) if checkpoint_complete(path)]


def resumed_checkpoint(output_dir: Path, resume_from_checkpoint: str | None, set_aside: bool = False) -> Path | None:
    """The checkpoint a run continues from: the given folder, or the newest complete one for "last"; None for
    a new run. A checkpoint cut off while it was written (the process killed during the save) is never
    picked; with `set_aside` it is renamed incomplete-checkpoint-N, out of the trainer's way."""
    if not resume_from_checkpoint:
        return None
    if resume_from_checkpoint != "last":
        path = layout.resolve(resume_from_checkpoint)
        if not path.is_dir():
            raise InputError(f"--resume_from_checkpoint {path} is not a folder; give a checkpoint-N folder of "
                             "finetune.py, or last")
        if not checkpoint_complete(path):
            raise InputError(f"{path} was not written to its end (no {layout.PROGRESS_FILE} or trainer state); "
                             "give another checkpoint, or last")
        return path
    complete = complete_checkpoints(output_dir)
    newest = int(complete[-1].name.split("-")[1]) if complete else -1
    cut_off = [path for path in checkpoints(output_dir) if not checkpoint_complete(path)
               and int(path.name.split("-")[1]) > newest]
    for path in cut_off:
        log.warning("%s was not written to its end; not resumed from", path)
        if set_aside:
            path.rename(path.with_name(f"incomplete-{path.name}"))
    if not complete:
        raise InputError(f"--resume_from_checkpoint last: no complete checkpoint in {output_dir}"
                         f"{' (' + cut_off[0].name + ' was cut off while being written)' if cut_off else ''}; "
                         "pass --overwrite to start again")
    return complete[-1]


TRAINING_COLUMNS = ("prompt", "output")  # the chat messages up to the answer, and the answer trained on
STAGE_C = "stage C (a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb)"


def check_datasets(train_path: Path, test_path: Path) -> None:
    """Both splits of stage C there, with their columns, and not empty: refused in one line before a model loads."""
    from datasets import load_from_disk

    for path in (train_path, test_path):
        if not (path / "dataset_info.json").exists():
            raise InputError(f"training data not found: {path}; make it with {STAGE_C}")
        try:
            dataset = load_from_disk(str(path))
            rows, columns = len(dataset), dataset.column_names
        except IndexError:  # datasets cannot load a saved table with no record batch: nothing in it
            rows, columns = 0, list(TRAINING_COLUMNS)
        except Exception as error:  # noqa: BLE001 (a damaged folder: one line, not the library's traceback)
            reason = str(error).splitlines()[0] if str(error) else type(error).__name__
            raise InputError(f"cannot read training data {path}: {reason}; make it again with stage C") from error
        missing = [column for column in TRAINING_COLUMNS if column not in columns]
        if missing:
            raise InputError(f"training data {path} lacks column(s) {', '.join(missing)}; make it again with "
                             f"{STAGE_C}")
        if rows == 0:
            raise InputError(f"{path} holds no example; make a training set with items of every type (stage C)")


@dataclass
class Examples:
    """The training and test examples as the trainer takes them (notes shortened to fit), with the tokenizer
    they were measured with."""

    tokenizer: Any
    train: list[dict]
    test: list[dict]
    train_shortened: int
    test_shortened: int


def student_tokenizer(model_id: str):
    """The base model's tokenizer with its chat template and a pad token (prepare_tokenizer); no weights read."""
    from transformers import AutoTokenizer

    try:
        tokenizer = AutoTokenizer.from_pretrained(model_id)
    except OSError as error:
        raise InputError(f"cannot load model {model_id!r}: not a local model folder, and the hub is offline "
                         "here; give a folder with config.json and weights") from error
    prepare_tokenizer(tokenizer)
    return tokenizer


def prepare_examples(settings: FinetuneSettings, model_id: str, train_path: Path, test_path: Path) -> Examples:
    """Both splits as prompt-completion conversations that fit --max_seq_length, with the tokenizer alone: a
    missing --prompt_dir, a row that is not a chat, or a --max_seq_length too small for an example's
    instructions and answer is refused in one line here, before the model loads and before a run folder
    is touched."""
    from datasets import load_from_disk

    templates = load_templates(settings.prompt_dir)
    tokenizer = student_tokenizer(model_id)
    prepared = []
    for path in (train_path, test_path):
        rows = load_from_disk(str(path)).to_list()
        for index, row in enumerate(rows):
            chat = row.get("prompt")
            if not (isinstance(chat, list) and chat and all(
                    isinstance(message, dict) and isinstance(message.get("role"), str)
                    and isinstance(message.get("content"), str) for message in chat)) \
                    or not isinstance(row.get("output"), str):
                raise InputError(f"training data {path}: row {index} is not a chat prompt (a list of role/content "
                                 f"messages) with a text output; make it again with {STAGE_C}")
        prepared.append(to_conversations(rows, tokenizer, settings.max_seq_length, templates))
    (train, train_shortened), (test, test_shortened) = prepared
    return Examples(tokenizer, train, test, train_shortened, test_shortened)


WARM_STEPS = 3  # optimizer steps left out of a session's steady tokens/s


def progress_callback(trainer, earlier: dict[str, float]):
    """A callback that writes, into every checkpoint it saves, the run's training seconds and tokens so far
    (earlier sessions included), so that a resumed run's summary covers the whole run."""
    import time

    from transformers import TrainerCallback

    class TrainingProgress(TrainerCallback):
        def __init__(self):
            self.started = time.time()
            self.eval_seconds = 0.0
            self.warmed: tuple[float, int] | None = None  # (seconds, tokens) this session after its first steps

        def elapsed(self) -> float:
            return time.time() - self.started - self.eval_seconds  # evaluations are not training time

        def steady_tokens_per_second(self) -> float | None:
            """This session's tokens/s after its first WARM_STEPS steps (compiling, allocator warm-up, the
            first optimizer state): the rate a longer run settles at."""
            if self.warmed is None:
                return None
            seconds, tokens = self.elapsed() - self.warmed[0], trainer._total_train_tokens - self.warmed[1]
            return round(tokens / seconds, 1) if seconds > 0 and tokens > 0 else None

        def totals(self) -> dict[str, float]:
            seconds = self.elapsed()
            return {"seconds": round(earlier.get("seconds", 0.0) + seconds, 2),
                    "tokens": int(earlier.get("tokens", 0) + trainer._total_train_tokens)}

        def on_train_begin(self, args, state, control, **kwargs):
            self.started = time.time()
            self.first_step = state.global_step  # a resumed session starts at its checkpoint's step

        def on_step_end(self, args, state, control, **kwargs):
            if self.warmed is None and state.global_step - self.first_step >= WARM_STEPS:
                self.warmed = (self.elapsed(), trainer._total_train_tokens)

        def on_log(self, args, state, control, logs=None, **kwargs):
            self.eval_seconds += float((logs or {}).get("eval_runtime", 0.0))

        def on_save(self, args, state, control, **kwargs):
            if state.is_world_process_zero:
                folder = Path(args.output_dir) / f"checkpoint-{state.global_step}"
                if folder.is_dir():
                    (folder / layout.PROGRESS_FILE).write_text(json.dumps(self.totals()) + "\n")

    return TrainingProgress()


def quantization_config(compute_dtype):
    """The paper's 4-bit base: NF4 with double quantization, computing in `compute_dtype`."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(load_in_4bit=True, bnb_4bit_quant_type="nf4", bnb_4bit_use_double_quant=True,
                              bnb_4bit_compute_dtype=compute_dtype, bnb_4bit_quant_storage=compute_dtype)


def lora_config(settings: FinetuneSettings):
    """The adapter finetune.py trains: LoRA of the flags' rank and alpha on every linear layer, dropout 0.05."""
    from peft import LoraConfig

    return LoraConfig(r=settings.lora_r, lora_alpha=settings.lora_alpha, lora_dropout=0.05, bias="none",
                      target_modules="all-linear", task_type="CAUSAL_LM")


def train(settings: FinetuneSettings, model_id: str, train_path: Path, test_path: Path,
          output_dir: Path, callbacks: Sequence[Callable[[Any], Any]] = (),
          examples: Examples | None = None) -> dict[str, Any]:
    """Fine-tune a LoRA adapter (4-bit NF4 base where asked) with `settings` (finetune.py's flags) and return
    the training summary. `callbacks` make more TrainerCallbacks from the trainer (a benchmark's timers);
    `examples`: prepare_examples' result where the caller checked the examples before (else prepared here).

    train_sampling_strategy: transformers' sampler: "random" (the paper's), "sequential", "group_by_length",
    or "batch_rebalance" (each optimizer step's examples dealt out so every rank gets a like share of
    tokens; with several processes a step waits for the slowest rank, and examples here run from a few
    hundred to several thousand tokens).
    """
    import shutil

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig

    from clinical_distil import attention

    check_datasets(train_path, test_path)
    cuda = torch.cuda.is_available()
    load_in_4bit = cuda if settings.load_in_4bit is None else settings.load_in_4bit
    examples = examples or prepare_examples(settings, model_id, train_path, test_path)
    tokenizer, train_rows, test_rows = examples.tokenizer, examples.train, examples.test
    train_shortened, test_shortened = examples.train_shortened, examples.test_shortened
    log.info("notes shortened to fit %d tokens: %d of %d training and %d of %d test examples", settings.max_seq_length,
             train_shortened, len(train_rows), test_shortened, len(test_rows))

    plan = training_plan(settings, cuda)
    log.info("preset %s: %s", plan.preset, asdict(plan))
    if cuda:
        # PyTorch's SDPA prefers cuDNN attention on Hopper, which builds a plan for every new sequence length:
        # with examples of many lengths that cost 1-2 ms of CPU per layer and call (bench/RESULTS.md)
        torch.backends.cuda.enable_cudnn_sdp(False)
    compute_dtype = torch.bfloat16 if cuda else torch.float32
    model_kwargs: dict[str, Any] = {"dtype": compute_dtype}
    if plan.attention == attention.NAME:
        attention.register()
    if plan.attention:
        model_kwargs["attn_implementation"] = plan.attention
    if load_in_4bit:
        model_kwargs["quantization_config"] = quantization_config(compute_dtype)
        # one whole model per process: what accelerate/DeepSpeed data parallelism expects
        model_kwargs["device_map"] = {"": process_state().local_process_index if cuda else "cpu"}
    model = AutoModelForCausalLM.from_pretrained(model_id, **model_kwargs)
    if load_in_4bit:
        log.info("4-bit base: block scales of %d weights dequantized once", expand_nested_scales(model))
    if len(tokenizer) > model.get_input_embeddings().weight.shape[0]:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    # no KV cache in training: with one, transformers would not see packed sequences' boundaries
    model.config.use_cache = False
    optimizer = plan.optimizer
    if not cuda:
        log.info("no CUDA: training in fp32 with adamw_torch instead of %s", asked_optimizer(settings))
    config = SFTConfig(
        output_dir=str(output_dir), num_train_epochs=settings.num_train_epochs, max_steps=settings.max_steps,
        per_device_train_batch_size=plan.per_device_train_batch_size,
        # eval batches as the flags give them, so that both presets report the same eval loss
        per_device_eval_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps, learning_rate=settings.learning_rate,
        lr_scheduler_type="constant", optim=optimizer, bf16=cuda, packing=settings.packing,
        padding_free=plan.padding_free, use_liger_kernel=plan.liger_kernels,
        # every example already fits (notes were shortened above); TRL enforces max_length only when packing
        max_length=None if plan.padding_free and not settings.packing else settings.max_seq_length,
        gradient_checkpointing=plan.gradient_checkpointing, gradient_checkpointing_kwargs={"use_reentrant": False},
        save_steps=settings.save_steps, save_total_limit=settings.save_total_limit,
        logging_steps=settings.logging_steps, report_to=settings.report_to, seed=settings.seed, use_cpu=not cuda,
        eval_strategy="no", dataset_num_proc=None, train_sampling_strategy=settings.train_sampling_strategy,
        # under DDP (configs/multi_gpu.yaml): every LoRA weight takes part in every forward, so no search of the
        # autograd graph for unused ones each step, and the base's buffers (rotary frequencies) are alike on
        # every rank, so no broadcast of them before each forward
        ddp_find_unused_parameters=False, ddp_broadcast_buffers=False,
        # the logged loss as computed, NaN included, instead of a stand-in for a NaN or infinite step: the filter's
        # test reads the loss back from the GPU after every backward, a wait that keeps the CPU from preparing the
        # next step while the GPU is still busy with this one
        logging_nan_inf_filter=False,
        # examples are evaluated one by one whether or not training packs them, so eval losses compare
        eval_packing=False,
        # the untrained adapter's eval loss, so the summary shows what training bought; evaluated inside
        # train() because DeepSpeed ZeRO-2 builds its engine only there (a resumed run keeps the first one)
        eval_on_start=not settings.resume_from_checkpoint,
    )
    peft_config = lora_config(settings)
    with warnings.catch_warnings():  # TRL 1.x points to hub kernels instead, which an offline node cannot fetch
        warnings.filterwarnings("ignore", message=".use_liger_kernel=True. is deprecated", category=FutureWarning)
        trainer = trainer_class()(model=model, args=config, train_dataset=Dataset.from_list(train_rows),
                                  eval_dataset=Dataset.from_list(test_rows), processing_class=tokenizer,
                                  peft_config=peft_config)
    if plan.compiled_layers:
        log.info("torch.compile: %d decoder layers", compile_decoder_layers(trainer.model, plan.gradient_checkpointing))
    checkpoint = resumed_checkpoint(output_dir, settings.resume_from_checkpoint,
                                    set_aside=process_state().is_main_process)
    process_state().wait_for_everyone()
    earlier = {}  # training seconds and tokens of the sessions before this one (a resumed run)
    if checkpoint is not None and (checkpoint / layout.PROGRESS_FILE).exists():
        earlier = json.loads((checkpoint / layout.PROGRESS_FILE).read_text())
    progress = progress_callback(trainer, earlier)
    trainer.add_callback(progress)
    for make_callback in callbacks:
        trainer.add_callback(make_callback(trainer))
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    totals, steady = progress.totals(), progress.steady_tokens_per_second()
    metrics = trainer.evaluate()
    # final/ appears whole or not at all: a later stage never reads a half-saved adapter
    final = layout.final_adapter(output_dir)
    partial = final.with_name(final.name + ".partial")
    trainer.save_model(str(partial))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(partial))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)
    # TRL counts the tokens it trains on (from 0 again in a resumed session; the checkpoint held the rest)
    history = trainer.state.log_history
    eval_loss_before = next((entry["eval_loss"] for entry in history if "eval_loss" in entry), None)
    seconds, trained_tokens = totals["seconds"], totals["tokens"]
    summary = {
        "model_id": model_id, "train_dataset": str(train_path), "test_dataset": str(test_path),
        "train_examples": len(train_rows), "test_examples": len(test_rows),
        "notes_shortened": {"train": train_shortened, "test": test_shortened},
        "global_step": trainer.state.global_step, "train_loss": result.training_loss,
        "eval_loss_before": eval_loss_before, "eval_loss": metrics.get("eval_loss"), "seconds": round(seconds, 2),
        "trained_tokens": trained_tokens, "tokens_per_second": round(trained_tokens / seconds, 1) if seconds else None,
        "steady_tokens_per_second": steady,
        "resumed_from": str(checkpoint) if checkpoint else None,
        "session_seconds": round(totals["seconds"] - earlier.get("seconds", 0.0), 2),
        "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None,
        "load_in_4bit": load_in_4bit, "optimizer": optimizer, "plan": asdict(plan),
        "config": config.to_dict(),
        "lora": {"r": settings.lora_r, "alpha": settings.lora_alpha, "target_modules": "all-linear"},
        "log_history": history,
    }
    if trainer.is_world_process_zero():
        write_summary(output_dir, summary)
    return summary


PROBE = [{"role": "system", "content": "You extract facts from clinical notes."},
         {"role": "user", "content": "Note: creatinine 1.4 on admission, 2.1 on day 2. Question: highest creatinine?"}]


def check_adapter(adapter_dir: Path) -> dict[str, Any]:
    """An adapter folder of finetune.py: its adapter_config.json (a JSON object), read, and its weights there;
    one clear line otherwise (files.check_adapter_folder)."""
    return check_adapter_folder(adapter_dir)


# Written by stage E into every merged folder: what was merged and how it was checked. It is how a folder is known
# to hold a merged model of this project, the only kind of existing folder a merge may replace (with --overwrite).
MERGE_RECORD = "merge.json"
MERGE_WRITER = "clinical_distil stage E (synthetic-e-convert-peft.py)"


def is_merged_model(folder: Path) -> bool:
    """Whether `folder` holds a merged model of this project: a model (config.json) with stage E's merge.json, or,
    as merges of earlier versions left it, with stage E's model card (its tag and its Merge section)."""
    if not (folder / "config.json").is_file():
        return False
    try:
        if (folder / MERGE_RECORD).is_file():
            record = json.loads((folder / MERGE_RECORD).read_text(encoding="utf-8"))
            return isinstance(record, dict) and record.get("written_by") == MERGE_WRITER
        card = (folder / "README.md").read_text(encoding="utf-8")
    except (OSError, ValueError, UnicodeDecodeError):
        return False
    return "\n- synthetic-data-distillation\n" in card and "\n## Merge\n" in card


def check_merge_target(target: Path, overwrite: bool) -> None:
    """Where a merge may go: a new folder, an empty one, or (with `overwrite`) one that holds a merged model of
    this project. Anything else that exists (a fine-tuning run's folder, a base model, one's own files) is never
    replaced, with or without --overwrite: one line, before a model loads."""
    check_output_folder(target)
    if not target.exists() or not any(target.iterdir()):
        return
    if is_merged_model(target):
        if overwrite:
            return
        raise InputError(f"{target} exists and holds a merged model; pass --overwrite to replace it, or give another "
                         "--output_dir")
    run = [path.name for path in (layout.final_adapter(target), layout.training_summary(target)) if path.exists()] + \
        [path.name for path in checkpoints(target)][:1]
    what = f"a fine-tuning run's folder ({', '.join(run)})" if run else \
        f"a folder that holds no merged model of this project (no {MERGE_RECORD} of stage E)"
    raise InputError(f"--output_dir {target} is {what}; a merge replaces only an earlier merge (with --overwrite): "
                     "give a new --output_dir, e.g. models/NAME-merged")


def merge_base(adapter_dir: Path, base_model_id: str | None = None) -> str:
    """The base model a merge loads: --base_model_id, else the one the adapter records; a local path must be a
    model folder (config.json). Checked before anything loads, with the adapter's own tokenizer, which the merged
    folder keeps (the chat template and pad token of training)."""
    config = check_adapter(adapter_dir)
    if not (adapter_dir / "tokenizer_config.json").is_file():
        raise InputError(f"adapter folder {adapter_dir} has no tokenizer (tokenizer_config.json), which finetune.py "
                         "saves beside the adapter and the merged model keeps; give a checkpoint-N or final/ folder "
                         "of finetune.py")
    base_id = base_model_id or config.get("base_model_name_or_path")
    if not base_id or not isinstance(base_id, str):
        raise InputError(f"{adapter_dir}/adapter_config.json names no base model; pass --base_model_id")
    try:
        check_model_folder(base_id)
    except InputError:
        source = "--base_model_id" if base_model_id else f"{adapter_dir}/adapter_config.json"
        raise InputError(f"base model folder not found or has no config.json: {base_id} (from {source}); pass "
                         "--base_model_id with the base model's folder") from None
    return base_id


def model_card(adapter_dir: Path, merge: dict[str, Any]) -> str:
    """A model card for a merged student (Hugging Face convention: YAML header, then sections): base, adapter,
    the training data (its dataset card where stage C wrote one), training settings and losses, how it was
    merged and checked, how to evaluate it, limits and the protected-health-information notice."""
    inside_run = adapter_dir == layout.final_adapter(adapter_dir.parent) or adapter_dir.match(layout.CHECKPOINT_GLOB)
    run_dir = adapter_dir.parent if inside_run else adapter_dir
    summary_path = layout.training_summary(run_dir)
    summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
    config, lora, plan = summary.get("config", {}), summary.get("lora", {}), summary.get("plan", {})
    lines = ["---", f"base_model: {merge['base_model']}", "library_name: transformers", "pipeline_tag: text-generation",
             "tags:", "- clinical", "- information-extraction", "- synthetic-data-distillation", "- lora",
             "license: other", "---", "", f"# {Path(merge.get('output_dir', adapter_dir)).name}", "",
             f"A student fine-tuned (LoRA, merged) from {merge['base_model']} on question/answer pairs a teacher "
             "wrote about clinical notes, to answer questions about a note in the JSON answer format "
             "(synthetic data distillation, Woo et al.). Ask it with the answer prompt it was trained on: "
             "eval-inference.py for the evaluation sets, extract.py for a criteria file over any notes.", "",
             "## Training data", ""]
    card_path = None
    if summary.get("train_dataset"):
        train_path = Path(summary["train_dataset"])
        name = train_path.name.removeprefix("train_").removesuffix(".arrow")
        card_path = layout.dataset_card(train_path.parent, name)
    if card_path is not None and card_path.exists():
        card = card_path.read_text()
        teacher = next((line for line in card.splitlines() if line.startswith("- teacher:")), None)
        lines.append(f"Dataset card: `{card_path}`" + (f" ({teacher.removeprefix('- ')})" if teacher else "") + ".")
    else:
        lines.append("No dataset card was found beside the training data.")
    if summary:
        lines.append(f"{summary['train_examples']} training and {summary['test_examples']} test examples "
                     f"({summary['notes_shortened']['train']} training notes shortened to fit "
                     f"{config.get('max_length') or 'the context'} tokens).")
        lines += ["", "## Training", "",
                  f"- adapter: `{adapter_dir}`; LoRA r {lora.get('r')}, alpha {lora.get('alpha')}, on "
                  f"{lora.get('target_modules')}",
                  f"- {summary['global_step']} optimizer steps, {config.get('num_train_epochs')} epochs, learning "
                  f"rate {config.get('learning_rate')} ({config.get('lr_scheduler_type')}), "
                  f"{plan.get('per_device_train_batch_size', config.get('per_device_train_batch_size'))} examples "
                  f"per device x {plan.get('gradient_accumulation_steps', config.get('gradient_accumulation_steps'))} "
                  f"accumulated, optimizer {summary.get('optimizer')}, 4-bit base: {summary.get('load_in_4bit')}, "
                  f"preset {plan.get('preset', 'paper')}",
                  f"- eval loss {summary.get('eval_loss_before')} before training, {summary.get('eval_loss')} after; "
                  f"{summary.get('trained_tokens')} tokens at {summary.get('tokens_per_second')} tokens/s"]
    else:
        lines += ["", "## Training", "", f"No training_summary.json in {run_dir}."]
    lines += ["", "## Merge", "",
              f"Folded into the unquantized base and saved in {merge['dtype']}; checked in float32 on a probe "
              f"prompt: largest next-token logit difference to base + adapter {merge['max_logit_difference']:.2e} "
              f"(tolerance {merge['tolerance']}), same top token: {merge['same_top_token']}.", "",
              "## Evaluation", "",
              "Score it on the three tasks with eval-inference.py and the evaluate notebooks, or run-pipeline.py "
              "(its report compares it with its base); on simulated patients, bench/known_answer.py.", "",
              "## Limits", "",
              "- It learned the teacher's answers, right or wrong; its quotes are checked against the note by "
              "extract.py, its answers are not.",
              "- Trained on the notes of one source and era; other hospitals' notes may differ.", "",
              "## Protected health information", "",
              "Trained on clinical notes under a data-use agreement. A model can reproduce text it was trained on: "
              "share it only where that agreement allows.", ""]
    return "\n".join(lines)


def merge_adapter(adapter_dir: Path, output_dir: Path, base_model_id: str | None = None,
                  dtype: str = "bfloat16", tolerance: float = 1e-3, overwrite: bool = False) -> dict[str, Any]:
    """Merge a LoRA adapter into its unquantized base and save a plain model folder.

    The base is loaded unquantized (merging into 4-bit weights would round the update away),
    the adapter applied and folded in with merge_and_unload, and the result saved in `dtype`
    with the tokenizer and chat template used in training. The merge is checked in float32:
    on a probe prompt the next-token logits of the merged model and of base + adapter must
    agree within `tolerance` (largest absolute difference) with the same top token. (In bf16
    the two differ by rounding alone, about 0.3 for an 8B model, which would hide a wrong merge.)
    The folder is written beside its target and renamed into place; an existing `output_dir` is replaced
    only when it holds an earlier merge and `overwrite` is given (check_merge_target).
    """
    import shutil

    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    check_merge_target(output_dir, overwrite)
    base_id = merge_base(adapter_dir, base_model_id)
    torch_dtype = getattr(torch, dtype)
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(adapter_dir))
        # on the GPU where there is one: an 8B merge and its check take minutes on a CPU
        base = AutoModelForCausalLM.from_pretrained(base_id, dtype=torch.float32,
                                                    device_map="cuda" if torch.cuda.is_available() else None)
    except OSError as error:
        raise InputError(f"cannot load base model {base_id!r}; pass --base_model_id with a local folder") from error
    if len(tokenizer) > base.get_input_embeddings().weight.shape[0]:
        base.resize_token_embeddings(len(tokenizer))
    model = PeftModel.from_pretrained(base, str(adapter_dir))
    ids = torch.tensor([render_ids(tokenizer, PROBE)], device=base.device)
    with torch.no_grad():
        adapter_logits = model(input_ids=ids).logits[0, -1].float()
    merged = model.merge_and_unload()
    with torch.no_grad():
        merged_logits = merged(input_ids=ids).logits[0, -1].float()
    difference = float((adapter_logits - merged_logits).abs().max())
    same_top = int(adapter_logits.argmax()) == int(merged_logits.argmax())
    if difference > tolerance or not same_top:
        raise RuntimeError(f"merged model disagrees with base + adapter (max logit difference {difference:.4f})")
    merged = merged.to(torch_dtype)
    staging = output_dir.with_name(output_dir.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)  # left by an interrupted merge (the caller holds the target's lock)
    merged.save_pretrained(str(staging), safe_serialization=True)
    tokenizer.save_pretrained(str(staging))
    report = {"base_model": base_id, "adapter": str(adapter_dir), "max_logit_difference": difference,
              "tolerance": tolerance, "same_top_token": same_top, "dtype": dtype, "output_dir": str(output_dir)}
    (staging / "README.md").write_text(model_card(adapter_dir, report))
    (staging / MERGE_RECORD).write_text(json.dumps({"written_by": MERGE_WRITER, **report}, indent=2) + "\n")
    check_merge_target(output_dir, overwrite)  # what is there now, after the minutes of the merge
    if output_dir.exists():  # an earlier merge (or an empty folder): set aside, the new one renamed in, then removed
        earlier = output_dir.with_name(output_dir.name + ".replaced")
        shutil.rmtree(earlier, ignore_errors=True)
        output_dir.rename(earlier)
        staging.rename(output_dir)
        shutil.rmtree(earlier)
    else:
        staging.rename(output_dir)
    return report
