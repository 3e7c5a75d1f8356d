"""Stage A and eval-inference throughput on one GPU, through the project's own stage code.

One process per engine configuration (a vLLM engine per process is the reliable way to free a GPU):

    python bench/gpu_throughput.py build --shape llama-3.1-8b          # random weights of the real shape
    python bench/gpu_throughput.py run --config transformers            # transformers engine, a subset
    python bench/gpu_throughput.py run --config vllm                    # prefix cache on: stage A plain and
                                                                         #   structured, eval-inference, an
                                                                         #   offline vllm-bench-style run,
                                                                         #   batch-1 decode and HBM bandwidth
    python bench/gpu_throughput.py run --config vllm_no_prefix_cache    # stage A with the cache off
    python bench/gpu_throughput.py table                                 # rows -> one markdown table

Stage A runs `synthetic.run_stage_a` (what synthetic-a-create.py runs) on notes of 2,000-4,000
tokens made from the sample notes, the four question types per note; eval-inference runs
`inference.run_eval_inference` (what eval-inference.py runs) with 256 new tokens. Random weights
rarely emit an end token, so replies run to the token limit: fixed-length throughput runs. Each row
is appended to bench/out/gpu_throughput.jsonl.
"""

from __future__ import annotations

import json
import random
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import fire  # noqa: E402
import pandas as pd  # noqa: E402

from clinical_distil import inference, prompts, synthetic  # noqa: E402
from clinical_distil.default_model import build_random_model  # noqa: E402
from clinical_distil.engines import Sampling, TransformersEngine, VLLMEngine, render_ids  # noqa: E402
from clinical_distil.notes import discharge_notes  # noqa: E402

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
    """Device-to-device copy of 4 GiB, best of 10: bytes read + bytes written per second."""
    import torch

    source = torch.empty(2**30, dtype=torch.float32, device="cuda")
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
    return 2 * 4 * 2**30 / best / 1e9


def record(row: dict) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "gpu_throughput.jsonl", "a") as handle:
        handle.write(json.dumps(row) + "\n")
    print(json.dumps(row), flush=True)


def stage_a(engine, notes: pd.DataFrame, max_tokens: int, structured: bool, name: str, card: str) -> None:
    settings = synthetic.StageASettings(question_types=list(prompts.QUESTION_TYPES), questions_per_type=5,
                                        chunk_size=len(notes), sampling=Sampling(max_tokens=max_tokens,
                                                                                temperature=0.7, top_p=0.95),
                                        structured_output=structured, overwrite=True)
    target = Path("/tmp/bench-stage-a") / name
    summary = synthetic.run_stage_a(engine, notes, settings, target, "random", limit=len(notes))
    frame = synthetic.read_chunks(target)
    record({"workload": "stage A", "config": name, "card": card, "notes": len(notes), "requests": len(frame),
            "mean_prompt_tokens": round(frame["prompt_tokens"].mean()), "max_tokens": max_tokens,
            "output_tokens": int(frame["output_tokens"].sum()), "seconds": summary["wall_seconds"],
            "output_tokens_per_s": round(frame["output_tokens"].sum() / summary["wall_seconds"], 1),
            "seconds_per_note": round(summary["wall_seconds"] / len(notes), 4),
            "structured_output": structured})


def eval_inference(engine, notes: pd.DataFrame, name: str, card: str) -> None:
    settings = inference.InferenceSettings(chunk_size=len(notes), overwrite=True,
                                           sampling=Sampling(max_tokens=256, temperature=0.0, top_p=1.0))
    summary = inference.run_eval_inference(engine, eval_rows(notes), settings, Path("/tmp/bench-eval") / name,
                                           "bench", "random")
    record({"workload": "eval-inference", "config": name, "card": card, "requests": summary["answered"],
            "max_tokens": 256, "output_tokens": summary["output_tokens"], "seconds": summary["wall_seconds"],
            "output_tokens_per_s": summary["output_tokens_per_second"],
            "seconds_per_example": summary["seconds_per_example"]})


def offline_bench(engine: VLLMEngine, prompt_lengths: list[int], max_tokens: int, card: str) -> None:
    """What `vllm bench throughput` measures: random token prompts of the same lengths, fixed output length."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    chooser = random.Random(1)
    vocabulary = engine.tokenizer.vocab_size
    requests = [TokensPrompt(prompt_token_ids=[chooser.randrange(100, vocabulary - 100) for _ in range(length)])
                for length in prompt_lengths]
    params = SamplingParams(max_tokens=max_tokens, ignore_eos=True, temperature=1.0, top_p=1.0)
    started = time.perf_counter()
    outputs = engine.llm.generate(requests, params, use_tqdm=False)
    seconds = time.perf_counter() - started
    tokens = sum(len(output.outputs[0].token_ids) for output in outputs)
    record({"workload": "offline vllm-bench style (random prompts, ignore_eos)", "config": "vllm", "card": card,
            "requests": len(requests), "mean_prompt_tokens": round(sum(prompt_lengths) / len(prompt_lengths)),
            "max_tokens": max_tokens, "output_tokens": tokens, "seconds": round(seconds, 2),
            "output_tokens_per_s": round(tokens / seconds, 1)})


def batch_one_decode(engine: VLLMEngine, shape: str, card: str) -> None:
    """Decode speed of a single request against the bandwidth bound (every weight read once per token)."""
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
    weights = sum(path.stat().st_size for path in model_dir(shape).glob("*.safetensors"))
    bandwidth = hbm_bandwidth_gb_s()
    bound = bandwidth * 1e9 / weights
    record({"workload": "batch-1 decode", "config": "vllm", "card": card, "output_tokens": tokens,
            "seconds": round(seconds, 3), "output_tokens_per_s": round(tokens / seconds, 1),
            "weight_bytes": weights, "measured_hbm_gb_s": round(bandwidth, 1),
            "bandwidth_bound_tokens_per_s": round(bound, 1), "roofline_ratio": round(tokens / seconds / bound, 3),
            "gpu": torch.cuda.get_device_name()})


def build(shape: str = "llama-3.1-8b", tokenizer: str = "models/smollm2-tokenizer") -> None:
    """Random bf16 weights of a real Llama shape (speed does not depend on the weights)."""
    started = time.perf_counter()
    path = build_random_model(shape, model_dir(shape), tokenizer_dir=tokenizer, weights=True, device="cuda")
    print(f"built {path} in {time.perf_counter() - started:.0f}s")


def run(config: str, shape: str = "llama-3.1-8b", notes: int = 64, transformers_notes: int = 8,
        max_tokens: int = 512, max_model_len: int = 8192) -> None:
    """Time one engine configuration: transformers, vllm or vllm_no_prefix_cache."""
    import torch

    card = torch.cuda.get_device_name()
    model = str(model_dir(shape))
    if config == "transformers":
        engine = TransformersEngine(model, max_model_len=max_model_len, batch_size=32)
        frame = long_notes(transformers_notes, engine.tokenizer)
        engine.generate([[{"role": "user", "content": "warm up"}]], Sampling(max_tokens=4))
        stage_a(engine, frame, max_tokens, False, "transformers", card)
        eval_inference(engine, long_notes(32, engine.tokenizer, seed=1), "transformers", card)
        return
    engine = VLLMEngine(model, max_model_len=max_model_len, gpu_memory_utilization=0.85,
                        enable_prefix_caching=config != "vllm_no_prefix_cache")
    frame = long_notes(notes, engine.tokenizer)
    engine.generate([[{"role": "user", "content": "warm up"}]], Sampling(max_tokens=4))
    stage_a(engine, frame, max_tokens, False, config, card)
    if config == "vllm_no_prefix_cache":
        return
    stage_a(engine, frame, max_tokens, True, "vllm structured", card)
    lengths = [len(render_ids(engine.tokenizer, prompts.generation_messages(text, question_type)))
               for text in frame["text"] for question_type in prompts.QUESTION_TYPES]
    offline_bench(engine, lengths, max_tokens, card)
    eval_frame = long_notes(256, engine.tokenizer, seed=1)
    eval_inference(engine, eval_frame, "vllm", card)
    batch_one_decode(engine, shape, card)


def table(path: str = str(OUT / "gpu_throughput.jsonl")) -> None:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]
    columns = ["workload", "config", "card", "requests", "mean_prompt_tokens", "max_tokens", "output_tokens",
               "seconds", "output_tokens_per_s", "seconds_per_note", "seconds_per_example", "roofline_ratio"]
    print("| " + " | ".join(columns) + " |")
    print("|" + "---|" * len(columns))
    for row in rows:
        print("| " + " | ".join(str(row.get(column, "")) for column in columns) + " |")


if __name__ == "__main__":
    fire.Fire({"build": build, "run": run, "table": table})
