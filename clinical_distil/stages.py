"""The stage contract: every script's flags and every notebook's parameters, each declared once.

Defaults are the paper's (the published code's where the paper is silent). The scripts build their
command lines from these declarations (`clinical_distil.cli.run_stage`), the notebooks check their
parameters against them, and run-pipeline.py takes its per-stage YAML sections under these same
names and builds every command from them. Here: stage 0 and A-E; the stages that answer with a model
and score (eval_inference, verify, extract, preprocess, evaluate) are declared in answer_stages.py and
named here with the rest.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from clinical_distil.answer_stages import (DATA_DIR_HELP, DTYPES, ENGINES, PROMPT_DIR_HELP, AnswerSettings,  # noqa: F401
                                           EvalInferenceSettings, EvaluateSettings, ExtractSettings,
                                           N2c2EvaluateSettings, PreprocessSettings, SplitsPreprocessSettings,
                                           VerifySettings, evaluate_settings, preprocess_settings)
from clinical_distil.engines import VLLM_COMPILE, VLLM_COMPILE_HELP, Sampling
from clinical_distil.files import InputError
from clinical_distil.prompts import COMBOS, QUESTION_TYPES
from clinical_distil.settings import Settings, setting

SAMPLING_STRATEGIES = ("random", "sequential", "group_by_length", "batch_rebalance")


@dataclass
class SelectSettings(Settings):
    """synthetic-0-select-notes.py: one discharge summary per admission, sampled."""

    source: str = setting("data/mimic/NOTEEVENTS.csv.gz", "MIMIC-III NOTEEVENTS.csv(.gz) or MIMIC-IV-Note "
                          "discharge.csv(.gz); the format is detected")
    num_notes: int = setting(100000, "how many admissions to sample (seeded); the output is notes_{num_notes}.csv.gz",
                             minimum=1)
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    output: str | None = setting(None, "output file (default {data_dir}/mimic/notes_{num_notes}.csv.gz)")
    seed: int = setting(42, "sampling seed")
    exclude_subjects: str | None = setting(None, "file of subject ids to leave out (held-out evaluation patients)")
    overwrite: bool = setting(False, "replace an existing output file")


@dataclass
class CreateSettings(Settings):
    """synthetic-a-create.py: the teacher writes question/answer pairs about each note."""

    model_id: str = setting("meta-llama/Meta-Llama-3.1-70B-Instruct", "teacher model (hub id on a GPU node, or a "
                            "local folder), or the name of an engine that is no model (clinical_distil.engines entry "
                            "points; reference: the fact-sheet writer of a simulated corpus)")
    dataset: str = setting("100000", "N of data/mimic/notes_{N}.csv(.gz), and the output folder name")
    start_row: int = setting(0, "first note row to use", minimum=0)
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    notes_file: str | None = setting(None, "notes CSV to read instead of mimic/notes_{dataset}.csv(.gz)")
    output_dir: str | None = setting(None, "output folder (default {data_dir}/synthetic-output/{dataset})")
    qtypes: str = setting(",".join(QUESTION_TYPES), "comma-separated question types: " + ", ".join(QUESTION_TYPES))
    questions_per_type: int = setting(5, "k: yes_no asks 2k (k Yes, k No), numeric up to 10, na-* k each", minimum=1)
    chunk_size: int = setting(1000, "notes per output file (the unit of resuming)", minimum=1)
    engine: str = setting("auto", "auto (vLLM when it imports and a GPU is visible), vllm or transformers",
                          choices=ENGINES)
    vllm_compile: str = setting("auto", VLLM_COMPILE_HELP, choices=VLLM_COMPILE)
    tensor_parallel_size: int | None = setting(None, "GPUs per model for vLLM (default: all visible)", minimum=1)
    max_model_len: int | None = setting(None, "context length (default: the model's); longer notes are shortened "
                                        "inside the note", minimum=1)
    max_tokens: int = setting(4096, "longest reply in tokens", minimum=1)
    temperature: float = setting(0.7, "sampling temperature (0: greedy)", minimum=0)
    top_p: float = setting(0.95, "nucleus sampling threshold", above=0, maximum=1)
    seed: int = setting(0, "sampling seed")
    limit: int | None = setting(None, "use only the first N notes from start_row", minimum=1)
    structured_output: bool = setting(False, "constrain replies to the JSON schema of the question list")
    batch_size: int = setting(16, "prompts per batch for the transformers engine", minimum=1)
    num_shards: int = setting(1, "split the chunks over this many jobs (nodes or a Slurm array)", minimum=1)
    shard_index: int = setting(0, "which shard this job runs (0-based)", minimum=0)
    overwrite: bool = setting(False, "regenerate chunk files that already exist")
    dtype: str = setting("auto", "model weights and compute: auto (bf16 on a GPU), bfloat16, float16 or float32",
                         choices=DTYPES)
    retries: int = setting(2, "generate a reply again, up to this many times, when it was cut off (token limit) or "
                           "holds no readable question (with --structured_output: is not one whole JSON value); 0: "
                           "never", minimum=0)
    retry_frequency_penalty: float = setting(0.5, "frequency penalty of the retries (new seed too), against the loops "
                                             "that run a small teacher into the token limit", minimum=0)
    retry_temperature: float = setting(0.7, "retries sample at least this hot (a greedy retry tends to loop again)",
                                       minimum=0)
    prompt_dir: str | None = setting(None, PROMPT_DIR_HELP)
    allow_empty: bool = setting(False, "accept notes rows with no note to ask about (else that is an error)")

    def check(self) -> None:
        unknown = [name for name in self.question_types if name not in QUESTION_TYPES]
        if unknown or not self.question_types:
            raise InputError(f"unknown question type(s) {', '.join(unknown) or '(none given)'}; choose from "
                             f"{', '.join(QUESTION_TYPES)}")
        if self.shard_index >= self.num_shards:
            raise InputError(f"--shard_index must be in 0..{self.num_shards - 1}, got {self.shard_index}")

    @property
    def question_types(self) -> list[str]:
        return list(dict.fromkeys(part.strip() for part in self.qtypes.split(",") if part.strip()))

    @property
    def sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_tokens, temperature=self.temperature, top_p=self.top_p, seed=self.seed)


@dataclass
class PostProcessSettings(Settings):
    """synthetic-b-post_process_join_notes.ipynb: parse, check and join the teacher's replies."""

    what: ClassVar[str] = "parameter"
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    dataset: str = setting("100000", "N of notes_{N}: the stage A folder name")
    notes_file: str | None = setting(None, "notes table to join; None: {data_dir}/mimic/notes_{dataset}.csv(.gz)")
    output_dir: str | None = setting(None, "default {data_dir}/synthetic-raw")
    fuzzy_threshold: float = setting(90.0, "rapidfuzz partial_ratio at or above which a quote counts as found",
                                     minimum=0, maximum=100)
    require_source_in_note: bool = setting(False, "keep only items whose quote is in the note (off: the paper)")
    require_answer_type: bool = setting(False, "keep only items whose answer fits the question type")
    drop_duplicates: bool = setting(False, "drop a note's repeated questions")
    drop_near_duplicates: bool = setting(False, "drop a note's near-duplicate questions (rapidfuzz token_sort_ratio "
                                         ">= 95)")
    overwrite: bool = setting(False, "replace stage B's files")


@dataclass
class PrepTrainingSettings(Settings):
    """synthetic-c-prep-training.ipynb: balanced, formatted, patient-grouped training data."""

    what: ClassVar[str] = "parameter"
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    input_file: str = setting("all", "question types trained on: all, bool or bool_num (the combo of stage B)",
                              choices=tuple(COMBOS))
    min_difficulty: int = setting(1, "lowest teacher-rated difficulty kept", minimum=1, maximum=9)
    per_type: int | None = setting(None, "items per type; None: the smallest type's count", minimum=1)
    hardest: bool = setting(False, "take each type's hardest items instead of a random sample")
    support: bool = setting(True, "False: targets without source and explanation (the paper's 'no support')")
    grouped_split: bool = setting(True, "split by patient; False restores the published split by example")
    test_size: float = setting(0.1, "share of examples (patients) held out for the eval loss", above=0, maximum=0.9)
    seed: int = setting(42, "balancing and split seed")
    tokenizer: str = setting("models/SmolLM2-135M-Instruct", "the student's tokenizer, for lengths")
    max_seq_length: int = setting(12000, "longest training example in tokens (reported here; finetune.py shortens "
                                  "notes to fit)", minimum=1)
    overwrite: bool = setting(False, "replace stage C's files of this training set")
    prompt_dir: str | None = setting(None, PROMPT_DIR_HELP)
    eval_dirs: dict | None = setting(None, "evaluation sets' raw folders the training notes are checked against, "
                                     "{task: folder} (relative to the data root); None: each task's own folder")
    allow_eval_overlap: bool = setting(False, "write the training set even when some of its notes or patients are "
                                       "in the evaluation sets (else refused)")
    require_verified: bool = setting(False, "keep only items whose answer the verifier gave too "
                                     "(synthetic-b2-verify.py; off: the paper)")
    permute_answers: bool = setting(False, "a baseline: shuffle the answers among each question type's items, so "
                                    "a student learns the answer format and not the facts (training set "
                                    "variant 'permuted'; off: the paper)")


OPTIMIZERS = ("paged_adamw_8bit", "adamw_8bit", "paged_adamw_32bit", "adamw_torch_fused", "adamw_torch")


@dataclass
class FinetuneSettings(Settings):
    """finetune.py: QLoRA supervised fine-tuning of the student on stage C's datasets."""

    model_id: str = setting("meta-llama/Meta-Llama-3.1-8B", "base model (hub id on a GPU node, or a local folder)")
    input_file: str = setting("all", "dataset combination: all, bool or bool_num", choices=tuple(COMBOS))
    min_difficulty: int = setting(5, "minimum teacher-assigned difficulty of the training items", minimum=1,
                                  maximum=9)
    variant: str = setting("", "stage C variant of the training set (e.g. 'hardest'; '' for the main one)")
    max_seq_length: int = setting(12000, "longest training example in tokens (notes are shortened to fit; "
                                  "responses never)", minimum=1)
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    output_dir: str | None = setting(None, "run folder (default results/{model}_{input_file}_{min_difficulty}_{r}_"
                                     "{alpha})")
    num_train_epochs: float = setting(1.0, "passes over the training set", above=0)
    max_steps: int = setting(-1, "stop after this many optimizer steps (-1: use the epochs)", minimum=-1)
    per_device_train_batch_size: int = setting(1, "examples per device and step", minimum=1)
    gradient_accumulation_steps: int = setting(2, "steps accumulated per optimizer update", minimum=1)
    learning_rate: float = setting(2e-4, "constant learning rate", above=0)
    lora_r: int = setting(8, "LoRA rank", minimum=1)
    lora_alpha: int = setting(16, "LoRA alpha", minimum=1)
    load_in_4bit: bool | None = setting(None, "NF4 base weights (default: on when CUDA is present)")
    optim: str | None = setting(None, "optimizer on CUDA (default: the preset's; paper: the published paged 8-bit "
                                "AdamW of bitsandbytes; fast: PyTorch's fused AdamW, whose step is a few kernel "
                                "launches instead of one per LoRA weight); without CUDA adamw_torch",
                                choices=OPTIMIZERS)
    preset: str = setting("paper", "paper: the flags as given (their defaults are the published setup); fast: the "
                          "same examples per optimizer update in one pass (batch x accumulation, accumulation 1), "
                          "no recomputation, Liger kernels where installed, padding-free batches attended by a "
                          "varlen flash kernel (flash-attn's, else PyTorch's own) on a GPU",
                          choices=("paper", "fast"))
    packing: bool = setting(False, "pack several examples into one sequence of max_seq_length tokens (fewer "
                            "optimizer steps)")
    fused_kernels: bool | None = setting(None, "Liger's fused Triton kernels (RMSNorm, SwiGLU, RoPE, linear "
                                         "cross-entropy) on CUDA where installed: the same computation in fewer "
                                         "kernel launches (default: with the fast preset only)")
    compile_layers: bool = setting(False, "torch.compile each decoder layer (one compile serves every alike "
                                   "layer; sequence lengths stay dynamic): the same computation in fewer, fused "
                                   "kernel launches, after a compile of about a minute at the start; under "
                                   "gradient checkpointing each layer checkpoints inside its graph, which peaks "
                                   "higher (bench/RESULTS.md)")
    padding_free: bool = setting(False, "concatenate a batch's examples without padding (with "
                                 "--per_device_train_batch_size 2 and accumulation 1 it does the paper's two "
                                 "examples per update in one pass)")
    gradient_checkpointing: bool = setting(True, "recompute activations (non-reentrant) to save memory")
    save_steps: int = setting(500, "checkpoint every N steps", minimum=1)
    save_total_limit: int = setting(20, "keep at most N checkpoints", minimum=1)
    logging_steps: int = setting(10, "log every N steps", minimum=1)
    report_to: str = setting("none", "none or wandb (set WANDB_MODE=offline to keep runs local; note text is never "
                             "logged)", choices=("none", "wandb"))
    resume_from_checkpoint: str | None = setting(None, "a checkpoint folder, or 'last' for the newest in the run "
                                                 "folder")
    seed: int = setting(42, "training seed")
    overwrite: bool = setting(False, "delete an earlier run in the output folder and start again")
    train_sampling_strategy: str = setting("random", "random (the paper's), sequential, group_by_length, or "
                                           "batch_rebalance (each step's examples shared out so every GPU gets a "
                                           "like number of tokens; for several processes)",
                                           choices=SAMPLING_STRATEGIES)
    prompt_dir: str | None = setting(None, "the prompt templates stage C used (to find the note inside a prompt "
                                     "that must be shortened)")

    def check(self) -> None:
        if self.max_steps == 0:
            raise InputError("--max_steps must be -1 (train for --num_train_epochs) or at least 1, got 0")
        if self.compile_layers and self.fused_kernels:
            # torch 2.11's dynamo stops on an assertion tracing Liger's SwiGLU autograd function (seen on an H200)
            raise InputError("--compile_layers and --fused_kernels True do not combine: torch.compile cannot "
                             "trace Liger's kernels; choose one (compiling fuses the same operations itself)")


@dataclass
class ConvertPeftSettings(Settings):
    """synthetic-e-convert-peft.py: fold a LoRA adapter into its base model and save a deployable folder."""

    adapter_dir: str | None = setting(None, "a checkpoint-N or final/ folder written by finetune.py")
    output_dir: str | None = setting(None, "where to save (default models/{run name}-merged)")
    base_model_id: str | None = setting(None, "base model to merge into (default: the one recorded in the adapter)")
    dtype: str = setting("bfloat16", "bfloat16 (default), float16 or float32",
                         choices=("bfloat16", "float16", "float32"))
    overwrite: bool = setting(False, "replace an existing output folder")

    def check(self) -> None:
        if not self.adapter_dir:
            raise InputError("pass --adapter_dir: a checkpoint-N or final/ folder written by finetune.py")


# the scripts and notebooks the driver runs, by stage name
STAGE_SETTINGS: dict[str, type[Settings]] = {
    "select": SelectSettings, "create": CreateSettings, "post_process": PostProcessSettings,
    "verify": VerifySettings, "prep_training": PrepTrainingSettings, "finetune": FinetuneSettings,
    "convert_peft": ConvertPeftSettings, "eval_inference": EvalInferenceSettings,
}
