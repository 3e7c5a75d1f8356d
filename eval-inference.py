"""Batch inference of a model over an evaluation set (eval-data/{dataset}/{input_file}.csv).

    python eval-inference.py --model_id models/llama-3.2-1b-distilled --dataset_name i2b2 --input_file test
    python eval-inference.py --model_id meta-llama/Llama-3.2-1B --adapter results/RUN/final --model_name distilled-1b
writes outputs/{dataset}/{model_name}/{input_file}_{start}_{num}_chunk_{i}.csv (input rows + output,
finish_reason, token counts) and manifest_{input_file}.json, under the data root.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clinical_distil import inference  # noqa: E402
from clinical_distil.cli import run  # noqa: E402
from clinical_distil.engines import Sampling, load_engine  # noqa: E402
from clinical_distil.files import InputError, data_root, model_location, resolve  # noqa: E402


def main(model_id: str = "meta-llama/Meta-Llama-3.1-70B-Instruct", dataset_name: str = "i2b2",
         input_file: str = "train", num_inference: str | int = "all", start_row: int = 0, max_output_tokens: int = 256,
         chunk_size: int = 10000, temperature: float = 0.0, top_p: float = 1.0, engine: str = "auto",
         tensor_parallel_size: int | None = None, data_dir: str | None = None, output_dir: str | None = None,
         model_name: str | None = None, adapter: str | None = None, max_model_len: int | None = None,
         structured_output: bool = False, batch_size: int = 16, seed: int = 0, num_shards: int = 1,
         shard_index: int = 0, overwrite: bool = False,
         dtype: str = "auto") -> None:
    """Answer every prompt of eval-data/{dataset_name}/{input_file}.csv with `model_id`.

    Args:
        model_id: model to evaluate (hub id or local folder).
        dataset_name: evaluation set folder under eval-data/ (i2b2, apixaban, annotated-synthetic).
        input_file: file name without .csv (train, test, prompts).
        num_inference: number of rows to answer, or "all".
        start_row: first row to answer.
        max_output_tokens: longest answer in tokens.
        chunk_size: rows per output file (the unit of resuming).
        temperature: sampling temperature (0 = greedy).
        top_p: nucleus sampling threshold.
        engine: auto (vLLM when it imports and a GPU is visible), vllm or transformers.
        tensor_parallel_size: GPUs per model for vLLM (default: all visible).
        data_dir: data root (default data/ in the repository, or $CLINICAL_DISTIL_DATA).
        output_dir: outputs folder (default {data_dir}/outputs/{dataset_name}/{model_name}).
        model_name: output folder name (default: the last part of model_id).
        adapter: a LoRA adapter folder served on top of model_id without merging.
        max_model_len: context length (default: the model's); longer notes are shortened inside the note.
        structured_output: constrain answers to the JSON answer object.
        batch_size: prompts per batch for the transformers engine.
        seed: sampling seed.
        num_shards: split the chunks over this many jobs.
        shard_index: which shard this job runs (0-based).
        overwrite: redo chunk files that already exist.
        dtype: model weights and compute: auto (bf16 on a GPU), bfloat16, float16 or float32.
    """
    root = data_root(data_dir)
    rows = inference.load_eval_rows(inference.eval_file(root, dataset_name, input_file), dataset_name)
    if str(num_inference).lower() == "all":
        limit = None
    elif str(num_inference).isdigit():
        limit = int(num_inference)
    else:
        raise InputError(f"--num_inference must be a number of rows or 'all', got {num_inference!r}")
    name = model_name or Path(str(adapter or model_id).rstrip("/")).name
    target = resolve(output_dir) if output_dir else root / "outputs" / dataset_name / name
    settings = inference.InferenceSettings(
        chunk_size=chunk_size, structured_output=structured_output, overwrite=overwrite,
        sampling=Sampling(max_tokens=max_output_tokens, temperature=temperature, top_p=top_p, seed=seed))
    # the rows and files are checked before a model loads
    inference.plan_run(len(rows), settings, target, input_file, start_row, limit, num_shards, shard_index)
    model = load_engine(model_location(model_id), engine=engine, max_model_len=max_model_len,
                        tensor_parallel_size=tensor_parallel_size,
                        batch_size=batch_size, seed=seed, adapter=str(resolve(adapter)) if adapter else None, dtype=dtype)
    summary = inference.run_eval_inference(
        model, rows, settings, target, input_file, model_id, start_row=start_row, num_inference=limit,
        num_shards=num_shards, shard_index=shard_index,
        manifest_extra={"dataset_name": dataset_name, "adapter": adapter, "model_name": name,
                        "rows_in_file": len(rows)})
    session = summary["session"]
    print(f"eval-inference: {session['answered']} answers ({session['skipped_chunks']} chunks already done, "
          f"{session['notes_shortened']} notes shortened, {session['length_stops']} cut at the token limit), "
          f"{session['seconds_per_example'] or 0:.3f} s/example -> {target}")

if __name__ == "__main__":
    run(main)
