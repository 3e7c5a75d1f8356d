"""Generation throughput: a naive per-prompt `model.generate` loop against the engines.

Same prompts, same max tokens, greedy decoding, run back to back in one process.

CPU, embedded model, stage A prompts of the sample notes:
    python bench/generation_speed.py --model models/SmolLM2-135M-Instruct --notes 4 --max_tokens 64
GPU, Llama-3.2-1B-shaped random model, 256 prompts of ~2,000 tokens, 256 tokens out:
    python bench/generation_speed.py --shape llama-3.2-1b --synthetic_prompts 256 --prompt_tokens 2000 \\
        --max_tokens 256 --engines vllm,transformers --ignore_eos
Prints one JSON line per engine (output tokens/s, seconds per prompt) and the ratios.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
from shapes import build_random_model

from clinical_distil import prompts
from clinical_distil.chat import render_ids
from clinical_distil.cli import run
from clinical_distil.default_model import DEFAULT_MODEL_DIR
from clinical_distil.backends import load_engine
from clinical_distil.engines import Sampling
from clinical_distil.hf_engine import TransformersEngine
from clinical_distil.select import discharge_notes

SAMPLE_NOTES = Path(__file__).resolve().parent.parent / "data" / "samples" / "mimic-iii" / "NOTEEVENTS.csv.gz"


def note_prompts(count: int) -> list[list[dict]]:
    notes = discharge_notes(pd.read_csv(SAMPLE_NOTES))["text"].tolist()[:count]
    return [prompts.generation_messages(note, question_type) for note in notes for question_type in prompts.QUESTION_TYPES]


def long_prompts(count: int, prompt_tokens: int, tokenizer) -> list[list[dict]]:
    """`count` distinct prompts of about `prompt_tokens` tokens, sharing no prefix beyond the template."""
    notes = discharge_notes(pd.read_csv(SAMPLE_NOTES))["text"].tolist()
    conversations = []
    for index in range(count):
        body = f"Patient {index}. "
        position = index
        while len(tokenizer.encode(body, add_special_tokens=False)) < prompt_tokens:
            body += notes[position % len(notes)]
            position += 1
        ids = tokenizer.encode(body, add_special_tokens=False)[:prompt_tokens - 20]
        conversations.append([{"role": "user", "content": tokenizer.decode(ids)}])
    return conversations


def naive_loop(engine: TransformersEngine, conversations, sampling: Sampling) -> tuple[float, int]:
    """What the published-style code does without batching: one generate call per prompt."""
    import torch

    started, output_tokens = time.perf_counter(), 0
    for messages in conversations:
        ids = torch.tensor([render_ids(engine.tokenizer, messages)], device=engine.device)
        kwargs = dict(max_new_tokens=sampling.max_tokens, do_sample=False, eos_token_id=engine.stop_ids,
                      pad_token_id=engine.tokenizer.pad_token_id)
        if not engine.stop_ids:  # a fixed-length run
            kwargs["min_new_tokens"] = sampling.max_tokens
        with torch.inference_mode():
            output = engine.model.generate(input_ids=ids, attention_mask=torch.ones_like(ids), **kwargs)
        new_tokens = output[0, ids.shape[1]:].tolist()
        stop = next((index + 1 for index, token in enumerate(new_tokens) if token in engine.stop_ids), len(new_tokens))
        output_tokens += stop
    return time.perf_counter() - started, output_tokens


def main(model: str | None = None, shape: str | None = None, tokenizer: str = str(DEFAULT_MODEL_DIR),
         engines: str = "naive,transformers",
         notes: int = 4, synthetic_prompts: int = 0, prompt_tokens: int = 2000, max_tokens: int = 64,
         batch_size: int = 16, ignore_eos: bool = False, max_model_len: int = 4096, output: str | None = None,
         naive_prompts: int = 0, max_num_batched_tokens: int | None = None) -> None:
    """Time the naive loop and the engines on the same prompts.

    Args:
        model: model folder (default the embedded SmolLM2).
        shape: build and use a random-weight model of this Llama shape instead (llama-3.2-1b, llama-3.1-8b, ...).
        tokenizer: tokenizer folder for the random-weight model.
        engines: comma-separated: naive, transformers, vllm.
        notes: sample notes whose four stage A prompts are used (when synthetic_prompts is 0).
        synthetic_prompts: use this many distinct prompts of about prompt_tokens tokens instead.
        prompt_tokens: length of the synthetic prompts.
        max_tokens: tokens generated per prompt.
        batch_size: transformers engine batch size.
        ignore_eos: always generate max_tokens (fixed-length throughput runs).
        max_model_len: context length.
        output: also write the rows as JSON here.
        naive_prompts: time the naive loop on only the first N prompts (it is slow); 0 = all.
        max_num_batched_tokens: vLLM's token budget per scheduler step (default: vLLM's).
    """
    if shape:
        model = str(build_random_model(shape, Path("models") / f"random-{shape}", tokenizer_dir=tokenizer,
                                       weights=True, device="cuda" if _cuda() else "cpu"))
    model = model or str(DEFAULT_MODEL_DIR)
    sampling = Sampling(max_tokens=max_tokens)
    rows, transformers_engine = [], None
    conversations = None
    names = engines.split(",") if isinstance(engines, str) else list(engines)
    for name in [part.strip() for part in names if part.strip()]:
        if name in ("naive", "transformers"):
            transformers_engine = transformers_engine or TransformersEngine(model, max_model_len=max_model_len,
                                                                            batch_size=batch_size)
            engine = transformers_engine
            if ignore_eos:
                engine.stop_ids = []  # no end token: every reply runs to max_tokens
        else:
            if transformers_engine is not None:  # give the GPU memory back before vLLM takes its share
                import gc

                import torch

                transformers_engine = engine = None
                gc.collect()
                torch.cuda.empty_cache()
            engine = load_engine(model, engine="vllm", max_model_len=max_model_len, gpu_memory_utilization=0.85,
                                 max_num_batched_tokens=max_num_batched_tokens)
        if conversations is None:
            conversations = (long_prompts(synthetic_prompts, prompt_tokens, engine.tokenizer)
                             if synthetic_prompts else note_prompts(notes))
        prompt_lengths = [len(render_ids(engine.tokenizer, messages)) for messages in conversations]
        if name == "naive":
            conversations_run = conversations[:naive_prompts] if naive_prompts else conversations
            seconds, output_tokens = naive_loop(engine, conversations_run, sampling)
        else:
            conversations_run = conversations
            engine.generate(conversations[:2], Sampling(max_tokens=4))  # warm-up (graphs, kernels)
            started = time.perf_counter()
            if name == "vllm" and ignore_eos:
                output_tokens = fixed_length_vllm(engine, conversations, max_tokens)
            else:
                output_tokens = sum(result.output_tokens for result in engine.generate(conversations, sampling))
            seconds = time.perf_counter() - started
        row = dict(engine=name, model=Path(model).name, prompts=len(conversations_run),
                   mean_prompt_tokens=round(sum(prompt_lengths) / len(prompt_lengths)), max_tokens=max_tokens,
                   output_tokens=output_tokens, seconds=round(seconds, 2),
                   output_tokens_per_s=round(output_tokens / seconds, 1),
                   seconds_per_prompt=round(seconds / len(conversations_run), 4),
                   batch_size=batch_size if name == "transformers" else None,
                   max_num_batched_tokens=max_num_batched_tokens if name == "vllm" else None)
        print(json.dumps(row), flush=True)
        rows.append(row)
        if name == "vllm":
            del engine
    by_name = {row["engine"]: row["output_tokens_per_s"] for row in rows}
    for name, speed in by_name.items():
        for baseline in ("naive", "transformers"):
            if baseline in by_name and name != baseline:
                print(f"{name} / {baseline}: {speed / by_name[baseline]:.2f}x")
    if output:
        Path(output).write_text(json.dumps(rows, indent=2) + "\n")


def fixed_length_vllm(engine, conversations, max_tokens: int) -> int:
    """vLLM greedy replies of exactly max_tokens each (past the end token): the output tokens."""
    from vllm import SamplingParams
    from vllm.inputs import TokensPrompt

    from clinical_distil.chat import render_ids_batch

    params = SamplingParams(max_tokens=max_tokens, temperature=0.0, ignore_eos=True)
    outputs = engine.llm.generate([TokensPrompt(prompt_token_ids=ids)
                                   for ids in render_ids_batch(engine.tokenizer, conversations)], params)
    return sum(len(output.outputs[0].token_ids) for output in outputs)


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    run(main)
