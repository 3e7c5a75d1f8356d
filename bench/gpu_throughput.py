"""Stage A and eval-inference throughput on one GPU, through the project's own stage code.

One process per engine configuration (a vLLM engine per process is the reliable way to free a GPU):

    python bench/gpu_throughput.py build --shape llama-3.1-8b          # random weights of the real shape
    python bench/gpu_throughput.py run --config transformers            # transformers engine, a subset
    python bench/gpu_throughput.py run --config vllm                    # prefix cache on: stage A plain and
                                                                         #   structured, the same prompts straight
                                                                         #   through vLLM, vllm bench's own
                                                                         #   workloads, eval-inference, batch-1
                                                                         #   decode and HBM bandwidth
    python bench/gpu_throughput.py run --config vllm_no_prefix_cache    # stage A with the cache off
    python bench/gpu_throughput.py run --config vllm_structured         # the item schema with and without
                                                                         #   string bounds, batch-1 decode
    python bench/gpu_throughput.py run --config vllm_overhead           # stage A against its own ids
                                                                         #   through LLM.generate alone, twice
    python bench/gpu_throughput.py run --config vllm_stages --shape llama-3.1-70b --tensor_parallel_size 4
                                                                         # stage A, eval-inference, batch-1
                                                                         #   decode (a model without weight
                                                                         #   files loads vLLM's dummy weights)
    python bench/gpu_throughput.py notes --count 256 --data_dir data/bench-notes
                                                                         # the same notes as a notes table,
                                                                         #   for synthetic-a-create.py itself
    python bench/gpu_throughput.py cli                                   # the `vllm bench throughput` command
    python bench/gpu_throughput.py table                                 # rows -> one markdown table

Stage A runs `runner.run_chunks` over stage A's settings (what synthetic-a-create.py runs) on notes
of 2,000-4,000 tokens made from the sample notes, the four question types per note; eval-inference
runs it over an answering run (what eval-inference.py runs) with 256 new tokens. Random weights
rarely emit an end token, so replies run to the token limit: fixed-length throughput runs. Each row
is appended to bench/out/gpu_throughput.jsonl.
"""

from __future__ import annotations

import json
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
from shapes import build_random_model

from clinical_distil import create, eval_inference, layout, prompts, runner
from clinical_distil.cli import run as run_command
from clinical_distil.engines import Sampling
from clinical_distil.hf_engine import TransformersEngine
from clinical_distil.select import discharge_notes
from clinical_distil.stages import CreateSettings, EvalInferenceSettings
from clinical_distil.vllm_engine import VLLMEngine

REPO = Path(__file__).resolve().parent.parent
SAMPLE_NOTES = REPO / "data" / "samples" / "mimic-iii" / "NOTEEVENTS.csv.gz"
OUT = REPO / "bench" / "out"


def model_dir(shape: str) -> Path:
    return REPO / "models" / f"random-{shape}"


def long_notes(count: int, tokenizer, low: int = 2000, high: int = 4000, seed: int = 0) -> pd.DataFrame:
    """`count` notes of `low`-`high` tokens (uniform), each a run of sample discharge summaries."""
    texts = discharge_notes(pd.read_csv(SAMPLE_NOTES))["text"].tolist()
    chooser = random.Random(seed)
    rows = []
    for index in range(count):
        target, body, position = chooser.randint(low, high), "", index
        while len(tokenizer.encode(body, add_special_tokens=False)) < target:
            body += texts[position % len(texts)] + "\n\n"
            position += 1
        ids = tokenizer.encode(body, add_special_tokens=False)[:target]
        rows.append({"subject_id": 1000 + index, "hadm_id": 5000 + index, "note_id": index,
                     "text": tokenizer.decode(ids)})
    return pd.DataFrame(rows)


def eval_rows(notes: pd.DataFrame) -> pd.DataFrame:
    """One answer prompt per note, as the evaluation sets have them."""
    return pd.DataFrame({"id": notes["note_id"], "label": "Yes", "question_type": "yes_no",
                         "prompt": [prompts.answer_messages(text, "Has the patient ever had a stroke?")[-1]["content"]
                                    for text in notes["text"]]})


def hbm_bandwidth_gb_s() -> float:
    """Device-to-device copy of 1 GiB, best of 10: bytes read + bytes written per second."""
    import torch

    source = torch.empty(2**28, dtype=torch.float32, device="cuda")
    target = torch.empty_like(source)
    best = float("inf")
    for _ in range(10):
        torch.cuda.synchronize()
        started = time.perf_counter()
        target.copy_(source)
        torch.cuda.synchronize()
        best = min(best, time.perf_counter() - started)
    del source, target
    torch.cuda.empty_cache()
    return 2 * 2**30 / best / 1e9


def weight_bytes(model: str) -> int:
    """Bytes of the model's bf16 weights: its files, or (dummy weights) its parameter count x 2."""
    files = list(Path(model).glob("*.safetensors"))
    if files:
        return sum(path.stat().st_size for path in files)
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(model))
    return 2 * sum(parameter.numel() for parameter in skeleton.parameters())


def record(row: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "gpu_throughput.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def stage_a_settings(notes: int, max_tokens: int, structured: bool) -> create.CreateRun:
    """Stage A as synthetic-a-create.py runs it: four types, five questions, T=0.7, top-p 0.95.

    No retries: a random-weight model's every reply runs to the token limit, and retrying them
    would time a second pass instead of the first.
    """
    return create.CreateRun(CreateSettings(questions_per_type=5, chunk_size=notes, max_tokens=max_tokens,
                                           temperature=0.7, top_p=0.95, structured_output=structured,
                                           overwrite=True, retries=0))


def reset_cache(engine) -> None:
    # every timed vLLM run starts from an empty prefix cache, so no run reuses an earlier one's prompts
    if hasattr(engine, "llm"):
        engine.llm.reset_prefix_cache()


def stage_a(engine, notes: pd.DataFrame, max_tokens: int, structured: bool, name: str, card: str) -> None:
    target = Path("/tmp/bench-stage-a") / name
    shutil.rmtree(target, ignore_errors=True)  # an earlier run's chunk files (other note counts) would be read too
    reset_cache(engine)
    summary = runner.run_chunks(engine, notes, stage_a_settings(len(notes), max_tokens, structured), target,
                                "random", limit=len(notes))
    frame = create.read_chunks(target)
    record({"workload": "stage A", "config": name, "card": card, "notes": len(notes), "requests": len(frame),
            "mean_prompt_tokens": round(frame["prompt_tokens"].mean()), "max_tokens": max_tokens,
            "output_tokens": int(frame["output_tokens"].sum()), "seconds": summary["wall_seconds"],
            "output_tokens_per_s": round(frame["output_tokens"].sum() / summary["wall_seconds"], 1),
            "seconds_per_note": round(summary["wall_seconds"] / len(notes), 4),
            "structured_output": structured, "phase_seconds": summary["phase_seconds"]})


def stage_a_prompt_ids(engine: VLLMEngine, notes: pd.DataFrame, max_tokens: int) -> list[list[int]]:
    """The token ids stage A sends for these notes, in its order (a note's four types together)."""
    _, fitted = create.build_requests(notes, stage_a_settings(len(notes), max_tokens, False), engine.tokenizer,
                                         engine.max_model_len - max_tokens)
    return [item.prompt_ids for item in fitted]


def timed_generate(engine: VLLMEngine, requests: list, params) -> tuple[float, int]:
    reset_cache(engine)
    started = time.perf_counter()
    outputs = engine.llm.generate(requests, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    return seconds, sum(len(output.outputs[0].token_ids) for output in outputs)


def same_prompts(engine: VLLMEngine, prompt_ids: list[list[int]], max_tokens: int, sampling: str, card: str) -> None:
    """Stage A's own prompts straight through LLM.generate: what the stage code costs on top of vLLM.

    sampling "stage A": the stage's parameters (T=0.7, top-p 0.95, a seed per request, stop at the end
    token); "vllm bench": what `vllm bench throughput` asks for (T=1, top-p 1, ignore_eos).
    """
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    if sampling == "stage A":
        params = [SamplingParams(max_tokens=max_tokens, temperature=0.7, top_p=0.95, seed=position,
                                 stop_token_ids=engine.stop_ids, skip_special_tokens=True)
                  for position in range(len(prompt_ids))]
    else:
        params = SamplingParams(max_tokens=max_tokens, temperature=1.0, top_p=1.0, ignore_eos=True)
    seconds, tokens = timed_generate(engine, [TokensPrompt(prompt_token_ids=ids) for ids in prompt_ids], params)
    record({"workload": "stage A prompts, LLM.generate only", "config": f"vllm, {sampling} sampling", "card": card,
            "requests": len(prompt_ids), "mean_prompt_tokens": round(sum(map(len, prompt_ids)) / len(prompt_ids)),
            "max_tokens": max_tokens, "output_tokens": tokens, "seconds": round(seconds, 2),
            "output_tokens_per_s": round(tokens / seconds, 1), "seconds_per_note": round(seconds / len(prompt_ids) * 4, 4)})


def vllm_bench_workload(engine: VLLMEngine, dataset: str, prompt_ids: list[list[int]], max_tokens: int,
                        card: str) -> None:
    """vLLM's own benchmark requests and request loop (vllm.benchmarks.throughput) on this engine.

    dataset "random": random prompts of stage A's mean length (no shared prefix, as `vllm bench
    throughput --dataset-name random`); "prefix_repetition": one random prefix of the shared
    [system + note] length per note, four random suffixes of the rest (stage A's shape).
    """
    from vllm.benchmarks.datasets import PrefixRepetitionRandomDataset, RandomDataset
    from vllm.benchmarks.throughput import _run_vllm_requests

    count, mean_length = len(prompt_ids), round(sum(map(len, prompt_ids)) / len(prompt_ids))
    if dataset == "random":
        requests = RandomDataset(random_seed=0).sample(engine.tokenizer, count, input_len=mean_length,
                                                       output_len=max_tokens)
    else:
        groups = [prompt_ids[start:start + len(prompts.QUESTION_TYPES)]
                  for start in range(0, count, len(prompts.QUESTION_TYPES))]
        shared = sum(len(shared_prefix(group)) for group in groups) / len(groups)
        requests = PrefixRepetitionRandomDataset(random_seed=0).sample(
            engine.tokenizer, count, prefix_len=round(shared), suffix_len=mean_length - round(shared),
            num_prefixes=len(groups), output_len=max_tokens)
    reset_cache(engine)
    seconds, outputs = _run_vllm_requests(engine.llm, requests, 1, False, do_profile=False, prequeue_requests=False,
                                          enable_lora=False)
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    record({"workload": f"vllm bench requests ({dataset})", "config": "vllm", "card": card,
            "requests": len(requests), "mean_prompt_tokens": round(sum(r.prompt_len for r in requests) / len(requests)),
            "max_tokens": max_tokens, "output_tokens": tokens, "seconds": round(seconds, 2),
            "output_tokens_per_s": round(tokens / seconds, 1)})


# the string bounds measured against the shipped schema (which has none), in characters
STRING_BOUNDS = {"question": 400, "section": 80, "source": 600, "explanation": 600}


def bound_strings(schema: dict) -> dict:
    """The item schema with a maxLength on each free-text key."""
    properties = schema["items"]["properties"]
    bounded = {key: {**value, "maxLength": STRING_BOUNDS[key]} if key in STRING_BOUNDS else value
               for key, value in properties.items()}
    return {**schema, "items": {**schema["items"], "properties": bounded}}


def shared_prefix(sequences: list[list[int]]) -> list[int]:
    length = 0
    for column in zip(*sequences):
        if any(token != column[0] for token in column):
            break
        length += 1
    return sequences[0][:length]


def answer_eval_prompts(engine, notes: pd.DataFrame, name: str, card: str) -> None:
    settings = eval_inference.AnswerRun(EvalInferenceSettings(chunk_size=len(notes), overwrite=True,
                                                              max_output_tokens=256), "bench")
    summary = runner.run_chunks(engine, eval_rows(notes), settings, Path("/tmp/bench-eval") / name, "random")
    record({"workload": "eval-inference", "config": name, "card": card, "requests": summary["answered"],
            "max_tokens": 256, "output_tokens": summary["output_tokens"], "seconds": summary["wall_seconds"],
            "output_tokens_per_s": summary["output_tokens_per_second"],
            "seconds_per_example": summary["seconds_per_example"]})


def batch_one_decode(engine: VLLMEngine, shape: str, card: str, tensor_parallel_size: int = 1) -> None:
    """Decode speed of a single request against the bandwidth bound (every weight read once per token;
    with tensor parallelism each GPU reads its share, so the bound grows with the GPU count)."""
    import torch
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    params = SamplingParams(max_tokens=512, ignore_eos=True, temperature=0.0)
    prompt = TokensPrompt(prompt_token_ids=list(range(1000, 1032)))
    engine.llm.generate([prompt], SamplingParams(max_tokens=8), use_tqdm=False)
    started = time.perf_counter()
    output = engine.llm.generate([prompt], params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = len(output[0].outputs[0].token_ids)
    weights = weight_bytes(str(model_dir(shape)))
    bandwidth = hbm_bandwidth_gb_s()
    bound = tensor_parallel_size * bandwidth * 1e9 / weights
    record({"workload": "batch-1 decode", "config": f"vllm, tensor parallel {tensor_parallel_size}", "card": card,
            "shape": shape, "output_tokens": tokens,
            "seconds": round(seconds, 3), "output_tokens_per_s": round(tokens / seconds, 1),
            "weight_bytes": weights, "measured_hbm_gb_s": round(bandwidth, 1),
            "bandwidth_bound_tokens_per_s": round(bound, 1), "roofline_ratio": round(tokens / seconds / bound, 3),
            "gpu": torch.cuda.get_device_name()})


def build(shape: str = "llama-3.1-8b", tokenizer: str = "models/smollm2-tokenizer", weights: bool = True) -> None:
    """Random bf16 weights of a real Llama shape (speed does not depend on the weights); weights=False
    writes config and tokenizer only, for vLLM's dummy weights."""
    started = time.perf_counter()
    path = build_random_model(shape, model_dir(shape), tokenizer_dir=tokenizer, weights=weights, device="cuda")
    print(f"built {path} in {time.perf_counter() - started:.0f}s")


def run(config: str, shape: str = "llama-3.1-8b", notes: int = 64, transformers_notes: int = 4,
        max_tokens: int = 512, max_model_len: int = 8192, tensor_parallel_size: int = 1,
        eval_examples: int = 256) -> None:
    """Time one engine configuration: transformers, vllm, vllm_no_prefix_cache, vllm_structured,
    vllm_overhead or vllm_stages."""
    import os

    import torch

    card = torch.cuda.get_device_name()
    if tensor_parallel_size > 1:
        card = f"{tensor_parallel_size} x {card}"
    model = str(model_dir(shape))
    if config == "transformers":
        engine = TransformersEngine(model, max_model_len=max_model_len, batch_size=32)
        frame = long_notes(transformers_notes, engine.tokenizer)
        engine.generate([[{"role": "user", "content": "warm up"}]], Sampling(max_tokens=4))
        stage_a(engine, frame, max_tokens, False, "transformers", card)
        answer_eval_prompts(engine, long_notes(32, engine.tokenizer, seed=1), "transformers", card)
        return
    options = {}
    if not any(Path(model).glob("*.safetensors")):
        options["load_format"] = "dummy"  # a 70B shape's 141 GB of random weights need not be written and read
    if tensor_parallel_size > 1:
        # no NVLink multicast, which hosts whose GPUs share an NVLink switch forbid: it is what vLLM's
        # symmetric-memory all-reduce and FlashInfer's all-reduce + RMSNorm fusion use; vLLM's custom
        # all-reduce (peer-to-peer buffers) and NCCL remain
        os.environ["VLLM_ALLREDUCE_USE_SYMM_MEM"] = "0"
        options["compilation_config"] = {"pass_config": {"fuse_allreduce_rms": False}}
    engine = VLLMEngine(model, max_model_len=max_model_len, gpu_memory_utilization=0.85,
                        tensor_parallel_size=tensor_parallel_size,
                        enable_prefix_caching=config != "vllm_no_prefix_cache", **options)
    frame = long_notes(notes, engine.tokenizer)
    # warm up with stage A's sampling: vLLM compiles its top-p kernel (Triton) on first use, seconds that
    # a real run pays once and the first timed run here would otherwise pay
    engine.generate([[{"role": "user", "content": "warm up"}]] * 8, Sampling(max_tokens=4, temperature=0.7, top_p=0.95))
    if config == "vllm_overhead":
        # what the stage code adds on top of LLM.generate, with every kernel already compiled; alternated
        # twice, so neither side gains from running second
        prompt_ids = stage_a_prompt_ids(engine, frame, max_tokens)
        for _ in range(2):
            stage_a(engine, frame, max_tokens, False, "vllm", card)
            same_prompts(engine, prompt_ids, max_tokens, "stage A", card)
        return
    if config == "vllm_stages":
        # the two GPU stages and the decode bound, for a large shape or a tensor-parallel engine
        stage_a(engine, frame, max_tokens, False, f"vllm, tensor parallel {tensor_parallel_size}", card)
        answer_eval_prompts(engine, long_notes(eval_examples, engine.tokenizer, seed=1),
                       f"vllm, tensor parallel {tensor_parallel_size}", card)
        batch_one_decode(engine, shape, card, tensor_parallel_size)
        return
    if config == "vllm_structured":
        # the item schema as shipped and with bounded strings (maxLength), against plain stage A
        stage_a(engine, frame, max_tokens, False, "vllm", card)
        stage_a(engine, frame, max_tokens, True, "vllm structured", card)
        shipped = prompts.item_schema
        prompts.item_schema = lambda *args, **kwargs: bound_strings(shipped(*args, **kwargs))
        stage_a(engine, frame, max_tokens, True, "vllm structured, strings bounded", card)
        prompts.item_schema = shipped
        batch_one_decode(engine, shape, card)
        return
    stage_a(engine, frame, max_tokens, False, config, card)
    if config == "vllm_no_prefix_cache":
        return
    prompt_ids = stage_a_prompt_ids(engine, frame, max_tokens)
    same_prompts(engine, prompt_ids, max_tokens, "stage A", card)
    same_prompts(engine, prompt_ids, max_tokens, "vllm bench", card)
    vllm_bench_workload(engine, "prefix_repetition", prompt_ids, max_tokens, card)
    vllm_bench_workload(engine, "random", prompt_ids, max_tokens, card)
    stage_a(engine, frame, max_tokens, True, "vllm structured", card)
    eval_frame = long_notes(256, engine.tokenizer, seed=1)
    answer_eval_prompts(engine, eval_frame, "vllm", card)
    batch_one_decode(engine, shape, card)


def notes(count: int = 256, data_dir: str = "data/bench-notes", tokenizer: str = "models/smollm2-tokenizer") -> None:
    """The benchmark's notes as {data_dir}/mimic/notes_{count}.csv, the table synthetic-a-create.py reads."""
    from transformers import AutoTokenizer

    target = layout.notes_file(Path(data_dir), count)
    target.parent.mkdir(parents=True, exist_ok=True)
    long_notes(count, AutoTokenizer.from_pretrained(tokenizer)).to_csv(target, index=False)
    print(f"wrote {count} notes to {target}")


def cli(shape: str = "llama-3.1-8b", num_prompts: int = 256, input_len: int = 3621, output_len: int = 512,
        max_model_len: int = 8192) -> None:
    """`vllm bench throughput` (random prompts of stage A's mean length), for the in-process rows.

    Runs the subcommand's own argument parser and main in a fresh process; `vllm bench` through the
    `vllm` entry point would also import the API server, which needs uvicorn (not carried).
    """
    import torch

    result = Path("/tmp/vllm-bench-throughput.json")
    # --random-input-len/--random-output-len: the random dataset's own defaults (1,024 / 128) win over
    # the generic --input-len/--output-len
    arguments = ["--model", str(model_dir(shape)), "--dataset-name", "random", "--random-input-len",
                 str(input_len), "--random-output-len", str(output_len), "--num-prompts", str(num_prompts),
                 "--max-model-len", str(max_model_len), "--gpu-memory-utilization", "0.85", "--dtype", "bfloat16",
                 "--output-json", str(result)]
    runner = ("import sys; from vllm.utils.argparse_utils import FlexibleArgumentParser; "
              "from vllm.benchmarks.throughput import add_cli_args, main; parser = FlexibleArgumentParser(); "
              "add_cli_args(parser); main(parser.parse_args(sys.argv[1:]))")
    print("vllm bench throughput " + " ".join(arguments), flush=True)
    finished = subprocess.run([sys.executable, "-c", runner, *arguments], check=True, stdout=subprocess.PIPE,
                              text=True)
    print(finished.stdout, flush=True)
    measured = json.loads(result.read_text())
    seconds = measured["elapsed_time"]
    # the JSON has prompt + output tokens together; the printed summary has the output rate
    rate = float(re.search(r"([0-9.]+) output tokens/s", finished.stdout).group(1))
    prompt_tokens = measured["total_num_tokens"] - rate * seconds
    record({"workload": "vllm bench throughput (random)", "config": "vllm", "card": torch.cuda.get_device_name(),
            "requests": measured["num_requests"], "mean_prompt_tokens": round(prompt_tokens / measured["num_requests"]),
            "max_tokens": output_len, "output_tokens": round(rate * seconds), "seconds": round(seconds, 2),
            "output_tokens_per_s": rate})


def table(path: str = str(OUT / "gpu_throughput.jsonl")) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    columns = ["workload", "config", "card", "requests", "mean_prompt_tokens", "max_tokens", "output_tokens",
               "seconds", "output_tokens_per_s", "seconds_per_note", "seconds_per_example", "roofline_ratio"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |")


if __name__ == "__main__":
    run_command({"build": build, "run": run, "notes": notes, "cli": cli, "table": table})
