"""The transformers engine's own decode loop against batched `model.generate` with left padding.

    python bench/decode_loop.py --workload stage_a --notes 2 --max_tokens 128
    python bench/decode_loop.py --workload eval --count 16 --max_tokens 64 --structured True

Both sides get the same conversations, token ids, greedy decoding, stop tokens and (with
--structured) the same JSON schemas, through xgrammar: the engine's own matchers, and xgrammar's
transformers logits processor for `generate`. Prints seconds, output tokens/s and the share of
replies that are the same text on both sides.
"""

from __future__ import annotations

import json
import time

import pandas as pd
import torch

from clinical_distil import prompts
from clinical_distil.chat import render_ids_batch
from clinical_distil.cli import run
from clinical_distil.engines import Sampling
from clinical_distil.preprocess import annotated_synthetic_prompts
from clinical_distil.hf_engine import TransformersEngine
from clinical_distil.eval_inference import answer_schema, conversation
from clinical_distil.layout import REPO_ROOT
from clinical_distil.select import discharge_notes

SAMPLES = REPO_ROOT / "data" / "samples"


def build_workload(name: str, notes: int, count: int) -> tuple[list[list[dict]], list[dict]]:
    """(conversations, JSON schema per conversation) of stage A or of eval-inference."""
    if name == "stage_a":
        texts = discharge_notes(pd.read_csv(SAMPLES / "mimic-iii" / "NOTEEVENTS.csv.gz"))["text"].tolist()[:notes]
        pairs = [(prompts.generation_messages(text, kind, 2), prompts.item_schema(kind, 2))
                 for text in texts for kind in prompts.QUESTION_TYPES]
    else:
        rows = annotated_synthetic_prompts(SAMPLES / "annotated-synthetic").iloc[:count]
        pairs = [(conversation(prompt), answer_schema()) for prompt in rows["prompt"]]
    return [messages for messages, _ in pairs], [schema for _, schema in pairs]


def batched_generate(engine: TransformersEngine, conversations, schemas, max_tokens: int, batch_size: int,
                     structured: bool) -> tuple[list[str], int]:
    """Replies from `model.generate` on left-padded batches; and the output tokens."""
    import xgrammar
    from xgrammar.contrib.hf import LogitsProcessor

    tokenizer, model = engine.tokenizer, engine.model
    ids = render_ids_batch(tokenizer, conversations)
    compiler = xgrammar.GrammarCompiler(xgrammar.TokenizerInfo.from_huggingface(
        tokenizer, vocab_size=model.config.vocab_size, stop_token_ids=engine.stop_ids)) if structured else None
    texts, tokens = [], 0
    for start in range(0, len(ids), batch_size):
        batch = ids[start:start + batch_size]
        longest = max(len(row) for row in batch)
        input_ids = torch.tensor([[tokenizer.pad_token_id] * (longest - len(row)) + row for row in batch])
        mask = torch.tensor([[0] * (longest - len(row)) + [1] * len(row) for row in batch])
        processors = [LogitsProcessor([compiler.compile_json_schema(json.dumps(schema))
                                       for schema in schemas[start:start + batch_size]])] if structured else []
        with torch.inference_mode():
            output = model.generate(input_ids=input_ids, attention_mask=mask, max_new_tokens=max_tokens,
                                    do_sample=False, eos_token_id=engine.stop_ids, pad_token_id=tokenizer.pad_token_id,
                                    logits_processor=processors)
        for row in output[:, longest:].tolist():
            kept = [token for token in row if token != tokenizer.pad_token_id]
            ended = next((position for position, token in enumerate(kept) if token in engine.stop_ids), None)
            kept = kept if ended is None else kept[:ended]
            tokens += len(kept) + (ended is not None)
            texts.append(tokenizer.decode(kept, skip_special_tokens=True))
    return texts, tokens


def main(model: str = "models/SmolLM2-135M-Instruct", workload: str = "stage_a", notes: int = 2, count: int = 16,
         max_tokens: int = 128, batch_size: int = 16, structured: bool = False) -> None:
    """workload: stage_a (the four generation prompts of `notes` sample notes) or eval (`count` answer prompts)."""
    torch.manual_seed(0)
    conversations, schemas = build_workload(workload, notes, count)
    engine = TransformersEngine(str(REPO_ROOT / model), batch_size=batch_size)
    results = {}
    started = time.perf_counter()
    own = engine.generate(conversations, Sampling(max_tokens=max_tokens, json_schema=schemas if structured else None))
    results["engine loop"] = ([item.text for item in own], sum(item.output_tokens for item in own),
                              time.perf_counter() - started)
    # model.generate's own attention path (the engine swaps in native-GQA SDPA on a CPU; generate keeps it too)
    started = time.perf_counter()
    texts, tokens = batched_generate(engine, conversations, schemas, max_tokens, batch_size, structured)
    results["batched generate"] = (texts, tokens, time.perf_counter() - started)
    reference = results["engine loop"][0]
    print(f"workload {workload}: {len(conversations)} prompts, <= {max_tokens} new tokens, batch {batch_size}, "
          f"structured {structured}, torch threads {torch.get_num_threads()}")
    print("| decoder | seconds | output tokens | output tokens/s | same text as the engine loop |")
    print("|---|---|---|---|---|")
    for name, (texts, tokens, seconds) in results.items():
        same = sum(left == right for left, right in zip(texts, reference)) / len(reference)
        print(f"| {name} | {seconds:.1f} | {tokens:,} | {tokens / seconds:.1f} | {same:.0%} |")
    loop, plain = results["engine loop"][2], results["batched generate"][2]
    print(f"engine loop speed-up over batched generate: {plain / loop:.2f}x")


if __name__ == "__main__":
    run(main)
