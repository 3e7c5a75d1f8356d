"""`finetune` (stage D): QLoRA supervised fine-tuning of the student on stage C's datasets (TRL 1.x).

Examples are prompt-completion conversations (system + user as prompt, the assistant's
JSON answer as completion), so TRL computes the loss on the completion only. An example
longer than `max_seq_length` has its note shortened inside the prompt; the response is
never cut (the published code truncated from the left, which dropped the instructions).

The presets and the opt-in speed-ups are in speedups.py, the run folder's checkpoints in
training_folder.py, and stage E's merge in convert_peft.py.
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from clinical_distil import layout
from clinical_distil.chat import fit_note, render_ids
from clinical_distil.files import InputError, write_text
from clinical_distil.prompts import PromptTemplates, load_templates, note_of
from clinical_distil.speedups import (TrainingPlan, asked_optimizer, attention_kwargs, compile_decoder_layers,
                                      expand_nested_scales, trainer_class, training_plan, without_cudnn_attention)
from clinical_distil.stages import FinetuneSettings
from clinical_distil.training_folder import resumed_checkpoint

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


def process_state():
    """accelerate's view of this process among the run's processes. On a machine without CUDA it must be asked
    for CPU processes: otherwise each process of a `torchrun` launch takes itself for the only one (and the
    first of them) until the trainer sets up the process group later."""
    import torch
    from accelerate import PartialState

    return PartialState(cpu=not torch.cuda.is_available())


def write_summary(output_dir: Path, summary: dict[str, Any]) -> None:
    write_text(json.dumps(summary, indent=2, default=str) + "\n", layout.training_summary(output_dir))


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


def load_student(model_id: str, tokenizer, plan: TrainingPlan, cuda: bool, load_in_4bit: bool):
    """The base model as the plan trains it: in bf16 on CUDA (fp32 without), with the plan's attention kernel, the
    paper's 4-bit base where asked, embeddings grown to an added pad token, and no KV cache."""
    import torch
    from transformers import AutoModelForCausalLM

    if cuda:
        without_cudnn_attention()
    compute_dtype = torch.bfloat16 if cuda else torch.float32
    model_kwargs: dict[str, Any] = {"dtype": compute_dtype, **attention_kwargs(plan)}
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
    return model


def trainer_config(settings: FinetuneSettings, plan: TrainingPlan, output_dir: Path, cuda: bool):
    """TRL's SFTConfig of a run: the flags, as the plan computes the update."""
    from trl import SFTConfig

    return SFTConfig(
        output_dir=str(output_dir), num_train_epochs=settings.num_train_epochs, max_steps=settings.max_steps,
        per_device_train_batch_size=plan.per_device_train_batch_size,
        # eval batches as the flags give them, so that both presets report the same eval loss
        per_device_eval_batch_size=settings.per_device_train_batch_size,
        gradient_accumulation_steps=plan.gradient_accumulation_steps, learning_rate=settings.learning_rate,
        lr_scheduler_type="constant", optim=plan.optimizer, bf16=cuda, packing=settings.packing,
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


def make_trainer(settings: FinetuneSettings, plan: TrainingPlan, model, config, examples: Examples):
    """The trainer over both splits, with the LoRA adapter on the model (its decoder layers compiled where the plan
    says)."""
    from datasets import Dataset

    peft_config = lora_config(settings)
    with warnings.catch_warnings():  # TRL 1.x points to hub kernels instead, which an offline node cannot fetch
        warnings.filterwarnings("ignore", message=".use_liger_kernel=True. is deprecated", category=FutureWarning)
        trainer = trainer_class()(model=model, args=config, train_dataset=Dataset.from_list(examples.train),
                                  eval_dataset=Dataset.from_list(examples.test), processing_class=examples.tokenizer,
                                  peft_config=peft_config)
    if plan.compiled_layers:
        log.info("torch.compile: %d decoder layers", compile_decoder_layers(trainer.model, plan.gradient_checkpointing))
    return trainer


def start_session(trainer, settings: FinetuneSettings, output_dir: Path,
                  callbacks: Sequence[Callable[[Any], Any]]) -> tuple[Path | None, dict[str, float], Any]:
    """The checkpoint this session resumes from (None for a new run), the earlier sessions' training seconds and
    tokens, and the progress callback, added to the trainer with the caller's `callbacks`."""
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
    return checkpoint, earlier, progress


def save_adapter(trainer, tokenizer, output_dir: Path) -> None:
    """The trained adapter and its tokenizer into final/, which appears whole or not at all: a later stage never
    reads a half-saved adapter."""
    import shutil

    final = layout.final_adapter(output_dir)
    partial = final.with_name(final.name + ".partial")
    trainer.save_model(str(partial))
    if trainer.is_world_process_zero():
        tokenizer.save_pretrained(str(partial))
        shutil.rmtree(final, ignore_errors=True)
        partial.rename(final)


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
    import torch

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
    model = load_student(model_id, tokenizer, plan, cuda, load_in_4bit)
    if not cuda:
        log.info("no CUDA: training in fp32 with adamw_torch instead of %s", asked_optimizer(settings))
    config = trainer_config(settings, plan, output_dir, cuda)
    trainer = make_trainer(settings, plan, model, config, examples)
    checkpoint, earlier, progress = start_session(trainer, settings, output_dir, callbacks)
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    totals, steady = progress.totals(), progress.steady_tokens_per_second()
    metrics = trainer.evaluate()
    save_adapter(trainer, tokenizer, output_dir)
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
        "load_in_4bit": load_in_4bit, "optimizer": plan.optimizer, "plan": asdict(plan),
        "config": config.to_dict(),
        "lora": {"r": settings.lora_r, "alpha": settings.lora_alpha, "target_modules": "all-linear"},
        "log_history": history,
    }
    if trainer.is_world_process_zero():
        write_summary(output_dir, summary)
    return summary
