"""The declarations of the stages that answer prompts with a model and score the answers: eval_inference, verify
and extract (the answering machinery they share, AnswerSettings), and each evaluation task's preprocess and evaluate
notebooks. clinical_distil.stages holds them with the other stages' (STAGE_SETTINGS); see its docstring.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

from clinical_distil import layout
from clinical_distil.engines import VLLM_COMPILE, VLLM_COMPILE_HELP, Sampling
from clinical_distil.files import InputError
from clinical_distil.layout import PROMPT_TEMPLATES
from clinical_distil.settings import Settings, setting
from clinical_distil.tasks import EvalTask

ENGINES = ("auto", "vllm", "transformers")
DTYPES = ("auto", "bfloat16", "float16", "float32")
DATA_DIR_HELP = "data root (default data/ in the repository, or $CLINICAL_DISTIL_DATA)"
PROMPT_DIR_HELP = (f"folder of prompt templates to use instead of the shipped ones ({PROMPT_TEMPLATES.name}/); "
                   "files it lacks fall back to the shipped ones")


def _names(value: str, flag: str) -> list[str]:
    """The comma-separated names of a flag; one line when one of them is empty."""
    names = [part.strip() for part in str(value).split(",")]
    if not all(names):
        raise InputError(f"--{flag} {value!r} holds an empty name; separate names with single commas")
    return names


@dataclass
class AnswerSettings(Settings):
    """The answering machinery of eval-inference.py and extract.py: engine, sampling, chunks, shards."""

    max_output_tokens: int = setting(256, "longest answer in tokens", minimum=1)
    chunk_size: int = setting(10000, "rows per output file (the unit of resuming)", minimum=1)
    temperature: float = setting(0.0, "sampling temperature (0 = greedy)", minimum=0)
    top_p: float = setting(1.0, "nucleus sampling threshold", above=0, maximum=1)
    engine: str = setting("auto", "auto (vLLM when it imports and a GPU is visible), vllm or transformers",
                          choices=ENGINES)
    vllm_compile: str = setting("auto", VLLM_COMPILE_HELP, choices=VLLM_COMPILE)
    tensor_parallel_size: int | None = setting(None, "GPUs per model for vLLM (default: all visible)", minimum=1)
    adapter: str | None = setting(None, "a LoRA adapter folder served on top of model_id without merging")
    max_model_len: int | None = setting(None, "context length (default: the model's); longer notes are shortened "
                                        "inside the note", minimum=1)
    structured_output: bool = setting(False, "constrain answers to the JSON answer object")
    batch_size: int = setting(16, "prompts per batch for the transformers engine", minimum=1)
    seed: int = setting(0, "sampling seed")
    num_shards: int = setting(1, "split the chunks over this many jobs", minimum=1)
    shard_index: int = setting(0, "which shard this job runs (0-based)", minimum=0)
    overwrite: bool = setting(False, "redo chunk files that already exist")
    dtype: str = setting("auto", "model weights and compute: auto (bf16 on a GPU), bfloat16, float16 or float32",
                         choices=DTYPES)
    prompt_dir: str | None = setting(None, PROMPT_DIR_HELP)

    @classmethod
    def declared(cls) -> list[dataclasses.Field]:
        """A script's own settings first, then the machinery (for --help and checks alike)."""
        machinery = {item.name for item in dataclasses.fields(AnswerSettings)}
        fields = list(dataclasses.fields(cls))
        return [item for item in fields if item.name not in machinery] + \
            [item for item in fields if item.name in machinery]

    @property
    def sampling(self) -> Sampling:
        return Sampling(max_tokens=self.max_output_tokens, temperature=self.temperature, top_p=self.top_p,
                        seed=self.seed)

    def check_shard(self) -> None:
        if self.shard_index >= self.num_shards:
            raise InputError(f"--shard_index must be in 0..{self.num_shards - 1}, got {self.shard_index}")


@dataclass
class EvalInferenceSettings(AnswerSettings):
    """eval-inference.py: answer every prompt of an evaluation file."""

    model_id: str = setting("meta-llama/Meta-Llama-3.1-70B-Instruct", "model to evaluate (hub id or local folder)")
    dataset_name: str = setting("i2b2", "evaluation set folder under eval-data/ (i2b2, apixaban, annotated-synthetic); "
                                "several, comma-separated, are answered with one model load")
    input_file: str = setting("train", "file name without .csv (train, test, prompts); with several datasets one "
                              "name for all or one per dataset, comma-separated")
    num_inference: int | str | list = setting("all", "number of rows to answer, or 'all'; with several datasets one "
                                              "for all or one per dataset, comma-separated", minimum=1, words=("all",))
    start_row: int = setting(0, "first row to answer", minimum=0)
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    output_dir: str | None = setting(None, "outputs folder (default {data_dir}/outputs/{dataset_name}/{model_name})")
    model_name: str | None = setting(None, "output folder name (default: the last part of model_id)")
    base_model_name: str | None = setting(None, "with --adapter: the base model answers too, on the same engine (one "
                                          "start for both), into outputs/{dataset_name}/{base_model_name}")
    allow_empty: bool = setting(False, "accept an eval file with no row to answer (else that is an error)")
    worked_examples: str | None = setting(None, "a stage C training set (its train_*.arrow folder): before each "
                                          "prompt the model reads worked examples from it, one per question type, "
                                          "as many as fit the context beside the whole note (a few-shot baseline)")
    worked_examples_max: int = setting(4, "with --worked_examples: the most examples before a prompt", minimum=1)

    def check(self) -> None:
        self.check_shard()
        datasets = _names(self.dataset_name, "dataset_name")
        if len(set(datasets)) < len(datasets):
            raise InputError(f"--dataset_name names a dataset twice ({self.dataset_name}); give each once")
        for flag, values in (("input_file", _names(self.input_file, "input_file")), ("num_inference", self.limits)):
            if len(values) not in (1, len(datasets)):
                raise InputError(f"--{flag} gives {len(values)} values for {len(datasets)} datasets; give one for all "
                                 "or one per dataset")
        if len(datasets) > 1 and self.output_dir:
            raise InputError("--output_dir names one folder; with several --dataset_name each dataset's answers go to "
                             "its own outputs/{dataset_name}/{model_name} (leave out --output_dir)")
        if self.worked_examples and not (layout.resolve(self.worked_examples) / "dataset_info.json").exists():
            raise InputError(f"--worked_examples {self.worked_examples} is not a stage C training set (a "
                             "train_*.arrow folder from synthetic-c-prep-training.ipynb); give one")
        if self.base_model_name is not None:
            if not self.adapter:
                raise InputError("--base_model_name answers with the base model beside its --adapter; give --adapter "
                                 "too, or leave --base_model_name out")
            if self.output_dir:
                raise InputError("--output_dir names one folder; with --base_model_name each model's answers go to "
                                 "its own outputs/{dataset_name}/{model_name} (leave out --output_dir)")
            if self.base_model_name in ("", self.answer_name):
                raise InputError(f"--base_model_name {self.base_model_name!r} must name a folder other than the "
                                 f"adapter's answers ({self.answer_name})")

    @property
    def answer_name(self) -> str:
        """The folder name of the answers (of the adapter's, when one is given): --model_name or the last part
        of the adapter's or model's path."""
        return self.model_name or Path(str(self.adapter or self.model_id).rstrip("/")).name

    @property
    def limits(self) -> list[int | None]:
        """--num_inference as rows to answer per dataset (None: all)."""
        values = self.num_inference if isinstance(self.num_inference, list) else [self.num_inference]
        limits = []
        for value in values:
            text = str(value).strip().lower()
            if text == "all":
                limits.append(None)
            elif text.isdigit() and int(text) >= 1:
                limits.append(int(text))
            else:
                raise InputError(f"--num_inference must be a whole number or 'all' (rows to answer, at least 1), "
                                 f"got {value!r}")
        return limits

    @property
    def jobs(self) -> list[tuple[str, str, int | None]]:
        """(dataset, input file, rows to answer or None for all), in the order given."""
        datasets, files, limits = _names(self.dataset_name, "dataset_name"), _names(self.input_file, "input_file"), \
            self.limits
        spread = lambda values: values * len(datasets) if len(values) == 1 else values  # noqa: E731
        return list(zip(datasets, spread(files), spread(limits)))

    @property
    def row_limit(self) -> int | None:
        """The rows to answer of the first (or only) dataset."""
        return self.jobs[0][2]


@dataclass
class VerifySettings(AnswerSettings):
    """synthetic-b2-verify.py: a verifier model answers every stage B item's question on its note; an item is
    flagged where its answer and the teacher's disagree."""

    data_dir: str | None = setting(None, DATA_DIR_HELP)
    model_id: str | None = setting(None, "the verifier (default: the teacher that wrote the items, from stage B's "
                                   "stage_b.json)")
    model_name: str | None = setting(None, "name of its answers' folder (default: the last part of model_id)")
    num_items: int | str = setting("all", "verify the first N items only, or 'all'", minimum=1, words=("all",))
    structured_output: bool = setting(True, "constrain answers to the JSON answer object")
    max_output_tokens: int = setting(192, "longest answer in tokens", minimum=1)

    def check(self) -> None:
        self.check_shard()


@dataclass
class ExtractSettings(AnswerSettings):
    """extract.py: a distilled model's answers to a criteria file over notes, with grounded quotes, patient and
    cohort tables and a review page."""

    criteria: str | None = setting(None, "criteria file (.yaml or .csv: id, question, answer yes/no or numeric, "
                                   "optional rule and window), e.g. criteria/n2c2-2018.yaml")
    notes: str | None = setting(None, "notes: a notes CSV (text and optionally patient/subject_id, note_id, date), a "
                                "MIMIC-III NOTEEVENTS or MIMIC-IV discharge file, a folder of n2c2 XML or of .txt files")
    model_id: str | None = setting(None, "the model that answers: a merged distilled student, or its base with "
                                   "--adapter")
    output_dir: str | None = setting(None, "run folder (default {data_dir}/outputs/extract/{model_name}_{criteria})")
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    model_name: str | None = setting(None, "name in the default run folder (default: the last part of model_id)")
    num_notes: int | str = setting("all", "answer the first N notes only, or 'all'", minimum=1, words=("all",))
    fuzzy_threshold: float = setting(90.0, "rapidfuzz partial_ratio at or above which a quote counts as found "
                                     "(inexactly) in the note", minimum=0, maximum=100)
    require_grounded_quote: bool = setting(False, "a patient meets a criterion only on an answer whose quote is found "
                                           "in its note (off: as in the paper; the ungrounded decisions are "
                                           "counted either way)")
    structured_output: bool = setting(True, "constrain answers to the JSON answer object")
    max_output_tokens: int = setting(192, "longest answer in tokens (the answer object with its quote)", minimum=1)
    # a chunk is one engine call and the unit of resuming: 1,000 prompts, as stage A's chunk of 1,000 notes per
    # question type; the answering default of 10,000 rows kept nothing of an interrupted run smaller than that
    chunk_size: int = setting(1000, "rows (notes x criteria) per output file (the unit of resuming)", minimum=1)

    def check(self) -> None:
        self.check_shard()
        for flag in ("criteria", "notes", "model_id"):
            if not getattr(self, flag):
                raise InputError(f"pass --{flag} (extract.py --help describes it)")


@dataclass
class PreprocessSettings(Settings):
    """{task}-a-preprocess.ipynb: the task's raw data -> eval-data/{task}/{file}.csv."""

    what: ClassVar[str] = "parameter"
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    input_dir: str | None = setting(None, "the raw data's folder, relative to the data root; None: the task's own")
    overwrite: bool = setting(False, "rebuild existing files")
    prompt_dir: str | None = setting(None, PROMPT_DIR_HELP)


@dataclass
class SplitsPreprocessSettings(PreprocessSettings):
    """A preprocess notebook whose raw folder holds labelled splits (n2c2: train/ and test/)."""

    splits: list = setting(["train", "test"], "the splits to build, each a subfolder of input_dir")


@dataclass
class EvaluateSettings(Settings):
    """{task}-b-evaluate-performance.ipynb: every model's answers to one eval file -> scores, tables, figures."""

    what: ClassVar[str] = "parameter"
    data_dir: str | None = setting(None, DATA_DIR_HELP)
    input_file: str = setting("prompts", "the eval file the models answered")
    models: list | None = setting(None, "model folders under outputs/{task}/ to compare; None: all")
    resamples: int = setting(1000, "bootstrap resamples for the 95% intervals", minimum=1)
    seed: int = setting(0, "bootstrap seed")
    results_dir: str | None = setting(None, "where tables and figures go; None: outputs/{task}/evaluation/{input_file}")
    overwrite: bool = setting(False, "replace the scores, tables and figures of an earlier evaluation")


@dataclass
class N2c2EvaluateSettings(EvaluateSettings):
    """The n2c2 evaluation: HbA1c range, gold XML for the exported predictions."""

    input_file: str = setting("test", "the eval file (split) the models answered")
    hba1c_low: float = setting(6.5, "HBA1C is met when the highest HbA1c is in [hba1c_low, hba1c_high]")
    hba1c_high: float = setting(9.5, "the published code's upper end; float('inf') gives the paper's >= 6.5",
                                infinite=True)
    gold_dir: str | None = setting("n2c2-2018-track1/test", "gold XML of this split, relative to the data root (its "
                                   "TEXT goes into the exported files)")


def preprocess_settings(task: EvalTask) -> type[PreprocessSettings]:
    return SplitsPreprocessSettings if task.labelled_splits else PreprocessSettings


def evaluate_settings(task: EvalTask) -> type[EvaluateSettings]:
    return N2c2EvaluateSettings if task.official_n2c2 else EvaluateSettings
