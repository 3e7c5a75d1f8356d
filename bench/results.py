"""bench/RESULTS.md and experiments/RESULTS.md, written from the JSON records beside them.

    python bench/results.py                # write both pages
    python bench/results.py --check True   # exit 1 when a page is not what its records give

Every figure lives in a JSON record next to the script that measures it (bench/*.json, experiments/*.json):
a run is its date, card, command and code (the commit whose code it measured) and the rows it gave. Each
table below takes its rows from one file (for each configuration, the most recent run that measured it) and
names every row's run. A new measurement is a new run: append the script's --output record to the file's
`runs` (it carries date, card, command and code), then run this script; the pages are never edited by hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from clinical_distil.cli import run
from clinical_distil.layout import REPO_ROOT as REPO

PROVENANCE = ("date", "card", "command", "code")
Row = dict
Cell = Callable[[Row], str]


@dataclass(frozen=True)
class Table:
    """One benchmark: what it measures, its rows (from `source`), its columns and a sentence of reading."""

    title: str
    measures: str
    source: Callable[[], list[Row]]
    columns: dict[str, Cell]
    reading: Callable[[list[Row]], str]
    select: Callable[[Row], bool] = lambda row: True
    key: Callable[[Row], tuple] | None = None  # rows of one key: the most recent run's only
    derive: Callable[[list[Row]], list[Row]] = lambda rows: rows  # figures computed across rows (ratios)
    extra: Callable[[list[Row]], list[list[str]]] = lambda rows: []  # rows without a run (totals)


# --- records ------------------------------------------------------------------------------------------------

def load(path: str) -> dict:
    return json.loads((REPO / path).read_text())


def run_rows(path: str) -> Callable[[], list[Row]]:
    """The rows of a file of runs, each with its run's fields (a run without rows is one row)."""
    def rows() -> list[Row]:
        found = []
        for record in load(path)["runs"]:
            common = {key: value for key, value in record.items() if key != "rows"}
            found += [{**common, **row} for row in record.get("rows", [common])]
        return found
    return rows


def known_answer_rows(part: str) -> Callable[[], list[Row]]:
    """experiments/known_answer.json's `runs` or `teacher_precision`, each with its arm's run."""
    def rows() -> list[Row]:
        data = load("experiments/known_answer.json")
        arm = lambda record: (record["teacher"], record["notes"], record.get("filters", "none"))  # noqa: E731
        arms = {arm(record): {key: record[key] for key in PROVENANCE} for record in data["arm_seconds"]}
        return [{**arms[arm(record)], **record} for record in data[part]]
    return rows


def filter_rows() -> list[Row]:
    return [{**{key: value for key, value in measurement.items() if key != "filters"}, **row}
            for measurement in load("experiments/filter_precision.json")["measurements"]
            for row in measurement["filters"]]


def chosen(table: Table) -> list[Row]:
    """The table's rows: selected, and for each key the most recent run's (file order is run order)."""
    rows = [row for row in table.source() if table.select(row)]
    if table.key is None:
        return rows
    latest = {table.key(row): row for row in rows}
    return [row for row in rows if latest[table.key(row)] is row]


def shown(table: Table) -> list[Row]:
    return table.derive(chosen(table))


# --- cells ------------------------------------------------------------------------------------------------

def number(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:,.{digits}f}"


def ratio(value: float) -> str:
    return f"{value:.0f}x" if value >= 10 else f"{value:.2f}x"


def seconds(value: float) -> str:
    """0.475, 0.15, 22: as many decimals as the record has, at most three."""
    return f"{value:.3f}".rstrip("0").rstrip(".")


def percent(value, digits: int = 1) -> str:
    return "" if value is None else f"{value:.{digits}f}%"


def losses(row: Row) -> str:
    return f"{row['eval_loss_before']:.3f} -> {row['eval_loss']:.4f}"


def shape_name(shape: str) -> str:
    return {"llama-3.1-8b": "Llama-3.1-8B", "llama-3.2-1b": "Llama-3.2-1B"}.get(shape, shape)


def with_interval(row: Row) -> str:
    return f"{row['balanced_accuracy']:.3f} [{row['ci_low']:.3f}, {row['ci_high']:.3f}]"


def teacher(row: Row) -> str:
    return row["teacher"] if row.get("filters", "none") in (None, "none") else f"{row['teacher']}, stage B filters"


def of_linear(rows: list[Row]) -> list[Row]:
    """Runs of several processes against as many times the one-process row of their configuration (whole run and
    steady), in percent."""
    single = {row["config"]: row for row in rows if row["processes"] == 1}
    share = lambda row, rate: (None if row["processes"] == 1  # noqa: E731
                               else 100 * row[rate] / (row["processes"] * single[row["config"]][rate]))
    return [{**row, "of_linear": share(row, "tokens_per_second"),
             "steady_of_linear": share(row, "steady_tokens_per_second")} for row in rows]


# --- the speed benchmarks (bench/RESULTS.md) ------------------------------------------------------------

def generation_reading(rows: list[Row]) -> str:
    rate = {(row["card"], row["workload"], row["engine"]): row["output_tokens_per_s"] for row in rows}
    cpu = [key for key in rate if key[0].startswith("CPU")][0][:2]
    gpu = [key for key in rate if key[2] == "naive" and not key[0].startswith("CPU")][0][:2]
    return ("On stage A prompts the transformers engine runs "
            f"{rate[(*cpu, 'transformers')] / rate[(*cpu, 'naive')]:.1f}x a plain loop on a CPU and "
            f"{rate[(*gpu, 'transformers')] / rate[(*gpu, 'naive')]:.1f}x on the GPU, vLLM "
            f"{rate[(*gpu, 'vllm')] / rate[(*gpu, 'naive')]:.0f}x: on a GPU the driver uses vLLM, and the "
            "transformers engine serves machines without it.")


def versus_naive(rows: list[Row]) -> list[Row]:
    """Each engine's rate against the naive loop's in the same run, where that run timed it."""
    naive = {row["command"]: row["output_tokens_per_s"] for row in rows if row["engine"] == "naive"}
    return [{**row, "vs_naive": row["output_tokens_per_s"] / naive[row["command"]] if row["command"] in naive else None}
            for row in rows]


GENERATION = Table(
    title="Generation: the engines against one `generate` call per prompt",
    measures="Output tokens per second of a plain loop of `model.generate` (one call per prompt: naive), the "
             "project's transformers engine and vLLM on the same prompts, greedy, run back to back in one process; "
             "stage A's prompts are a sample note's four generation prompts (about 1,375 tokens each).",
    source=run_rows("bench/generation_speed.json"),
    derive=versus_naive,
    columns={"card": lambda row: row["card"], "model": lambda row: row["model"],
             "workload": lambda row: row["workload"],
             "engine": lambda row: row["engine"], "output tokens/s": lambda row: number(row["output_tokens_per_s"]),
             "vs naive": lambda row: "" if row["vs_naive"] is None else ratio(row["vs_naive"])},
    reading=generation_reading)

def decode_loop_reading(speedups: list[float]) -> str:
    return (f"The loop computes a note's shared prefix once and decodes without padding: {min(speedups):.1f}-"
            f"{max(speedups):.1f}x as fast on every workload, for the same replies token for token.")


DECODE_LOOP = Table(
    title="The transformers engine's decode loop against batched `model.generate`",
    measures="Seconds to answer the same conversations (token ids, stop tokens and xgrammar schemas) through the "
             "engine's own loop and through `model.generate` on left-padded batches with xgrammar's logits "
             "processor; SmolLM2-135M-Instruct, float32, greedy.",
    source=run_rows("bench/decode_loop.json"),
    columns={"workload": lambda row: row["workload"], "structured": lambda row: "yes" if row["structured"] else "no",
             "engine loop s": lambda row: number(row["engine_seconds"]),
             "batched generate s": lambda row: number(row["generate_seconds"]),
             "output tokens": lambda row: number(row["output_tokens"], 0),
             "same text": lambda row: percent(row["same_text_percent"], 0),
             "speed-up": lambda row: ratio(row["generate_seconds"] / row["engine_seconds"])},
    reading=lambda rows: decode_loop_reading([row["generate_seconds"] / row["engine_seconds"] for row in rows]))

GPU_CHECKS = Table(
    title="The GPU path with the real SmolLM2-135M-Instruct weights",
    measures="Stage A and eval-inference on vLLM against the transformers engine, structured output, 4-bit "
             "fine-tuning, the merge and an adapter served by vLLM, through the project's scripts: 24 sample notes x "
             "4 question types (k = 2) and the 322 prompts of the three sample evaluation sets.",
    source=run_rows("bench/gpu_verify.json"),
    columns={"check": lambda row: row["check"], "result": lambda row: row["result"]},
    reading=lambda rows: (
        "`--dtype float32` makes the engines agree (their bf16 kernels round differently); a 135M teacher loops to "
        "the token limit in a few replies, which the retries mend; an adapter served in bf16 differs from its "
        "merged model by rounding, and vLLM's LoRA kernels take bf16 or fp16 only."))


def per_item(row: Row) -> str:
    parts = [f"{seconds(row[f'seconds_per_{kind}'])} s per {kind}" for kind in ("note", "example")
             if f"seconds_per_{kind}" in row]
    return "; ".join(parts + ([row["note"]] if "note" in row else []))


THROUGHPUT_COLUMNS = {"workload": lambda row: row["workload"],
                      "output tokens/s": lambda row: number(row["output_tokens_per_s"]),
                      "per note / example": per_item}


def vllm_reading(rows: list[Row]) -> str:
    rate = {row["workload"]: row for row in rows}
    on, off = rate["stage A, prefix cache on (a note's four prompts adjacent)"], rate["stage A, prefix cache off"]
    structured = rate["stage A `--structured_output`"]
    bounded = next(row for key, row in rate.items() if "maxLength" in key)
    unbounded = next(row for key, row in rate.items() if "unbounded" in key)
    own = next(row for key, row in rate.items() if "benchmark loop" in key)
    return (f"Keeping a note's four prompts together takes stage A from {number(off['output_tokens_per_s'])} to "
            f"{number(on['output_tokens_per_s'])} tokens/s through the prefix cache "
            f"({on['output_tokens_per_s'] / off['output_tokens_per_s']:.1f}x), "
            f"{on['output_tokens_per_s'] / own['output_tokens_per_s']:.0%} of vLLM's own loop on the same request "
            f"shape; structured output costs nothing ({number(structured['output_tokens_per_s'])}), but bounding the "
            "schema's strings with `maxLength` would cost "
            f"{1 - bounded['output_tokens_per_s'] / unbounded['output_tokens_per_s']:.0%}; at "
            f"{on['seconds_per_note']} s a note, 100,000 notes take {100000 * on['seconds_per_note'] / 3600:.0f} "
            "GPU-hours with an 8B teacher at 512 new tokens a reply.")


VLLM_THROUGHPUT = Table(
    title="vLLM throughput on the Llama-3.1-8B shape, one GPU",
    measures="Output tokens per second through the stage code (`runner.run_chunks`, which "
             "synthetic-a-create.py and eval-inference.py run) on a random-weight Llama-3.1-8B shape, bf16 (`python "
             "bench/gpu_throughput.py build --shape llama-3.1-8b` first): stage A on 64 notes of 2,000-4,000 tokens "
             "x 4 question types at temperature 0.7 and 512 new tokens, eval-inference with 256 new tokens.",
    source=run_rows("bench/gpu_throughput.json"),
    select=lambda row: row["model"] == "Llama-3.1-8B shape",
    columns=THROUGHPUT_COLUMNS,
    reading=vllm_reading)


def several_gpus_reading(rows: list[Row]) -> str:
    shards = next(row for row in rows if "shards" in row["model"])
    answer = next(row for row in rows if "seconds_per_example" in row)
    return (f"Four 8B shards give {number(shards['output_tokens_per_s'])} tokens/s together, each about as fast as "
            f"one GPU alone; the 70B shape answers an evaluation prompt in {answer['seconds_per_example']:.3f} s on "
            "four GPUs (the paper: 2.34 s on 8 x A100).")


SEVERAL_GPUS = Table(
    title="vLLM on four GPUs: a 70B shape with tensor parallel 4, an 8B shape in four shards",
    measures="The same stage code on four GPUs of one host: the Llama-3.1-70B shape with vLLM's dummy weights and "
             "tensor parallel 4, and the 8B shape as four `synthetic-a-create.py` shards, one process per GPU.",
    source=run_rows("bench/gpu_throughput.json"),
    select=lambda row: row["model"] != "Llama-3.1-8B shape",
    columns={"model": lambda row: row["model"], **THROUGHPUT_COLUMNS},
    reading=several_gpus_reading)


def engine_core(row: Row) -> str:
    return "second process" if row["mode"] == "eager_two_process" else row.get("engine_core", "calling process")


def start_reading(rows: list[Row]) -> str:
    small = {row["mode"]: row for row in rows if row["model"] == "models/SmolLM2-135M-Instruct"}
    graphs, eager, compiled = small["graphs"], small["eager"], small["compiled_cold"]
    steps = next(row for row in START_ROWS() if row["model"] == "llama-3.1-8b"
                 and row.get("break_even") == "cold")["break_even_steps"]
    return ("For SmolLM2-135M torch.compile decodes no faster than CUDA graphs alone "
            f"({compiled['decode_ms_per_step']:.2f} against {graphs['decode_ms_per_step']:.2f} ms a step), and the "
            f"graphs decode {eager['decode_ms_per_step'] / graphs['decode_ms_per_step']:.1f}x as fast as eager with "
            f"256 prompts and {eager['one_prompt_ms_per_step'] / graphs['one_prompt_ms_per_step']:.1f}x with one; the "
            "engine core in the calling process starts "
            f"{small['eager_two_process']['start_seconds'] - eager['start_seconds']:.1f} s sooner. For the 8B shape "
            f"compiling pays against eager after {steps:,} decoding steps (empty compile cache): `--vllm_compile "
            "auto` starts `graphs` below 5,000 steps and compiles above.")


START_ROWS = run_rows("bench/vllm_start.json")

VLLM_START = Table(
    title="vLLM's start: compiled, CUDA graphs only, eager",
    measures="One process per row: `import vllm`, the engine's start (through the project's VLLMEngine), one wave of "
             "256 prompts of 512 tokens decoding exactly 256 tokens each, then one prompt alone decoding 256 (the "
             "tail of a run); FlashInfer's and Triton's kernel caches warm; the 8B shape with vLLM's dummy weights.",
    source=START_ROWS,
    select=lambda row: "mode" in row,
    key=lambda row: (row["model"], row["mode"]),
    columns={"model": lambda row: Path(row["model"]).name, "mode": lambda row: row["mode"].replace("_", " "),
             "engine core": engine_core, "import s": lambda row: number(row["import_seconds"]),
             "start s": lambda row: number(row["start_seconds"]),
             "ms a step, 256 prompts": lambda row: number(row["decode_ms_per_step"], 2),
             "ms a step, one prompt": lambda row: number(row.get("one_prompt_ms_per_step"), 2)},
    reading=start_reading)

SPEED_ROWS = run_rows("bench/finetune_speed.json")
SPEED_COLUMNS = {"tokens/s": lambda row: number(row["tokens_per_second"]),
                 "steady tokens/s": lambda row: number(row.get("steady_tokens_per_second")),
                 "MFU": lambda row: percent(row["mfu_percent"]),
                 "peak GiB": lambda row: number(row["peak_memory_gib"], 2),
                 "eval loss before -> after": losses}


def one_gpu_reading(rows: list[Row]) -> str:
    steady = {row["config"]: row for row in rows}
    paper, compiled = steady["paper"], steady["paper_compiled"]
    fast = [row["steady_tokens_per_second"] for row in rows if row["config"].startswith("fast")]
    tokens = compiled["trained_tokens"]
    compiling = tokens / compiled["tokens_per_second"] - tokens / compiled["steady_tokens_per_second"]
    saved = tokens / compiled["steps"] * (1 / paper["steady_tokens_per_second"]
                                          - 1 / compiled["steady_tokens_per_second"])
    return ("Compiling each decoder layer takes the paper configuration from "
            f"{number(paper['steady_tokens_per_second'])} to {number(compiled['steady_tokens_per_second'])} tokens/s "
            f"steady ({compiled['steady_tokens_per_second'] / paper['steady_tokens_per_second']:.2f}x; peak "
            f"{compiled['peak_memory_gib']:.1f} GiB against {paper['peak_memory_gib']:.1f}); its compile, about "
            f"{compiling:.0f} s, is paid back after about {compiling / saved:.0f} optimizer steps. The fast preset "
            f"runs {min(fast):,.0f}-{max(fast):,.0f} steady. Rows of different runs ran on different H200 hosts, and "
            "a step bound by kernel launches goes at its host CPU's pace.")


ONE_GPU = Table(
    title="Fine-tuning on one GPU: the paper's configuration against faster ones",
    measures="finetune.py's tokens/s on a random-weight Llama-3.1-8B shape, 96 examples of 500-4,000 tokens (166,305 "
             "tokens, 48 optimizer steps of two examples); \"steady\" leaves out each run's first three optimizer "
             "steps (compiling among them); MFU counts 4 FLOPs per parameter and token against 989 TFLOP/s.",
    source=SPEED_ROWS,
    select=lambda row: row["trained_tokens"] == 166305 and row["processes"] == 1,
    key=lambda row: (row["shape"], row["config"]),
    columns={"config": lambda row: row["config"], **SPEED_COLUMNS},
    reading=one_gpu_reading)


def shapes_reading(rows: list[Row]) -> str:
    by = {(row["shape"], row["config"]): row for row in rows}
    eight = {config: row["tokens_per_second"] for (shape, config), row in by.items() if shape == "llama-3.1-8b"}
    fused = eight["paper_fused"] / eight["paper"]
    seeds = by[("llama-3.2-1b", "paper")]["eval_loss"], by[("llama-3.2-1b", "paper_seed_43")]["eval_loss"]
    return (f"Liger's fused kernels slow the launch-bound paper configuration down ({fused:.2f}x); two seeds of the "
            f"paper configuration end {100 * abs(seeds[0] - seeds[1]) / max(seeds):.1f}% apart in eval loss (1B), the "
            "spread within which the presets' eval losses lie; the varlen kernel (`torch_varlen`) serves the fast "
            "preset's padding-free batches.")


SHAPES = Table(
    title="Fine-tuning on one GPU: two shapes, 160 examples",
    measures="The same on 160 examples of 500-4,000 tokens (284,832 tokens, 80 optimizer steps of two examples) for "
             "the Llama-3.1-8B and Llama-3.2-1B shapes, with the attention each configuration ran.",
    source=SPEED_ROWS,
    select=lambda row: row["trained_tokens"] == 284832 and row["processes"] == 1,
    key=lambda row: (row["shape"], row["config"]),
    columns={"shape": lambda row: shape_name(row["shape"]), "config": lambda row: row["config"],
             "attention": lambda row: row["attention"], "tokens/s": SPEED_COLUMNS["tokens/s"],
             "MFU": SPEED_COLUMNS["MFU"], "peak GiB": SPEED_COLUMNS["peak GiB"], "eval loss before -> after": losses},
    reading=shapes_reading)


def profile_reading(rows: list[Row]) -> str:
    busy = [row["profile"]["gpu_busy_percent"] for row in rows]
    plain = next(row for row in rows if "plain" in row)
    return (f"The GPU is busy {min(busy):.0f}-{max(busy):.0f}% of a profiled step: the CPU, launching the kernels, "
            "bounds these steps; finetune's trainer runs the paper's update "
            f"{plain['trainer']['tokens_per_second'] / plain['plain']['tokens_per_second']:.2f}x as fast as a plain "
            "transformers + PEFT loop of it.")


PROFILE = Table(
    title="Where a fine-tuning step goes",
    measures="Seconds per optimizer step (two examples) of finetune's trainer on the 8B shape, a plain transformers "
             "+ PEFT loop of the same update where it ran, and the share of wall time the GPU was busy in the steps "
             "torch.profiler recorded.",
    source=run_rows("bench/finetune_profile.json"),
    columns={"preset": lambda row: row["preset"], "base": lambda row: "4-bit" if row["load_in_4bit"] else "bf16",
             "compiled": lambda row: "yes" if row["compile_layers"] else "no",
             "example tokens": lambda row: "-".join(f"{length:,}" for length in dict.fromkeys(row["example_tokens"])),
             "s per step": lambda row: f"{row['trainer']['seconds_per_step']:.3f}",
             "tokens/s": lambda row: number(row["trainer"]["tokens_per_second"]),
             "plain loop tokens/s": lambda row: number(row["plain"]["tokens_per_second"]) if "plain" in row else "",
             "GPU busy": lambda row: percent(row["profile"]["gpu_busy_percent"])},
    reading=profile_reading)

def two_gpus_reading(rows: list[Row]) -> str:
    fast = {(row["processes"], row["launcher"]): row for row in rows if row["config"] == "fast_bf16"}
    ddp, zero = fast[(2, "ddp")], fast[(2, "deepspeed")]
    return (f"DDP trains the fast preset {ddp['tokens_per_second'] / zero['tokens_per_second']:.2f}x as fast as "
            f"ZeRO-2 on the same two cards, at {ddp['of_linear']:.1f}% of linear: a LoRA adapter's optimizer state is "
            "small, so ZeRO-2's sharding saves little. An update then takes four examples and the run makes half the "
            "updates, hence the higher eval losses.")


TWO_GPUS = Table(
    title="Fine-tuning on two GPUs: DDP against DeepSpeed ZeRO-2",
    measures="The 8B shape on 240 examples of 500-4,000 tokens (425,633 tokens) with `--train_sampling_strategy "
             "batch_rebalance`, one process, or two under `accelerate launch` with configs/multi_gpu.yaml (DDP) or "
             "configs/deep_speed2.yaml (ZeRO-2); \"of linear\" compares with twice the one-process row.",
    source=SPEED_ROWS,
    select=lambda row: row["trained_tokens"] == 425633 and row["shape"] == "llama-3.1-8b",
    key=lambda row: (row["config"], row["processes"], row.get("launcher")),
    derive=of_linear,
    columns={"config": lambda row: row["config"], "processes": lambda row: str(row["processes"]),
             "launcher": lambda row: {"ddp": "DDP", "deepspeed": "ZeRO-2"}.get(row.get("launcher"), ""),
             "tokens/s": lambda row: number(row["tokens_per_second"]),
             "of linear": lambda row: percent(row["of_linear"]),
             "steady tokens/s": lambda row: number(row["steady_tokens_per_second"]),
             "steady of linear": lambda row: percent(row["steady_of_linear"]),
             "peak GiB": lambda row: number(row["peak_memory_gib"], 2),
             "eval loss after": lambda row: f"{row['eval_loss']:.4f}"},
    reading=two_gpus_reading)


def launch_reading(rows: list[Row]) -> str:
    four = next(row for row in rows if row["processes"] == 4)
    alone = next(row for row in rows if row["processes"] == 1 and row["code"] == four["code"])
    two = next(row for row in rows if row["processes"] == 2)
    steady = 100 * four["steady_tokens_per_second"] / (4 * alone["steady_tokens_per_second"])
    return ("Each step waits for the slowest rank (examples of 566-4,149 tokens): two GPUs reach "
            f"{two['of_linear_percent']:.1f}% of linear, four {four['of_linear_percent']:.1f}% ({steady:.1f}% steady) "
            "against one GPU of the same host.")


LAUNCH = Table(
    title="The paper's configuration through its launch script, on one, two and four GPUs",
    measures="`synthetic-d-run-finetune.sh` (the paper's QLoRA configuration; ZeRO-2 above one process) on the 8B "
             "shape, the same 240 examples (425,446 tokens) in every run; \"of linear\" against the one-process run "
             "of the same host.",
    source=run_rows("bench/finetune_launch.json"),
    columns={"processes": lambda row: str(row["processes"]), "tokens/s": lambda row: number(row["tokens_per_second"]),
             "per GPU": lambda row: number(row["tokens_per_second"] / row["processes"]),
             "of linear": lambda row: percent(row["of_linear_percent"]),
             "steady tokens/s": lambda row: number(row["steady_tokens_per_second"], 0),
             "peak GiB": lambda row: number(row["peak_memory_gib"], 2),
             "eval loss before -> after": losses},
    reading=launch_reading)


def pipeline_reading(rows: list[Row]) -> str:
    total = sum(row["seconds"] for row in rows)
    compile_seconds = sum(row.get("kernel_compile_seconds", 0) for row in rows)
    return (f"The whole run takes {total / 60:.1f} minutes with two vLLM starts (stage A, and one eval-inference "
            f"process for both models and the three tasks, the student served as its adapter); {compile_seconds:.0f} "
            "s of it is the first start compiling FlashInfer's and Triton's kernels on a fresh machine, which their "
            "caches keep.")


PIPELINE = Table(
    title="The 24-note driver run on one GPU",
    measures="`run-pipeline.py` with configs/smollm2-gpu.yaml: SmolLM2-135M-Instruct as teacher and student, 24 "
             "sample notes, k = 5, structured output, the fast preset for 3 epochs, the three sample evaluation sets "
             "in full (322 prompts); seconds per stage.",
    source=run_rows("bench/pipeline_run.json"),
    columns={"stage": lambda row: row["stage"], "seconds": lambda row: number(row["seconds"]),
             "what": lambda row: row["detail"]},
    extra=lambda rows: [["total", number(sum(row["seconds"] for row in rows)), ""]],
    reading=pipeline_reading)

# --- the experiments (experiments/RESULTS.md) --------------------------------------------------------------

ARM_KEY = ("teacher", "notes", "filters", "task")


def arms(rows: list[Row]) -> list[Row]:
    """Base and distilled of each arm and task, as one row (the distilled record, with `base`)."""
    base = {tuple(row.get(key, "none") for key in ARM_KEY): row for row in rows if row["model"] == "base"}
    return [{**row, "base": base[tuple(row.get(key, "none") for key in ARM_KEY)]}
            for row in rows if row["model"] == "distilled"]


def apart(row: Row) -> str:
    base = row["base"]
    return "yes" if row["ci_low"] > base["ci_high"] or row["ci_high"] < base["ci_low"] else "no"


def known_answer_reading(rows: list[Row]) -> str:
    largest = max(row["notes"] for row in rows if row["teacher"] == "reference")
    best = [row for row in rows if row["teacher"] == "reference" and row["notes"] == largest]
    gains = ", ".join(f"{row['task']} "
                      f"{row['balanced_accuracy'] - row['base']['balanced_accuracy']:+.2f}" for row in best)
    every = all(apart(row) == "yes" for row in best)
    others = sorted({row["task"] for row in rows if row not in best and apart(row) == "yes"})
    return (f"Taught from {largest} notes ({best[0]['train_items']:,} items) the student beats its base "
            f"{'on every task with separate intervals' if every else 'with intervals apart on some tasks'} ({gains}); "
            "from fewer notes, and with SmolLM2 as its own teacher, the intervals separate on "
            f"{', '.join(others) or 'no task'} only.")


KNOWN_ANSWER = Table(
    title="Known-answer distillation: SmolLM2-135M-Instruct on simulated patients",
    measures="Balanced accuracy (BA) of the student's base and of the student distilled on its teacher's items "
             "(configs/known-answer.yaml), on held-out simulated patients whose truth is known: 300 annotated "
             "questions on 60 notes (95% intervals over examples), 60 n2c2 patients x 13 criteria and 48 notes x 23 "
             "apixaban criteria (intervals over criteria); a corpus of 1,200 patients, seed 7.",
    source=lambda: arms(known_answer_rows("runs")()),
    columns={"teacher": teacher, "notes": lambda row: str(row["notes"]),
             "train items": lambda row: f"{row['train_items']:,}", "task": lambda row: row["task"],
             "base BA [95% CI]": lambda row: with_interval(row["base"]),
             "distilled BA [95% CI]": with_interval,
             "gain": lambda row: f"{row['balanced_accuracy'] - row['base']['balanced_accuracy']:+.3f}",
             "intervals apart": apart,
             "n2c2 micro-F1": lambda row: (f"{row['base']['n2c2_micro_f1']:.3f} -> {row['n2c2_micro_f1']:.3f}"
                                           if row.get("n2c2_micro_f1") is not None else "")},
    reading=known_answer_reading)


def precision_reading(rows: list[Row]) -> str:
    whole = {(teacher(row), row["notes"]): row["precision"] for row in rows if row["question_type"] == "all"}
    reference = [row["precision"] for row in rows if row["teacher"] == "reference"]
    numeric = next(row for row in rows if teacher(row) == "self" and row["question_type"] == "numeric")
    filtered = [value for (name, _), value in whole.items() if name.endswith("filters")][0]
    kept_numbers = any(row["question_type"] == "numeric" for row in rows if teacher(row).endswith("filters"))
    return (f"The reference teacher is right by construction ({min(reference):.3f} on every type); SmolLM2-135M as "
            f"teacher gets {whole[('self', numeric['notes'])]:.3f} of its checkable items right and "
            f"{numeric['precision']:.3f} of its numbers, and stage B's filters raise that to {filtered:.3f}"
            + (", keeping no numeric item." if not kept_numbers else "."))


PRECISION = Table(
    title="Each teacher against the truth",
    measures="Every item stage B kept, checked against the fact sheets of the known-answer arms above (a filtered "
             "arm's rows count what all of stage B's filters keep): verifiable share, precision (right answers among "
             "the verifiable) and the share of quotes found in the note.",
    source=known_answer_rows("teacher_precision"),
    columns={"teacher": teacher, "notes": lambda row: str(row["notes"]),
             "question type": lambda row: row["question_type"],
             "items": lambda row: f"{int(row['items']):,}", "verifiable": lambda row: number(row["verifiable"], 3),
             "precision": lambda row: number(row["precision"], 3),
             "quote in note": lambda row: number(row["quote_in_note"], 3)},
    reading=precision_reading)


def filters_reading(rows: list[Row]) -> str:
    small = {row["filter"]: row for row in rows if row["teacher"] != "reference"}
    quote, verified = small["require_source_in_note"], small["require_verified"]
    reference = [row["gain"] for row in rows if row["teacher"] == "reference"]
    return (f"Items whose quote is not in the note are right {quote['precision_dropped']:.0%} of the time, the others "
            f"{quote['precision_kept']:.0%}: the quote check is worth applying to a weak teacher; the duplicates "
            f"dropped are right {small['drop_duplicates']['precision_dropped']:.0%} of the time; SmolLM2 as its own "
            f"verifier keeps {verified['kept']} of {verified['items']} items, answering the prompt's example instead "
            "of the note; on the reference teacher the filters change precision by at most "
            f"{max(map(abs, reference)):.3f}.")


FILTERS = Table(
    title="Stage B/C filters against the truth",
    measures="What each filter keeps and drops of one teacher's items on 24 simulated discharge summaries (corpus "
             "seed 11), stage B run with no filter applied and SmolLM2-135M-Instruct re-answering as verifier; "
             "precision: right answers among the items the truth can check.",
    source=filter_rows,
    select=lambda row: row["teacher"] != "reference" or row["dropped"] > 0,
    columns={"teacher": lambda row: Path(row["teacher"]).name, "filter": lambda row: row["filter"],
             "kept": lambda row: str(row["kept"]), "precision kept": lambda row: number(row["precision_kept"], 3),
             "dropped": lambda row: str(row["dropped"]),
             "precision dropped": lambda row: number(row["precision_dropped"], 3),
             "gain": lambda row: "" if row["gain"] is None else f"{row['gain']:+.3f}"},
    reading=filters_reading)

# --- the known-answer grid on the final split (bench/known_answer.json) ---------------------------------------

FINAL = "bench/known_answer.json"


def arm_key(row: Row) -> tuple:
    """The arm a final-split record belongs to: teacher, notes, filters, answers and seed."""
    return row["teacher"], row["notes"], row.get("filters"), row.get("answers"), row.get("seed")


def comparison_key(row: Row) -> tuple:
    """One comparison of one arm on one task (a criterion's where the record has one)."""
    return (*arm_key(row), row.get("comparison"), row.get("task"), row.get("criterion"))


def final_rows(part: str) -> Callable[[], list[Row]]:
    """bench/known_answer.json's records of one kind; `paired` and `per_criterion`: each arm's latest run only."""
    def rows() -> list[Row]:
        records = load(FINAL).get(part, [])
        if part == "over_seeds":
            return records
        latest = {comparison_key(row): row for row in records}
        return [row for row in records if latest[comparison_key(row)] is row]
    return rows


def with_provenance(rows: list[Row]) -> list[Row]:
    """Rows over seeds carry the latest run among their seeds' records."""
    paired = final_rows("paired")()
    provenance = {}
    key = lambda row: (row["teacher"], row["notes"], row.get("filters"), row.get("answers"),  # noqa: E731
                       row["comparison"], row["task"])
    for row in paired:
        provenance[key(row)] = {field: row[field] for field in PROVENANCE}
    return [{**provenance[key(row)], **row} for row in rows]


def arm_name(row: Row) -> str:
    name = teacher(row) + (", answers permuted" if row.get("answers") == "permuted" else "")
    return name + (f" ({row['notes']} notes)" if row.get("notes") else "")


def difference(row: Row) -> str:
    return f"{row['difference']:+.3f} [{row['ci_low']:+.3f}, {row['ci_high']:+.3f}]"


T_INTERVAL_SEEDS = 3  # two seeds give one degree of freedom: +-12.7 half-differences, vast or, where two runs
# happen to agree, spuriously narrow; the record keeps it, the page does not show it


def seed_span(row: Row) -> str:
    """The 95% t interval over seeds; blank under T_INTERVAL_SEEDS seeds."""
    if row.get("seeds_ci_low") is None or row.get("seeds", 0) < T_INTERVAL_SEEDS:
        return ""
    return f"[{row['seeds_ci_low']:+.3f}, {row['seeds_ci_high']:+.3f}]"


def endpoint_reading(rows: list[Row]) -> str:
    primary = [row for row in rows if row["comparison"] == "student - base" and row["teacher"] == "reference"
               and row.get("answers") == "as written" and row.get("filters", "none") == "none"]
    if not primary:
        return "No reference-teacher arm is logged yet."
    largest = max(row["notes"] for row in primary)
    rules = {row["task"]: row["mean_difference"] for row in rows if row["comparison"] == "rules - base"}
    beaten = [row["task"] for row in primary if row["notes"] == largest and rules.get(row["task"], float("-inf"))
              > row["mean_difference"]]
    cells = ", ".join(f"{row['task']} {row['mean_difference']:+.3f} (seeds {row['min_difference']:+.3f} to "
                      f"{row['max_difference']:+.3f}; every interval above zero: "
                      f"{'yes' if row['every_interval_above_zero'] else 'no'}"
                      f"{'; over seeds ' + seed_span(row) if seed_span(row) else ''})"
                      for row in primary if row["notes"] == largest)
    seeds = min(row["seeds"] for row in primary if row["notes"] == largest)
    return (f"Primary endpoint, the reference teacher at {largest} notes, student - base over {seeds} seed"
            f"{'s' if seeds > 1 else ''} (the plan asks for 3): {cells}."
            + (f" The text-only rules used directly gain more than the student on {', '.join(beaten)}." if beaten
               else ""))


ENDPOINT = Table(
    title="Known-answer grid, final split: the primary endpoint over seeds",
    measures="Student minus base (and each baseline minus base, the student minus its format-only twin, and an "
             "erring teacher's student minus the reference teacher's of its size and seed) in "
             "balanced accuracy, per task, on the final split's held-out patients: the mean of the per-seed paired "
             "differences, their range and a 95% t interval over seeds (each seed's run one draw: it holds the "
             "spread between training runs that each seed's patient-level interval leaves out; blank under three "
             "seeds, where one degree of freedom makes it vast or, when two runs agree by chance, too narrow); the "
             "analysis plan is docs/known_answer.md. Figures: "
             "known_answer_precision.png and known_answer_size.png beside this page.",
    source=lambda: with_provenance(final_rows("over_seeds")()),
    columns={"arm": arm_name, "comparison": lambda row: row["comparison"], "task": lambda row: row["task"],
             "seeds": lambda row: str(row["seeds"]), "mean difference": lambda row: f"{row['mean_difference']:+.3f}",
             "range over seeds": lambda row: f"{row['min_difference']:+.3f} to {row['max_difference']:+.3f}",
             "95% t interval over seeds": seed_span,
             "every interval above zero": lambda row: "yes" if row["every_interval_above_zero"] else "no"},
    reading=endpoint_reading)


PER_SEED = Table(
    title="Known-answer grid, final split: each seed's paired difference",
    measures="Per arm, seed and task: the difference in balanced accuracy with its 95% interval from a patient-level "
             "paired bootstrap (both models scored on the same resampled patients), and the patients it rests on.",
    source=final_rows("paired"),
    columns={"arm": arm_name, "seed": lambda row: "" if row.get("seed") is None else str(row["seed"]),
             "comparison": lambda row: row["comparison"], "task": lambda row: row["task"],
             "difference [95% CI]": difference, "patients": lambda row: str(row["patients"]),
             "unparseable": lambda row: f"{row['unparseable_first']:.2f} vs {row['unparseable_second']:.2f}"},
    reading=lambda rows: f"{len(rows)} comparisons; an interval that spans zero is no difference shown.")


def same_seed_rows() -> list[Row]:
    """Every record of a comparison logged more than once for one arm, seed and task (the arm trained again with
    the same seed, data and settings), its runs in the order logged."""
    runs = same_seed_runs([row for row in load(FINAL).get("paired", []) if row.get("seed") is not None])
    return [row for group in runs.values() if len(group) > 1 for row in group]


def same_seed_runs(rows: list[Row]) -> dict[tuple, list[Row]]:
    """The rows of each comparison (arm, seed, task), in the order logged."""
    runs: dict[tuple, list[Row]] = {}
    for row in rows:
        runs.setdefault(comparison_key(row), []).append(row)
    return runs


def same_seed_reading(rows: list[Row]) -> str:
    if not rows:
        return "No arm is trained twice with the same seed yet."
    groups = same_seed_runs(rows)
    apart = [max(row["difference"] for row in group) - min(row["difference"] for row in group)
             for group in groups.values()]
    widths = [row["ci_high"] - row["ci_low"] for row in rows]
    pairs = len({name[:5] for name in groups})
    # the base answers again in each run: where its score moved too, a rerun's spread is not the training's alone
    base_by_task: dict[str, set[float]] = {}
    for row in rows:
        if row.get("comparison") == "student - base" and row.get("second") is not None:
            base_by_task.setdefault(row["task"], set()).add(row["second"])
    base_moves = max((max(scores) - min(scores) for scores in base_by_task.values()), default=None)
    base = "" if base_moves is None else (
        " The base scores the same in each of these runs." if base_moves == 0 else
        f" The base answers again in each run and its score moves by up to {base_moves:.3f} between them: a "
        "rerun's spread holds answering as well as training.")
    return (f"Trained more than once: {pairs} arm-seed pair{'s' * (pairs != 1)}. The runs of one seed "
            f"differ by {min(apart):.3f} to {max(apart):.3f} in their difference, where one run's 95% interval is "
            f"{min(widths):.3f} to {max(widths):.3f} wide.{base} A seed fixes the training items and their order, "
            "not the result: read the spread over seeds as the spread over training runs.")


SAME_SEED = Table(
    title="Known-answer grid, final split: the same seed trained again",
    measures="Arms trained more than once with the same seed, training items and settings: each run's student - "
             "base difference in balanced accuracy with its 95% interval. The tables above read each arm's latest "
             "run.",
    source=same_seed_rows,
    columns={"arm": arm_name, "seed": lambda row: str(row["seed"]), "comparison": lambda row: row["comparison"],
             "task": lambda row: row["task"], "difference [95% CI]": difference},
    reading=same_seed_reading)


def final_teacher_rows() -> list[Row]:
    """Each teacher's items against the truth at the final split's largest size, for the lowest seed that arm ran
    (a teacher's precision is its own, whatever the seed), with the run of that arm; answers as written."""
    data = load(FINAL)
    runs = {arm_key(record): {key: record[key] for key in PROVENANCE} for record in data.get("arm_seconds", [])}
    records = [record for record in data.get("teacher_precision", []) if record.get("answers") == "as written"
               and record.get("filters", "none") == "none" and arm_key(record) in runs]
    if not records:
        return []
    largest = max(record["notes"] for record in records)
    seeds = {}
    for record in records:
        if record["notes"] == largest:
            seeds[record["teacher"]] = min(seeds.get(record["teacher"], record["seed"]), record["seed"])
    latest = {(arm_key(record), record["question_type"]): record for record in records
              if record["notes"] == largest and record["seed"] == seeds[record["teacher"]]}
    return [{**runs[key[0]], **record} for key, record in latest.items()]


def final_teacher_reading(rows: list[Row]) -> str:
    whole = {row["teacher"]: row for row in rows if row["question_type"] == "all"}
    if not whole:
        return "No teacher is checked yet."
    parts = [f"{name} {row['precision']:.3f}" + (f" (of the {row['verifiable']:.3f} of its items the truth can check)"
                                                  if row["verifiable"] < 1 else "") for name, row in whole.items()]
    return "Precision over all question types: " + ", ".join(parts) + "."


FINAL_TEACHERS = Table(
    title="Known-answer grid, final split: each teacher against the truth",
    measures="Every item stage B kept of each teacher at the largest size (one seed's arm), checked against the "
             "fact sheets of the notes it read: the share the truth can check (verifiable), precision (right answers "
             "among those) and the share of quotes found in the note. These are the precision curve's teachers.",
    source=final_teacher_rows,
    columns={"teacher": lambda row: row["teacher"], "notes": lambda row: str(row["notes"]),
             "seed": lambda row: str(row["seed"]), "question type": lambda row: row["question_type"],
             "items": lambda row: f"{int(row['items']):,}", "verifiable": lambda row: number(row["verifiable"], 3),
             "precision": lambda row: number(row["precision"], 3),
             "quote in note": lambda row: number(row["quote_in_note"], 3)},
    reading=final_teacher_reading)


def arm_cost_reading(rows: list[Row]) -> str:
    alone = [row for row in rows if row.get("arms_at_once", 1) == 1 and row["stages"].get("finetune")]
    shared = [row for row in rows if row.get("arms_at_once", 1) > 1 and row["stages"].get("finetune")]
    parts = [f"{len(rows)} arms timed."]
    if alone:
        parts.append(f"Alone on the card an arm trains in {min(row['stages']['finetune'] for row in alone):.0f} s.")
    if shared:
        parts.append(f"Beside other arms one trains in up to {max(row['stages']['finetune'] for row in shared):.0f} "
                     "s (the card's time is shared: read those seconds as the run's, not one arm's cost).")
    return " ".join(parts)


ARM_COST = Table(
    title="Known-answer grid, final split: what an arm costs",
    measures="Per arm: the driver's seconds for training (stage D's finetune) and for answering (eval-inference "
             "over the three tasks: the base and the student for a run's first arm, the student alone for the "
             "others, which reuse the base's answers), summed over resumed runs; the engine starts of its answers "
             "(one per model answered in the run that finished them; blank where not recorded); how many arms "
             "could share the card while it ran (`--parallel`).",
    source=final_rows("arm_seconds"),
    columns={"arm": arm_name, "seed": lambda row: "" if row.get("seed") is None else str(row["seed"]),
             "arms at once": lambda row: str(row.get("arms_at_once", 1)),
             "training s": lambda row: number(row["stages"].get("finetune"), 0),
             "answering s": lambda row: number(row["stages"].get("eval_inference"), 0),
             "engine starts": lambda row: "" if row.get("engine_starts") is None else str(row["engine_starts"]),
             "whole arm s": lambda row: number(row["seconds"], 0)},
    reading=arm_cost_reading)


PAGES = {
    "bench/RESULTS.md": (
        "Measured figures: speed",
        "Random-weight models of real Llama shapes (`bench/shapes.py`: speed depends on shapes, not weight values) "
        "with the embedded model's tokenizer padded to Llama 3's 128,256 entries, unless a table says otherwise. "
        "Commands run from the repository root after `pip install -r requirements.txt && pip install -e .` on a GPU "
        "node (`make setup` on a CPU). The page closes with the known-answer grid on the final split "
        "(bench/known_answer.json, the analysis plan of [docs/known_answer.md](../docs/known_answer.md)); the "
        "development experiments, on simulated patients, are in [experiments/RESULTS.md](../experiments/RESULTS.md).",
        [GENERATION, DECODE_LOOP, GPU_CHECKS, VLLM_THROUGHPUT, SEVERAL_GPUS, VLLM_START, ONE_GPU, SHAPES, PROFILE,
         TWO_GPUS, LAUNCH, PIPELINE]
        + ([ENDPOINT, PER_SEED, SAME_SEED, FINAL_TEACHERS, ARM_COST] if (REPO / FINAL).exists() else [])),
    "experiments/RESULTS.md": (
        "Measured figures: experiments",
        "Does distillation make a better extractor, and what are the filters worth, on simulated patients whose "
        "truth is known ([docs/known_answer.md](../docs/known_answer.md)). These are development figures of the "
        "dev corpus, superseded by the final split's grid at the end of [bench/RESULTS.md](../bench/RESULTS.md): "
        "their reference teacher writes from the answer key and their held-out notes come from the training "
        "notes' generator. Commands run from the repository root; answers on vLLM where the card is a GPU.",
        [KNOWN_ANSWER, PRECISION, FILTERS]),
}


# --- writing ------------------------------------------------------------------------------------------------

def run_line(index: int, row: Row) -> str:
    """A run as the pages name it: date, card and command (the code measured is in the JSON record)."""
    return f"{index}. {row['date']} · {row['card']} · `{row['command']}`"


def render(table: Table) -> list[str]:
    """A table's section: what it measures, the table (a run column where its rows come from several runs), the runs
    (date, card, code, command) and the reading."""
    rows = shown(table)
    missing = [(key, row) for row in rows for key in PROVENANCE if not row.get(key)]
    if missing:
        raise ValueError(f"{table.title}: a row without {missing[0][0]}: {missing[0][1]}")
    runs: dict[tuple, int] = {}
    for row in rows:
        runs.setdefault(tuple(row[key] for key in PROVENANCE), len(runs) + 1)
    columns = list(table.columns) + (["run"] if len(runs) > 1 else [])
    lines = [f"## {table.title}", "", table.measures, "", "| " + " | ".join(columns) + " |",
             "|" + "---|" * len(columns)]
    for row in rows:
        cells = [cell(row) for cell in table.columns.values()]
        if len(runs) > 1:
            cells.append(str(runs[tuple(row[key] for key in PROVENANCE)]))
        lines.append("| " + " | ".join(cells) + " |")
    for cells in table.extra(rows):
        lines.append("| " + " | ".join(cells + [""] * (len(columns) - len(cells))) + " |")
    firsts = {}
    for row in rows:
        firsts.setdefault(runs[tuple(row[key] for key in PROVENANCE)], row)
    lines += [""] + [run_line(index, row) for index, row in sorted(firsts.items())]
    return lines + ["", table.reading(rows), ""]



def page(path: str) -> str:
    title, introduction, tables = PAGES[path]
    lines = [f"# {title}", "", introduction + " Written by `python bench/results.py` from the JSON records beside this "
             "page; each row names its run: date, card and command (the JSON records also name the code measured).", ""]
    for table in tables:
        lines += render(table)
    return "\n".join(lines).rstrip("\n") + "\n"


def main(check: bool = False) -> None:
    """Write bench/RESULTS.md and experiments/RESULTS.md from their records; with --check True, only compare."""
    stale = []
    for path in PAGES:
        text = page(path)
        target = REPO / path
        if check:
            if not target.exists() or target.read_text() != text:
                stale.append(path)
        else:
            target.write_text(text)
            print(f"{path}: {len(text.splitlines())} lines")
    if stale:
        print(f"{', '.join(stale)} differ from what their records give; run python bench/results.py")
        raise SystemExit(1)


if __name__ == "__main__":
    run(main)
