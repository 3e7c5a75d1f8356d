"""Where everything lives: the one module that spells the stage folders and the files between stages.

Two kinds of places. The repository's own (stage folders, their scripts and notebooks, configs,
models/, results/, reports/) are fixed relative to the repository. The data files are relative
to one data root: the `--data_dir` flag, else $CLINICAL_DISTIL_DATA, else data/ in the
repository; a relative root or path is taken relative to the repository, never the current
directory, so scripts behave the same from any folder.

    {root}/mimic/notes_{N}.csv.gz                                stage 0 -> A
    {root}/synthetic-output/{N}/df_{type}_{start}_{end}.csv      stage A (+ manifest.json)
    {root}/synthetic-raw/synth_{combo}_{d}_df.csv.gz             stage B (+ synth_all_df.csv, tables)
    {root}/synthetic-raw/{train,test}_{name}.arrow (and .csv.gz) stage C, name = {combo}_{d}[_{variant}]
    results/{run}/checkpoint-*, final/, training_summary.json    stage D
    models/{name}/                                               stage E
    {root}/eval-data/{task}/{file}.csv                           evaluation prompts
    {root}/outputs/{task}/{model}/{file}_{start}_{rows}_chunk_{i}.csv (+ manifest_{file}.json)
    {root}/outputs/{task}/evaluation/{file or run}/              scores, tables, figures
    reports/{run}/                                               the driver's report
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

REPO_ROOT = Path(__file__).resolve().parent.parent
DATA_ENV = "CLINICAL_DISTIL_DATA"

# --- the repository -------------------------------------------------------------------------------

GENERATION_FOLDER = REPO_ROOT / "a-generate-synthetic-training-data"
# The stages, in the order a run takes them, each under one name: its script or notebooks (the published
# file names, `_` read as `-`), its settings class ({Name}Settings in stages.py), its library module
# (clinical_distil/{name}.py), its section of run-pipeline.py's settings and run state, and the docs
# (tests/test_stage_names.py holds them to it). {folder} and {prefix} are an evaluation task's.
STAGE_FILES: dict[str, str] = {
    "select": "a-generate-synthetic-training-data/synthetic-0-select-notes.py",
    "create": "a-generate-synthetic-training-data/synthetic-a-create.py",
    "post_process": "a-generate-synthetic-training-data/synthetic-b-post_process_join_notes.ipynb",
    "verify": "a-generate-synthetic-training-data/synthetic-b2-verify.py",
    "prep_training": "a-generate-synthetic-training-data/synthetic-c-prep-training.ipynb",
    "finetune": "finetune.py",
    "convert_peft": "a-generate-synthetic-training-data/synthetic-e-convert-peft.py",
    "preprocess": "{folder}/{prefix}-a-preprocess.ipynb",
    "eval_inference": "eval-inference.py",
    "evaluate": "{folder}/{prefix}-b-evaluate-performance.ipynb",
    "extract": "extract.py",
}
# what run-pipeline.py runs, in order: every stage above but extract (a researcher's own criteria), then the report
RUN_STAGES = (*(name for name in STAGE_FILES if name != "extract"), "report")
SELECT_SCRIPT, CREATE_SCRIPT, POST_PROCESS_NOTEBOOK, VERIFY_SCRIPT, PREP_TRAINING_NOTEBOOK, FINETUNE_SCRIPT, \
    CONVERT_PEFT_SCRIPT = (REPO_ROOT / STAGE_FILES[name] for name in (
        "select", "create", "post_process", "verify", "prep_training", "finetune", "convert_peft"))
EVAL_INFERENCE_SCRIPT = REPO_ROOT / STAGE_FILES["eval_inference"]
FINETUNE_LAUNCHER = GENERATION_FOLDER / "synthetic-d-run-finetune.sh"  # finetune.py under accelerate on a node
CONFIGS = REPO_ROOT / "configs"
# accelerate's configs for fine-tuning on several GPUs of a node, by how the processes share the work
DATA_PARALLEL_CONFIGS = {"ddp": CONFIGS / "multi_gpu.yaml", "deepspeed": CONFIGS / "deep_speed2.yaml"}
SINGLE_GPU_CONFIG = CONFIGS / "single_gpu.yaml"
MODELS = REPO_ROOT / "models"
RESULTS = REPO_ROOT / "results"
REPORTS = REPO_ROOT / "reports"
PROMPT_TEMPLATES = REPO_ROOT / "clinical_distil" / "prompt_templates"
CRITERIA = REPO_ROOT / "criteria"  # criteria files: the evaluation tasks' questions, examples for researchers


def criteria_file(name: str) -> Path:
    """A shipped criteria file by name (n2c2-2018, apixaban)."""
    return CRITERIA / f"{name}.yaml"


def task_notebooks(folder: str, prefix: str) -> tuple[Path, Path]:
    """An evaluation task's two notebooks: its preprocess and evaluate stages."""
    return tuple(REPO_ROOT / STAGE_FILES[stage].format(folder=folder, prefix=prefix)
                 for stage in ("preprocess", "evaluate"))


def resolve(path: str | os.PathLike, base: Path | None = None) -> Path:
    """A user-given path: absolute as is, relative ones against `base` (default the repository)."""
    path = Path(path).expanduser()
    if path.is_absolute():
        return path
    return (base or REPO_ROOT) / path


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """The data root: the flag if given, else $CLINICAL_DISTIL_DATA, else data/ in the repository."""
    chosen = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
    return REPO_ROOT / "data" if chosen is None else resolve(chosen)


# --- stage 0 and A --------------------------------------------------------------------------------

def notes_dir(root: Path) -> Path:
    """mimic/: the notes a run selects from and the notes it selected."""
    return root / "mimic"


def notes_file(root: Path, dataset: int | str) -> Path:
    """The selected notes of stage 0 (written gzip; a plain notes_{N}.csv is read as well)."""
    return notes_dir(root) / f"notes_{dataset}.csv.gz"


def notes_candidates(root: Path, dataset: int | str) -> list[Path]:
    return [notes_file(root, dataset), notes_dir(root) / f"notes_{dataset}.csv"]


def corpus_notes(root: Path) -> Path:
    """A simulated corpus's notes (simulation/corpus.py), as MIMIC-III ships them."""
    return notes_dir(root) / "NOTEEVENTS.csv.gz"


NOTES_NAME = re.compile(r"notes_(?P<dataset>.+?)\.csv(\.gz)?")


def facts_file(notes_path: Path) -> Path:
    """A simulated corpus's truth (simulation/corpus.py), beside its notes: what the reference teacher and the
    report's teacher check read."""
    return notes_path.parent / "facts.jsonl.gz"


def chunks_dir(root: Path, dataset: int | str) -> Path:
    return root / "synthetic-output" / str(dataset)


CREATE_CHUNK = re.compile(r"^df_(?P<type>.+)_(?P<start>\d+)_(?P<end>\d+)\.csv$")


def create_chunk(folder: Path, question_type: str, start: int, end: int) -> Path:
    return folder / f"df_{question_type}_{start}_{end}.csv"


def lock_name(output: str = "clinical-distil") -> str:
    """The lock file a run holds in the folder it writes: one per folder, or one per output where runs share
    a folder (a shard of stage A, one notes file, one training set)."""
    return f".{output}.lock"


def shard_suffix(num_shards: int, shard_index: int) -> str:
    """What a shard adds to its manifest's name ("" for an unsharded run)."""
    return "" if num_shards == 1 else f"_shard{shard_index}of{num_shards}"


def create_manifest(folder: Path, num_shards: int = 1, shard_index: int = 0) -> Path:
    return folder / f"manifest{shard_suffix(num_shards, shard_index)}.json"


class ChunkNaming(Protocol):
    """How a chunked stage names its files: each chunk file its series and the rows [start, end) it holds."""

    glob: str  # every chunk file of the stage in a folder (and perhaps others: `parse` tells)

    def path(self, folder: Path, series: str, start: int, end: int, index: int) -> Path: ...

    def parse(self, name: str) -> tuple[str, int, int] | None: ...

    def manifest(self, folder: Path, num_shards: int = 1, shard_index: int = 0) -> Path: ...


@dataclass(frozen=True)
class CreateFiles:
    """Stage A's naming rule for the chunked runner (chunks.py): a file per question type (its series) and chunk
    of note rows [start, end), df_{type}_{start}_{end}.csv; a manifest per shard."""

    glob: str = "df_*_*_*.csv"

    def path(self, folder: Path, series: str, start: int, end: int, index: int) -> Path:
        return create_chunk(folder, series, start, end)

    def parse(self, name: str) -> tuple[str, int, int] | None:
        """(series, start, end) of a chunk file's name; None for a name that is not one."""
        match = CREATE_CHUNK.match(name)
        return (match["type"], int(match["start"]), int(match["end"])) if match else None

    def manifest(self, folder: Path, num_shards: int = 1, shard_index: int = 0) -> Path:
        return create_manifest(folder, num_shards, shard_index)


CREATE_FILES = CreateFiles()


# --- stages B and C -------------------------------------------------------------------------------

def raw_dir(root: Path) -> Path:
    return root / "synthetic-raw"


def items_file(raw: Path) -> Path:
    return raw / "synth_all_df.csv"


def failures_file(raw: Path) -> Path:
    return raw / "parse_failures.csv"


def reply_counts_file(raw: Path) -> Path:
    return raw / "replies_by_type.csv"


def stage_b_summary_file(raw: Path) -> Path:
    """Stage B's summary for the dataset card: teacher, filters and what each removed."""
    return raw / "stage_b.json"


def verification_file(raw: Path) -> Path:
    """The verifier's answers to stage B's items, and whether each agrees with the teacher's."""
    return raw / "verification.csv"


def verification_dir(raw: Path, model_name: str) -> Path:
    """The verifier's prompts' chunk files and manifest."""
    return raw / "verification" / model_name


VERIFY_INPUT = "items"  # the verifier's prompt table's name in its chunk files


def dataset_card(raw: Path, name: str) -> Path:
    """Stage C's dataset card of one training set, beside its arrow folders."""
    return raw / f"{name}_dataset_card.md"


def combo_file(raw: Path, combo: str, min_difficulty: int | str) -> Path:
    return raw / f"synth_{combo}_{min_difficulty}_df.csv.gz"


def variant_name(per_type: int | None = None, hardest: bool = False, support: bool = True,
                 grouped_split: bool = True, permute_answers: bool = False) -> str:
    """What sets a stage C training set apart from the main one ('' for the main one): per{N} (a fixed count
    per type), hardest, nosupport (targets without source and explanation), byexample (split by example),
    permuted (answers shuffled within each question type: the format-only baseline)."""
    parts = ([f"per{per_type}"] if per_type is not None else []) + (["hardest"] if hardest else []) + \
        ([] if support else ["nosupport"]) + ([] if grouped_split else ["byexample"]) + \
        (["permuted"] if permute_answers else [])
    return "-".join(parts)


def training_name(combo: str, min_difficulty: int | str, variant: str = "") -> str:
    """The name of one training set: {combo}_{d}, and its variant when it is not the main one."""
    return f"{combo}_{min_difficulty}" + (f"_{variant}" if variant else "")


def training_dataset(raw: Path, split: str, name: str) -> Path:
    """A split of stage C as datasets' save_to_disk folder."""
    return raw / f"{split}_{name}.arrow"


def training_table(raw: Path, split: str, name: str) -> Path:
    """The same rows as a gzip CSV (chat messages as JSON)."""
    return raw / f"{split}_{name}.csv.gz"


# --- stages D and E -------------------------------------------------------------------------------

def run_name(model_id: str, training: str, lora_r: int, lora_alpha: int) -> str:
    """finetune.py's default run folder name: {model}_{training set}_{r}_{alpha}."""
    return f"{Path(str(model_id).rstrip('/')).name}_{training}_{lora_r}_{lora_alpha}"


def final_adapter(run_dir: Path) -> Path:
    return run_dir / "final"


def training_summary(run_dir: Path) -> Path:
    return run_dir / "training_summary.json"


CHECKPOINT_GLOB = "checkpoint-*"
PROGRESS_FILE = "training_progress.json"  # in each checkpoint: training seconds and tokens up to it


def merged_model(models: Path, name: str) -> Path:
    return models / name


# --- evaluation -----------------------------------------------------------------------------------

def eval_data_dir(root: Path, task: str) -> Path:
    """eval-data/{task}/: the prompt tables of a task's preprocess notebook."""
    return root / "eval-data" / task


def eval_file(root: Path, task: str, file_name: str) -> Path:
    return eval_data_dir(root, task) / f"{file_name}.csv"


def task_outputs(root: Path, task: str) -> Path:
    """outputs/{task}/: one folder per model, and evaluation/."""
    return root / "outputs" / task


def model_outputs(root: Path, task: str, model_name: str) -> Path:
    return task_outputs(root, task) / model_name


def extraction_dir(root: Path, model_name: str, criteria_name: str) -> Path:
    """extract.py's default run folder."""
    return root / "outputs" / "extract" / f"{model_name}_{criteria_name}"


EXTRACTION_PROMPTS = "prompts"  # the run's prompt table (prompts.csv) and its answers' chunk files
EXTRACTION_FILES = {"answers": "answers.csv", "patients": "patients.csv", "cohort": "cohort.csv",
                    "review": "review.html", "manifest": "extraction.json"}


def eval_chunk(folder: Path, file_name: str, start: int, count: int, index: int) -> Path:
    """eval-inference's file of rows [start, start + count), the index-th chunk of its run."""
    return folder / f"{file_name}_{start}_{count}_chunk_{index}.csv"


def eval_chunk_pattern(file_name: str) -> re.Pattern:
    return re.compile(rf"^{re.escape(file_name)}_(\d+)_(\d+)_chunk_(\d+)\.csv$")


def eval_manifest(folder: Path, file_name: str, num_shards: int = 1, shard_index: int = 0) -> Path:
    return folder / f"manifest_{file_name}{shard_suffix(num_shards, shard_index)}.json"


@dataclass(frozen=True)
class AnswerFiles:
    """An answering run's naming rule for the chunked runner (chunks.py): one series, the prompt table's name
    (an eval file, the verifier's items, extract.py's prompts), {file}_{start}_{rows}_chunk_{i}.csv for rows
    [start, start + rows), the i-th chunk of the run that wrote it; manifest_{file}.json per shard."""

    file_name: str

    @property
    def glob(self) -> str:
        return f"{self.file_name}_*_chunk_*.csv"

    def path(self, folder: Path, series: str, start: int, end: int, index: int) -> Path:
        return eval_chunk(folder, series, start, end - start, index)

    def parse(self, name: str) -> tuple[str, int, int] | None:
        """(series, start, end) of a chunk file's name; None for a name that is not one of this table's."""
        match = eval_chunk_pattern(self.file_name).match(name)
        return (self.file_name, int(match[1]), int(match[1]) + int(match[2])) if match else None

    def manifest(self, folder: Path, num_shards: int = 1, shard_index: int = 0) -> Path:
        return eval_manifest(folder, self.file_name, num_shards, shard_index)


def evaluation_dir(root: Path, task: str, name: str) -> Path:
    """Scores, tables and figures of one task (named by its eval file, or by the driver's run)."""
    return task_outputs(root, task) / "evaluation" / name


def report_dir(reports: Path, run: str) -> Path:
    return reports / run


def teacher_truth_file(report: Path) -> Path:
    """The report's teacher precision against the truth (simulated notes only)."""
    return report / "teacher_truth.csv"


# --- a whole run of the driver ----------------------------------------------------------------------

MODEL_ROLES = ("base", "distilled")  # the student before and after distillation


@dataclass
class RunLayout:
    """Where one run of run-pipeline.py keeps its files; `settings` holds the settings of each of its stages."""

    run: str
    root: Path  # the data root
    notes_file: Path  # the selected notes stage A reads
    dataset: str  # stage A's folder name
    select_from: Path | None  # the raw MIMIC file when stage 0 has to run
    results: Path
    models: Path
    reports: Path
    training: str  # the training set's name: {input_file}_{min_difficulty}[_{variant}]
    combo_file: Path  # the stage B file stage C reads
    student: str
    tasks: tuple[str, ...]
    eval_files: dict[str, str]  # task -> the eval file both models answer
    settings: dict = field(default_factory=dict)  # "run" and each stage's name -> its checked settings

    @property
    def chunks_dir(self) -> Path:
        return chunks_dir(self.root, self.dataset)

    @property
    def create_manifest(self) -> Path:
        return create_manifest(self.chunks_dir)

    @property
    def raw_dir(self) -> Path:
        return raw_dir(self.root)

    @property
    def finetune_dir(self) -> Path:
        return self.results / self.run

    @property
    def merged_dir(self) -> Path:
        return merged_model(self.models, f"{self.run}-distilled")

    @property
    def report_dir(self) -> Path:
        return report_dir(self.reports, self.run)

    def eval_file(self, task: str) -> Path:
        return eval_file(self.root, task, self.eval_files[task])

    def model_name(self, role: str) -> str:
        return f"{self.run}-{role}"

    def model_id(self, role: str) -> str:
        return self.student if role == "base" else str(self.merged_dir)

    def outputs_dir(self, task: str, role: str) -> Path:
        return model_outputs(self.root, task, self.model_name(role))

    def inference_manifest(self, task: str, role: str) -> Path:
        return eval_manifest(self.outputs_dir(task, role), self.eval_files[task])

    def evaluation_dir(self, task: str) -> Path:
        return evaluation_dir(self.root, task, self.run)
