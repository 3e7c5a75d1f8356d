"""finetune.py throughput: the paper's configuration against faster ones, same data, same card.

    python bench/finetune_speed.py --shape llama-3.2-1b,llama-3.1-8b --tokenizer models/smollm2-tokenizer \\
        --train_examples 400 --test_examples 32 --configs paper,fast_4bit,fast_bf16 --output /tmp/speed.json

Builds a random-weight model of a real Llama shape (or takes --model), writes training examples
whose lengths spread log-uniformly over 500-4,000 tokens (sample notes cut to length, questions and
answers from the bundled annotated samples), then runs finetune.py once per configuration in its
own process (so peak memory is its own) and prints a table: tokens/s, peak memory, eval loss
before and after, and MFU, estimated as 4 x parameters x tokens/s over the card's dense bf16 peak
(989 TFLOP/s for an H100 SXM; LoRA training with a frozen base costs about 4 FLOPs per parameter and
token: forward 2, backward to the activations 2; recomputation under gradient checkpointing is not
counted as useful work).
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
from clinical_distil.provenance import provenance
from shapes import build_random_model

from clinical_distil import layout
from clinical_distil.cli import run
from clinical_distil.files import InputError
from clinical_distil.layout import REPO_ROOT as REPO
from clinical_distil.prompts import ANSWER_KEYS, answer_messages, answer_target

# name -> finetune.py flags. "paper" is the published setup (batch 1 x accumulation 2, 4-bit base, gradient
# checkpointing, paged 8-bit AdamW). The "fast" preset computes the same update (two examples per optimizer
# step, the same learning rate and LoRA; AdamW with full-precision moments) in one pass: see
# speedups.training_plan.
CONFIGS = {
    "paper": ["--preset", "paper", "--load_in_4bit", "True", "--max_seq_length", "4096"],
    "fast_4bit": ["--preset", "fast", "--load_in_4bit", "True", "--max_seq_length", "4096"],
    "fast_bf16": ["--preset", "fast", "--load_in_4bit", "False", "--max_seq_length", "4096"],
    # the paper's configuration again with another seed (example order, LoRA init, dropout): run-to-run spread
    "paper_seed_43": ["--preset", "paper", "--load_in_4bit", "True", "--max_seq_length", "4096", "--seed", "43"],
    # the paper's configuration with Liger's fused kernels: the same update in fewer kernel launches
    "paper_fused": ["--preset", "paper", "--load_in_4bit", "True", "--max_seq_length", "4096",
                    "--fused_kernels", "True"],
    # each decoder layer compiled (torch.compile, dynamic lengths): the same update in fewer, fused launches
    "paper_compiled": ["--preset", "paper", "--load_in_4bit", "True", "--max_seq_length", "4096",
                       "--compile_layers", "True"],
    "fast_bf16_compiled": ["--preset", "fast", "--load_in_4bit", "False", "--max_seq_length", "4096",
                           "--compile_layers", "True"],
    "fast_4bit_compiled": ["--preset", "fast", "--load_in_4bit", "True", "--max_seq_length", "4096",
                           "--compile_layers", "True"],
    # packing fills 4,096-token rows (about 2.3 examples each): fewer optimizer steps for the same data
    "packed_bf16": ["--load_in_4bit", "False", "--gradient_checkpointing", "False", "--packing", "True",
                    "--per_device_train_batch_size", "1", "--gradient_accumulation_steps", "1",
                    "--max_seq_length", "4096"],
}
# how several processes are launched: accelerate with DeepSpeed ZeRO-2 (the published setup) or plain DDP
LAUNCHERS = layout.DATA_PARALLEL_CONFIGS


def make_examples(tokenizer, count: int, seed: int, min_tokens: int = 500, max_tokens: int = 4000) -> pd.DataFrame:
    """Stage C-format examples whose total length spreads log-uniformly over [min_tokens, max_tokens] (all of one
    length when the two are equal)."""
    from clinical_distil.preprocess import ANNOTATED_TYPES
    from clinical_distil.prep_training import DATASET_COLUMNS

    annotated = pd.concat([pd.read_csv(path, keep_default_na=False) for path in
                           sorted((REPO / "data/samples/annotated-synthetic").glob("*.csv"))], ignore_index=True)
    notes = pd.read_csv(REPO / "data/samples/mimic-iii/NOTEEVENTS.csv.gz")["TEXT"].tolist()
    pool = tokenizer.encode("\n\n".join(notes), add_special_tokens=False)
    rng = np.random.default_rng(seed)
    rows = []
    for index in range(count):
        item = annotated.iloc[index % len(annotated)].to_dict()
        question_type = ANNOTATED_TYPES[item["type"]]
        item["type"] = "numeric" if "numeric" in question_type else "boolean"
        item.setdefault("source", "NA")
        item.setdefault("explanation", "Stated in the note.")
        output = answer_target(item, ANSWER_KEYS)
        overhead = len(tokenizer.apply_chat_template(answer_messages("", item["question"]), tokenize=False)) // 4
        target = math.exp(rng.uniform(math.log(min_tokens), math.log(max_tokens)))
        note_tokens = max(50, int(target) - overhead - len(tokenizer.encode(output)) - 60)
        start = int(rng.integers(0, max(1, len(pool) - note_tokens)))
        note = tokenizer.decode(pool[start:start + note_tokens])
        rows.append({"id": f"bench-{index}", "prompt": answer_messages(note, item["question"]), "output": output,
                     "question_type": question_type,
                     "subject_id": index, "note_id": str(index)})
    return pd.DataFrame(rows)[DATASET_COLUMNS]


def parameter_count(model_dir: Path) -> int:
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    return sum(parameter.numel() for parameter in model.parameters())


def main(shape: str = "llama-3.2-1b,llama-3.1-8b", model: str | None = None,
         tokenizer: str = "models/smollm2-tokenizer",
         train_examples: int = 400, test_examples: int = 32, configs: str | tuple = "paper,fast_4bit,fast_bf16",
         work_dir: str = "/tmp/finetune-bench", data_dir: str | None = None, peak_tflops: float = 989.0, seed: int = 0,
         extra: str = "", output: str = "", shortest_example: int = 500, longest_example: int = 4000,
         processes: str | int = "1", launchers: str | tuple = "deepspeed") -> None:
    """Run finetune.py under each configuration on the same examples and print the comparison.

    Args:
        shape: Llama shape(s) of the random-weight model, comma-separated (ignored when --model is given).
        model: an existing model folder instead of a random one.
        tokenizer: tokenizer folder for the random model.
        train_examples: training examples (one epoch).
        test_examples: held-out examples for eval loss.
        configs: comma-separated names from CONFIGS.
        work_dir: where models, data and runs go.
        data_dir: where the examples are (made there when missing; default work_dir/data).
        peak_tflops: the card's dense bf16 peak for the MFU estimate (H100 SXM: 989).
        seed: data seed.
        extra: more finetune.py flags for every configuration, space-separated; give it as one word with `=`
            (`--extra=--train_sampling_strategy=batch_rebalance`) so that it is not read as a flag of this script.
        output: a JSON file for the run: its date, card, command and code, and the rows of every shape.
        shortest_example: the examples' lengths spread log-uniformly from this many tokens ...
        longest_example: ... to this many (equal: every example of that length).
        processes: GPU process counts to run each configuration with, comma-separated (1: python finetune.py;
            more: accelerate launch); the table gives each count's share of linear.
        launchers: how runs of several processes are launched, comma-separated: deepspeed (accelerate with
            configs/deep_speed2.yaml, ZeRO-2) and/or ddp (configs/multi_gpu.yaml); each is run at every count above 1.
    """
    work = Path(work_dir)
    names = configs.split(",") if isinstance(configs, str) else list(configs)
    unknown = [name for name in names if name not in CONFIGS]
    if unknown:
        raise InputError(f"--configs: unknown configuration(s) {unknown}; choose from {', '.join(CONFIGS)}")
    # fire reads "1,2" as a tuple, "2" as an int
    parts = processes if isinstance(processes, (tuple, list)) else str(processes).split(",")
    counts = tuple(int(part) for part in parts if str(part).strip().isdigit())
    if len(counts) != len(parts) or not counts or min(counts) < 1:
        raise InputError(f"--processes takes GPU counts of at least 1, comma-separated; got {processes}")
    check_lengths(shortest_example, longest_example)
    ways = launchers.split(",") if isinstance(launchers, str) else list(launchers)
    strange = [way for way in ways if way not in LAUNCHERS]
    if strange or not ways:
        raise InputError(f"--launchers: unknown launcher(s) {strange}; choose from {', '.join(LAUNCHERS)}")
    shapes = [model] if model else [part.strip() for part in str(shape).split(",")]
    rows = []
    for each in shapes:
        rows += measure_shape(each, bool(model), names, work / Path(each).name, tokenizer, train_examples,
                              test_examples, data_dir, peak_tflops, seed, extra,
                              (shortest_example, longest_example), counts, tuple(ways))
    if output:  # one run record: append it to bench/finetune_speed.json's runs for bench/RESULTS.md
        Path(output).write_text(json.dumps({**provenance("bench/finetune_speed.py"), "rows": rows}, indent=1) + "\n")


def check_lengths(shortest_example: int, longest_example: int) -> None:
    """Refuse an empty range of example lengths before any work."""
    if not 0 < shortest_example <= longest_example:
        raise InputError(f"--shortest_example {shortest_example} and --longest_example {longest_example}: give "
                         "0 < shortest <= longest")


def model_and_data(shape: str, is_folder: bool, work: Path, tokenizer: str, train_examples: int, test_examples: int,
                   data_dir: str | None, seed: int, lengths: tuple[int, int] = (500, 4000)) -> tuple[Path, Path]:
    """The model folder (a random-weight model of `shape`, built once) and the data root with its examples (one
    folder per count, length range and seed)."""
    from transformers import AutoTokenizer

    if is_folder:
        model_dir = Path(shape)
    else:
        import torch

        device = "cuda" if torch.cuda.is_available() else "cpu"
        model_dir = build_random_model(shape, work / f"random-{shape}", tokenizer_dir=REPO / tokenizer, device=device)
    name = f"data-{train_examples}-{test_examples}-{lengths[0]}-{lengths[1]}-{seed}"
    data = Path(data_dir) if data_dir else work / name
    raw, training = layout.raw_dir(data), layout.training_name("all", 1, "bench")
    if not layout.training_dataset(raw, "train", training).exists():
        from clinical_distil.prep_training import write_datasets

        examples = make_examples(AutoTokenizer.from_pretrained(model_dir), train_examples + test_examples, seed,
                                 min_tokens=lengths[0], max_tokens=lengths[1])
        write_datasets(examples.iloc[:train_examples], examples.iloc[train_examples:], raw, training, overwrite=True)
    return model_dir, data


def finetune_command(model_dir: Path, data: Path, output_dir: Path, flags: list[str], processes: int = 1,
                     launcher: str | None = None) -> list[str]:
    """finetune.py on the bench examples; with several processes under accelerate (a LAUNCHERS name; default
    DeepSpeed ZeRO-2)."""
    launch = [sys.executable, str(REPO / "finetune.py")]
    if processes > 1:
        launch = [sys.executable, "-m", "accelerate.commands.launch", "--config_file",
                  str(LAUNCHERS[launcher or "deepspeed"]), "--num_processes", str(processes),
                  str(REPO / "finetune.py")]
    return [*launch, "--model_id", str(model_dir), "--input_file", "all", "--variant", "bench", "--min_difficulty", "1",
            "--data_dir", str(data), "--output_dir", str(output_dir), "--overwrite", "--save_steps", "100000",
            "--logging_steps", "10", *flags]


def measure_shape(shape: str, is_folder: bool, names: list[str], work: Path, tokenizer: str, train_examples: int,
                  test_examples: int, data_dir: str | None, peak_tflops: float, seed: int, extra: str,
                  lengths: tuple[int, int] = (500, 4000), processes: tuple[int, ...] = (1,),
                  launchers: tuple[str, ...] = ("deepspeed",)) -> list[dict]:
    """finetune.py under each configuration (and process count) on one model's examples; prints the table and
    returns its rows."""
    model_dir, data = model_and_data(shape, is_folder, work, tokenizer, train_examples, test_examples, data_dir, seed,
                                     lengths)
    parameters = parameter_count(model_dir)
    results = []
    # one process runs once; more run once per launcher
    runs = [(count, launcher) for count in processes for launcher in ((None,) if count == 1 else launchers)]
    for name in names:
        for count, launcher in runs:
            output_dir = work / "runs" / (name if count == 1 else f"{name}-{count}gpu-{launcher}")
            command = finetune_command(model_dir, data, output_dir, [*CONFIGS[name], *extra.split()], count,
                                       launcher)
            print("$", " ".join(command), flush=True)
            env = dict(os.environ)
            if count == 1:  # one process sees one GPU (TRL refuses to train on several GPUs from one process)
                env["CUDA_VISIBLE_DEVICES"] = os.environ.get("CUDA_VISIBLE_DEVICES", "0").split(",")[0]
            finished = subprocess.run(command, capture_output=True, text=True, env=env)
            if finished.returncode != 0:
                print(finished.stderr[-3000:])
                results.append({"shape": shape, "config": name, "processes": count, "launcher": launcher,
                                "error": failure_line(finished.stderr)})
                continue
            summary = json.loads(layout.training_summary(output_dir).read_text())
            tokens_per_second = summary["tokens_per_second"]
            plan = summary.get("plan") or {}
            results.append({
                "shape": shape, "config": name, "processes": count, "launcher": launcher,
                "steps": summary["global_step"],
                "trained_tokens": summary["trained_tokens"],
                "seconds": summary["seconds"], "tokens_per_second": tokens_per_second,
                "steady_tokens_per_second": summary.get("steady_tokens_per_second"),
                "peak_memory_gib": summary["peak_memory_gib"],
                "eval_loss_before": round(summary["eval_loss_before"], 4), "eval_loss": round(summary["eval_loss"], 4),
                "mfu_percent": round(100 * 4 * parameters * tokens_per_second / (count * peak_tflops * 1e12), 1),
                "liger": plan.get("liger_kernels"), "attention": plan.get("attention") or "sdpa",
                "padding_free": plan.get("padding_free"), "compiled_layers": plan.get("compiled_layers", False),
            })
            print(json.dumps(results[-1]), flush=True)
    table = pd.DataFrame(results)
    if "tokens_per_second" in table:
        one_gpu = table[table["processes"].eq(1)].set_index("config")
        single = one_gpu["tokens_per_second"]
        if "paper" in single and pd.notna(single["paper"]):
            table["speedup"] = (table["tokens_per_second"] / single["paper"]).round(2)
            paper_loss = one_gpu["eval_loss"]["paper"]
            table["eval_loss_vs_paper_percent"] = (100 * (table["eval_loss"] / paper_loss - 1)).round(1)
        # share of linear scaling: N processes against N times the same configuration on one
        for column, rate in (("of_linear_percent", "tokens_per_second"),
                             ("steady_of_linear_percent", "steady_tokens_per_second")):
            alone = one_gpu[rate]
            table[column] = [
                round(100 * getattr(row, rate) / (row.processes * alone[row.config]), 1)
                if row.processes > 1 and pd.notna(getattr(row, rate)) and pd.notna(alone.get(row.config)) else None
                for row in table.itertuples()]
    print(f"\nmodel {model_dir} ({parameters / 1e9:.2f}B parameters), {train_examples} training examples")
    columns = list(table.columns)
    print("| " + " | ".join(columns) + " |\n|" + "---|" * len(columns))
    for row in table.itertuples(index=False):
        print("| " + " | ".join("" if pd.isna(value) else str(value) for value in row) + " |")
    # missing values as null, not NaN (which JSON does not have)
    return table.astype(object).where(table.notna(), None).to_dict("records")


def failure_line(stderr: str) -> str:
    """The line that says why a run failed: the exception line ending the last traceback, else the last line
    that is not a progress bar."""
    lines = stderr.splitlines()
    starts = [index for index, line in enumerate(lines) if line.startswith("Traceback (most recent call last)")]
    if starts:  # the frames are indented; the exception is the first line after them that is not
        after = [line for line in lines[starts[-1] + 1:] if line.strip() and not line[:1].isspace()]
        if after:
            return after[0].strip()
    plain = [line.strip() for line in lines if line.strip() and "it/s]" not in line and "s/it]" not in line]
    return (plain or ["no output"])[-1]

if __name__ == "__main__":
    run(main)
