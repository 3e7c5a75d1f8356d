"""Where a finetune.py step goes: the trainer against a plain training loop, same model, examples and update.

    python bench/finetune_profile.py --shape llama-3.1-8b --preset paper --steps 20 --output /tmp/profile.json

Runs clinical_distil.finetune.train (what finetune.py runs) for `warmup + steps + python_steps + sync_steps + 1
+ profiled` optimizer steps, timing the `steps` after the warm-up (GPU synchronised at each step's end), recording
the next `python_steps` with cProfile (which Python functions the CPU spends its own time in), counting in the
next `sync_steps` each wait of the CPU for the GPU by the code that asked for it, and recording the last
`profiled` ones with torch.profiler; with compiled layers it also counts TorchDynamo's graphs and graph
breaks (with their reasons); then a plain loop of the same update (transformers + PEFT, no trainer:
the same 4-bit or bf16 base, LoRA, checkpointing, optimizer, examples in the same order, batch and
accumulation of the preset's plan) for as many steps. Prints tokens/s of both, the share of wall time the
GPU was busy in the profiled steps, and the operators that took the most GPU and CPU time. Examples and
the random-weight model are bench/finetune_speed.py's (same work folder, built once).

--output writes the whole profile (operators, Python functions, CPU waits), to read or compare; keep it out of
git. --record bench/finetune_profile.json appends the run's cited fields (`cited`: the figures bench/RESULTS.md
shows) to the committed records.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from pathlib import Path
from typing import Any, Callable

from finetune_speed import check_lengths, model_and_data
from clinical_distil.provenance import append_run, provenance, runs_of

from clinical_distil import layout
from clinical_distil.cli import run
from clinical_distil.files import InputError


def timer_callback(trainer, marks: list[tuple[int, float, int]]):
    """A TrainerCallback that records (step, time, tokens so far) at every optimizer step's end, GPU synchronised."""
    import torch
    from transformers import TrainerCallback

    class StepTimer(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            marks.append((state.global_step, time.perf_counter(), int(trainer._total_train_tokens)))

    return StepTimer()


def profiler_callback(profiler):
    from transformers import TrainerCallback

    class ProfileSteps(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            profiler.start()

        def on_step_end(self, args, state, control, **kwargs):
            profiler.step()

        def on_train_end(self, args, state, control, **kwargs):
            profiler.stop()

    return ProfileSteps()


def window_callback(first: int, last: int, start: Callable[[], Any], stop: Callable[[], Any]):
    """A TrainerCallback that calls `start` at the end of optimizer step `first` and `stop` at the end of `last`."""
    from transformers import TrainerCallback

    class StepWindow(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            if state.global_step == first:
                start()
            elif state.global_step == last:
                stop()

    return StepWindow()


def sync_probe(stacks: Counter, frames: int = 6) -> tuple[Callable[[], None], Callable[[], None]]:
    """Start and stop of a count of every operation that makes the CPU wait for the GPU (torch.cuda's sync debug
    mode), by the Python frames that asked for it (the innermost `frames`)."""
    import traceback
    import warnings

    import torch

    guard = warnings.catch_warnings()

    def record(message, category, filename, lineno, file=None, line=None):
        if "synchronizing CUDA operation" in str(message):
            stack = [frame for frame in traceback.extract_stack()[:-1] if not frame.filename.endswith("warnings.py")]
            stacks[" <- ".join(f"{Path(frame.filename).name}:{frame.lineno} {frame.name}"
                               for frame in reversed(stack[-frames:]))] += 1

    def start() -> None:
        guard.__enter__()
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")

    def stop() -> None:
        torch.cuda.set_sync_debug_mode("default")
        guard.__exit__(None, None, None)

    return start, stop


def top_functions(profile, steps: int, count: int = 25, key: str = "own_ms_per_step") -> list[dict]:
    """The Python functions (and C calls seen from Python) with the most own (or cumulative) time per optimizer
    step."""
    import pstats

    stats = pstats.Stats(profile).stats  # (file, line, name) -> (primitive calls, calls, own s, cumulative s, callers)
    rows = [{"function": f"{Path(file).name}:{line} {name}" if line else name, "calls_per_step": round(calls / steps),
             "own_ms_per_step": round(1e3 * own / steps, 2), "cumulative_ms_per_step": round(1e3 * total / steps, 2)}
            for (file, line, name), (_, calls, own, total, _) in stats.items()]
    return sorted(rows, key=lambda row: -row[key])[:count]


def dynamo_graphs() -> dict:
    """TorchDynamo's counts in this process: graphs compiled, and each graph break's reason with how often."""
    from torch._dynamo.utils import counters

    return {"unique_graphs": int(counters["stats"].get("unique_graphs", 0)),
            "graph_breaks": dict(counters["graph_break"].most_common(20))}


def rate(marks: list[tuple[int, float, int]], first: int, last: int) -> dict:
    """Tokens/s and seconds per step between the ends of optimizer steps `first` and `last`."""
    by_step = {step: (moment, tokens) for step, moment, tokens in marks}
    (start, tokens_start), (end, tokens_end) = by_step[first], by_step[last]
    return {"steps": last - first, "seconds_per_step": round((end - start) / (last - first), 4),
            "tokens_per_second": round((tokens_end - tokens_start) / (end - start), 1)}


def top_operators(profiler, count: int = 20) -> dict:
    """The operators with the most GPU time and the most CPU time in the profiled steps."""
    from torch.autograd import DeviceType

    averages = profiler.key_averages()
    # an operator's self GPU time is that of the kernels it launched itself, so each kernel counts once
    kernel_ms = sum(event.self_device_time_total for event in averages if event.device_type == DeviceType.CPU) / 1e3
    rows = [{"name": event.key, "calls": event.count, "gpu_ms": round(event.self_device_time_total / 1e3, 2),
             "cpu_ms": round(event.self_cpu_time_total / 1e3, 2)} for event in averages
            if event.device_type == DeviceType.CPU]
    return {"gpu_ms_total": round(kernel_ms, 1),
            "by_gpu": sorted(rows, key=lambda row: -row["gpu_ms"])[:count],
            "by_cpu": sorted(rows, key=lambda row: -row["cpu_ms"])[:count]}


def plain_loop(settings, model_dir: Path, rows: list[dict], plan, steps: int, warmup: int) -> dict:
    """The preset's update without a trainer: tokens/s over `steps` optimizer steps after `warmup`."""
    import torch
    from peft import get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from clinical_distil.chat import render_ids
    from clinical_distil.finetune import lora_config, prepare_tokenizer, quantization_config, to_conversations

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    prepare_tokenizer(tokenizer)
    conversations, _ = to_conversations(rows, tokenizer, settings.max_seq_length)
    examples = []
    for conversation in conversations:
        prompt_length = len(render_ids(tokenizer, conversation["prompt"]))
        full = tokenizer.apply_chat_template(conversation["prompt"] + conversation["completion"], tokenize=True)
        ids = list(full["input_ids"] if hasattr(full, "keys") else full)
        examples.append((torch.tensor([ids]), torch.tensor([[-100] * prompt_length + ids[prompt_length:]])))
    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    kwargs = {"dtype": torch.bfloat16 if cuda else torch.float32, "device_map": {"": 0 if cuda else "cpu"}}
    if settings.load_in_4bit and cuda:
        kwargs["quantization_config"] = quantization_config(torch.bfloat16)
    model = AutoModelForCausalLM.from_pretrained(model_dir, **kwargs)
    model.config.use_cache = False
    if plan.gradient_checkpointing:
        model.gradient_checkpointing_enable({"use_reentrant": False})
        model.enable_input_require_grads()
    model = get_peft_model(model, lora_config(settings))
    trainable = [parameter for parameter in model.parameters() if parameter.requires_grad]
    if settings.load_in_4bit and cuda:  # TRL keeps a QLoRA adapter in bf16
        for parameter in trainable:
            parameter.data = parameter.data.to(torch.bfloat16)
    if plan.optimizer == "paged_adamw_8bit" and cuda:
        import bitsandbytes

        optimizer = bitsandbytes.optim.PagedAdamW8bit(trainable, lr=settings.learning_rate)
    else:
        optimizer = torch.optim.AdamW(trainable, lr=settings.learning_rate, fused=cuda)
    model.train()
    per_step = plan.per_device_train_batch_size * plan.gradient_accumulation_steps
    position, tokens, started = 0, 0, None
    for step in range(warmup + steps):
        if step == warmup:
            if cuda:
                torch.cuda.synchronize()
            started, tokens = time.perf_counter(), 0
        for _ in range(plan.gradient_accumulation_steps):
            batch = [examples[(position + index) % len(examples)] for index in range(plan.per_device_train_batch_size)]
            position += len(batch)
            for ids, labels in batch:  # one example per forward (padding-free batching left to the trainer)
                with torch.autocast(device, dtype=torch.bfloat16, enabled=cuda):
                    loss = model(input_ids=ids.to(device), labels=labels.to(device)).loss
                (loss / per_step).backward()
                tokens += ids.shape[1]
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - started
    return {"steps": steps, "seconds_per_step": round(seconds / steps, 4),
            "tokens_per_second": round(tokens / seconds, 1),
            "peak_memory_gib": round(torch.cuda.max_memory_allocated() / 2**30, 2) if cuda else None}


# the fields of a profile that bench/RESULTS.md cites: what ran, the trainer's and the plain loop's pace, the GPU's
# share of the profiled steps and the CPU's waits for it
CITED = {"shape": None, "preset": None, "load_in_4bit": None, "compile_layers": None, "example_tokens": None,
         "trainer": ("steps", "seconds_per_step", "tokens_per_second"),
         "profile": ("steps", "wall_ms", "gpu_busy_percent", "gpu_ms_total"),
         "plain": ("steps", "seconds_per_step", "tokens_per_second"), "syncs": ("steps", "per_step")}


def cited(record: dict) -> dict:
    """A profile reduced to its run's date, card, command and code and the CITED fields (those it has)."""
    reduced = {key: record[key] for key in ("date", "card", "command", "code") if key in record}
    for key, parts in CITED.items():
        if key in record:
            reduced[key] = record[key] if parts is None else {part: record[key][part] for part in parts}
    return reduced


def main(shape: str = "llama-3.1-8b", preset: str = "paper", load_in_4bit: bool = True, steps: int = 20,
         warmup: int = 3, profiled: int = 3, tokenizer: str = "models/smollm2-tokenizer", train_examples: int = 400,
         test_examples: int = 32, work_dir: str = "/tmp/finetune-bench", output: str = "",
         plain: bool = True, seed: int = 0, fused_kernels: bool | None = None, shortest_example: int = 500,
         longest_example: int = 4000, compile_layers: bool = False, python_steps: int = 0, optim: str = "",
         sync_steps: int = 0, record: str = "") -> None:
    """Time finetune's trainer and a plain loop on the same update, and profile the trainer's steps.

    Args:
        shape: Llama shape of the random-weight model (bench/shapes.py), or a model folder.
        preset: finetune.py's --preset.
        load_in_4bit: NF4 base weights.
        steps: timed optimizer steps (after the warm-up).
        warmup: optimizer steps before the timing.
        profiled: optimizer steps recorded by torch.profiler after the timed ones.
        tokenizer: tokenizer folder for the random model.
        train_examples: examples written for the work folder (the same as bench/finetune_speed.py's).
        test_examples: held-out examples written with them.
        work_dir: bench/finetune_speed.py's work folder.
        output: a JSON file for the whole profile, with the run's date, card, command and code (keep it out of git).
        plain: also run the plain loop.
        seed: data seed.
        fused_kernels: finetune.py's --fused_kernels (default: the preset's).
        shortest_example: bench/finetune_speed.py's example lengths: from this many tokens ...
        longest_example: ... to this many.
        compile_layers: finetune.py's --compile_layers (the plain loop stays eager: give --plain False).
        python_steps: optimizer steps recorded by cProfile after the timed ones (0: none).
        optim: finetune.py's --optim (default: its own).
        sync_steps: optimizer steps after the cProfile ones in which every wait of the CPU for the GPU is
            counted by where it was asked for (torch.cuda's sync debug mode; 0: none; needs CUDA).
        record: a file of runs (bench/finetune_profile.json) to append the run's cited fields to.
    """
    import cProfile

    import torch
    from datasets import load_from_disk

    from clinical_distil import finetune, speedups
    from clinical_distil.stages import FinetuneSettings

    check_lengths(shortest_example, longest_example)
    if record:  # a file that is not one of runs is refused now, not after the profile
        runs_of(layout.resolve(record))
    if python_steps < 0:
        raise InputError(f"--python_steps must be 0 (no cProfile) or more, got {python_steps}")
    if sync_steps < 0 or (sync_steps and not torch.cuda.is_available()):
        raise InputError(f"--sync_steps {sync_steps}: give 0, or a number of steps on a machine with CUDA")
    python_end = warmup + steps + python_steps
    sync_end = python_end + sync_steps
    total = sync_end + 1 + profiled  # one step between: the profiler's own warm-up
    # finetune.py's flags, refused in one line (a bad --optim, say) before the model and examples are made
    flags = {"preset": preset, "load_in_4bit": load_in_4bit, "max_seq_length": 4096, "fused_kernels": fused_kernels,
             "compile_layers": compile_layers, **({"optim": optim} if optim else {}), "max_steps": total,
             "save_steps": 100000, "logging_steps": 10, "train_sampling_strategy": "sequential"}
    FinetuneSettings.from_values(flags)
    work = Path(work_dir) / Path(shape).name
    model_dir, data = model_and_data(shape, Path(shape).is_dir(), work, tokenizer, train_examples, test_examples, None,
                                     seed, (shortest_example, longest_example))
    raw, training = layout.raw_dir(data), layout.training_name("all", 1, "bench")
    train_path, test_path = (layout.training_dataset(raw, split, training) for split in ("train", "test"))
    settings = FinetuneSettings.from_values({"model_id": str(model_dir), **flags})
    marks: list[tuple[int, float, int]] = []
    profiler = torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU]
        + ([torch.profiler.ProfilerActivity.CUDA] if torch.cuda.is_available() else []),
        schedule=torch.profiler.schedule(wait=sync_end, warmup=1, active=profiled, repeat=1))
    python_profile = cProfile.Profile()
    run_dir = work / "runs" / f"profile-{preset}{'-compiled' if compile_layers else ''}"
    callbacks = [lambda trainer: timer_callback(trainer, marks), lambda trainer: profiler_callback(profiler)]
    if python_steps:
        callbacks.append(lambda trainer: window_callback(warmup + steps, python_end, python_profile.enable,
                                                         python_profile.disable))
    syncs: Counter = Counter()
    if sync_steps:
        callbacks.append(lambda trainer: window_callback(python_end, sync_end, *sync_probe(syncs)))
    summary = finetune.train(settings, str(model_dir), train_path, test_path, run_dir, callbacks=callbacks)
    plan = speedups.TrainingPlan(**summary["plan"])
    result = {"shape": shape, "preset": preset, "load_in_4bit": load_in_4bit, "compile_layers": compile_layers,
              "example_tokens": [shortest_example, longest_example], "plan": summary["plan"],
              "trainer": rate(marks, warmup, warmup + steps)}
    if python_steps:
        result["python"] = {"steps": python_steps, "by_own_time": top_functions(python_profile, python_steps),
                            "by_cumulative_time": top_functions(python_profile, python_steps, 40,
                                                                "cumulative_ms_per_step")}
        if output:  # the whole record, for pstats (callers of a function: pstats.Stats(path).print_callers(name))
            python_profile.dump_stats(str(Path(output).with_suffix(".pstats")))
    if compile_layers:
        result["dynamo"] = dynamo_graphs()
    if sync_steps:
        result["syncs"] = {"steps": sync_steps, "per_step": round(sum(syncs.values()) / sync_steps, 1),
                           "by_caller": [{"per_step": round(count / sync_steps, 2), "stack": stack}
                                         for stack, count in syncs.most_common(15)]}
    profiled_rate = rate(marks, sync_end + 1, total)
    operators = top_operators(profiler)
    wall_ms = 1e3 * profiled_rate["seconds_per_step"] * profiled
    result["profile"] = {"steps": profiled, "wall_ms": round(wall_ms, 1),
                         "gpu_busy_percent": round(100 * operators["gpu_ms_total"] / wall_ms, 1), **operators}
    if plain:
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        rows = load_from_disk(str(train_path)).to_list()
        result["plain"] = plain_loop(settings, model_dir, rows, plan, steps, warmup)
        result["trainer_vs_plain"] = round(result["trainer"]["tokens_per_second"]
                                           / result["plain"]["tokens_per_second"], 3)
    print(json.dumps({key: value for key, value in result.items() if key not in ("profile", "python", "syncs")},
                     indent=1))
    if python_steps:
        print(f"Python own time per optimizer step over {python_steps} steps under cProfile:")
        for row in result["python"]["by_own_time"]:
            print(f"  {row['own_ms_per_step']:>8} ms own {row['cumulative_ms_per_step']:>9} ms cumulative "
                  f"{row['calls_per_step']:>7}x  {row['function'][:90]}")
        print("by cumulative time:")
        for row in result["python"]["by_cumulative_time"]:
            print(f"  {row['cumulative_ms_per_step']:>9} ms cumulative {row['own_ms_per_step']:>8} ms own "
                  f"{row['calls_per_step']:>7}x  {row['function'][:90]}")
    if sync_steps:
        print(f"CPU waits for the GPU: {result['syncs']['per_step']} per optimizer step over {sync_steps} steps")
        for row in result["syncs"]["by_caller"]:
            print(f"  {row['per_step']:>7} per step  {row['stack'][:240]}")
    print(f"GPU busy {result['profile']['gpu_busy_percent']}% of {result['profile']['wall_ms']} ms "
          f"over {profiled} profiled steps; by GPU time:")
    for row in operators["by_gpu"]:
        print(f"  {row['gpu_ms']:>9} ms GPU {row['cpu_ms']:>9} ms CPU {row['calls']:>7}x  {row['name'][:90]}")
    print("by CPU time:")
    for row in operators["by_cpu"][:12]:
        print(f"  {row['cpu_ms']:>9} ms CPU {row['gpu_ms']:>9} ms GPU {row['calls']:>7}x  {row['name'][:90]}")
    whole = {**provenance("bench/finetune_profile.py"), **result}
    if output:
        Path(output).write_text(json.dumps(whole, indent=1) + "\n")
    if record:
        append_run(layout.resolve(record), cited(whole))


if __name__ == "__main__":
    run(main)
