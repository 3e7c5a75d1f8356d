"""Stage A: the teacher model writes question/answer pairs about each note.

    python a-generate-synthetic-training-data/synthetic-a-create.py --dataset 100000
reads data/mimic/notes_100000.csv.gz and writes
data/synthetic-output/100000/df_{question_type}_{start}_{end}.csv plus manifest.json.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from clinical_distil import synthetic  # noqa: E402
from clinical_distil.cli import run  # noqa: E402
from clinical_distil.engines import Sampling, load_engine  # noqa: E402
from clinical_distil.files import InputError, data_root, resolve  # noqa: E402
from clinical_distil.prompts import DEFAULT_QUESTIONS_PER_TYPE, QUESTION_TYPES  # noqa: E402


def main(model_id: str = "meta-llama/Meta-Llama-3.1-70B-Instruct", dataset: int | str = 100000, start_row: int = 0,
         data_dir: str | None = None, notes_file: str | None = None, output_dir: str | None = None,
         qtypes: str = ",".join(QUESTION_TYPES), questions_per_type: int = DEFAULT_QUESTIONS_PER_TYPE,
         chunk_size: int = 1000, engine: str = "auto", tensor_parallel_size: int | None = None,
         max_model_len: int | None = None, max_tokens: int = 4096, temperature: float = 0.7, top_p: float = 0.95,
         seed: int = 0, limit: int | None = None, structured_output: bool = False, batch_size: int = 16,
         num_shards: int = 1, shard_index: int = 0, overwrite: bool = False,
         dtype: str = "auto", retries: int = 2, retry_frequency_penalty: float = 0.5,
         retry_temperature: float = 0.7) -> None:
    """Generate synthetic question/answer pairs with a teacher model.

    Args:
        model_id: teacher model (hub id on a GPU node, or a local folder).
        dataset: N of data/mimic/notes_{N}.csv(.gz), and the output folder name.
        start_row: first note row to use.
        data_dir: data root (default data/ in the repository, or $CLINICAL_DISTIL_DATA).
        notes_file: notes CSV to read instead of mimic/notes_{dataset}.csv(.gz).
        output_dir: output folder (default {data_dir}/synthetic-output/{dataset}).
        qtypes: comma-separated question types: yes_no, numeric, na-numeric, na-bool.
        questions_per_type: k: yes_no asks 2k (k Yes, k No), numeric up to 10, na-* k each.
        chunk_size: notes per output file (the unit of resuming).
        engine: auto (vLLM when it imports and a GPU is visible), vllm or transformers.
        tensor_parallel_size: GPUs per model for vLLM (default: all visible).
        max_model_len: context length (default: the model's); longer notes are shortened inside the note.
        max_tokens: longest reply in tokens.
        temperature: sampling temperature.
        top_p: nucleus sampling threshold.
        seed: sampling seed.
        limit: use only the first N notes from start_row.
        structured_output: constrain replies to the JSON schema of the question list.
        batch_size: prompts per batch for the transformers engine.
        num_shards: split the chunks over this many jobs (nodes or a Slurm array).
        shard_index: which shard this job runs (0-based).
        overwrite: regenerate chunk files that already exist.
        dtype: model weights and compute: auto (bf16 on a GPU), bfloat16, float16 or float32.
        retries: generate a reply again, up to this many times, when it was cut off (token limit) or
            holds no readable question (with --structured_output: is not one whole JSON value); 0: never.
        retry_frequency_penalty: frequency penalty of the retries (new seed too), against the loops
            that run a small teacher into the token limit.
        retry_temperature: retries sample at least this hot (a greedy retry tends to loop again).
    """
    if min(retries, retry_frequency_penalty, retry_temperature) < 0:
        raise InputError(f"--retries ({retries}), --retry_frequency_penalty ({retry_frequency_penalty}) and "
                         f"--retry_temperature ({retry_temperature}) must be 0 or more")
    root = data_root(data_dir)
    notes_path = resolve(notes_file) if notes_file else synthetic.notes_file(root, dataset)
    question_types = synthetic.check_question_types(qtypes)
    notes, unusable = synthetic.load_notes(notes_path)
    target = resolve(output_dir) if output_dir else root / "synthetic-output" / str(dataset)
    settings = synthetic.StageASettings(
        question_types=question_types, questions_per_type=questions_per_type, chunk_size=chunk_size,
        sampling=Sampling(max_tokens=max_tokens, temperature=temperature, top_p=top_p, seed=seed),
        structured_output=structured_output, overwrite=overwrite, retries=retries,
        retry_frequency_penalty=retry_frequency_penalty, retry_temperature=retry_temperature)
    # the rows and files are checked before a model loads
    synthetic.plan_run(len(notes), settings, target, start_row, limit, num_shards, shard_index)
    teacher = load_engine(model_id, engine=engine, max_model_len=max_model_len,
                          tensor_parallel_size=tensor_parallel_size, batch_size=batch_size, seed=seed, dtype=dtype)
    summary = synthetic.run_stage_a(teacher, notes, settings, target, model_id, start_row=start_row, limit=limit,
                                    num_shards=num_shards, shard_index=shard_index,
                                    manifest_extra={"notes_file": str(notes_path), "notes_in_file": len(notes),
                                                    "unusable_notes": unusable})
    session, counts = summary["session"], summary["session"]["counts"]
    print(f"stage A: {counts.get('requests', 0)} replies in {counts.get('written_files', 0)} new files "
          f"({counts.get('skipped_files', 0)} already done, {unusable} empty notes skipped, "
          f"{counts.get('truncated_notes', 0)} notes shortened; {counts.get('retried_requests', 0)} retried, "
          f"{counts.get('unusable_after_retries', 0)} still unusable) in {session['wall_seconds']:.0f}s, "
          f"{session['output_tokens_per_second'] or 0:.1f} output tokens/s -> {target}")


if __name__ == "__main__":
    run(main)
