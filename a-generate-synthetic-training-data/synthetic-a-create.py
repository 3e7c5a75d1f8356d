"""Stage A: the teacher model writes question/answer pairs about each note.

    python a-generate-synthetic-training-data/synthetic-a-create.py --dataset 100000
reads data/mimic/notes_100000.csv.gz and writes data/synthetic-output/100000/df_{question_type}_{start}_{end}.csv
plus manifest.json. --help lists every flag.
"""

from clinical_distil import create, layout, runner
from clinical_distil.backends import load_engine, plugged_engine
from clinical_distil.cli import run_stage
from clinical_distil.engines import check_engine_options, load_tokenizer, vllm_start_mode
from clinical_distil.files import FolderLock, InputError, check_model, check_output_folder
from clinical_distil.prompts import load_templates
from clinical_distil.stages import CreateSettings


def main(settings: CreateSettings) -> None:
    root = layout.data_root(settings.data_dir)
    notes_path = layout.resolve(settings.notes_file) if settings.notes_file else create.notes_file(
        root, settings.dataset)
    notes, unusable = create.load_notes(notes_path)
    target = check_output_folder(layout.resolve(settings.output_dir) if settings.output_dir else
                                 layout.chunks_dir(root, settings.dataset))
    stage = create.CreateRun(settings, load_templates(settings.prompt_dir))
    # the rows and files are checked before a model loads
    stop = runner.plan_run(len(notes), stage, target, settings.start_row, settings.limit, settings.num_shards,
                           settings.shard_index).stop
    asked = notes["text"].iloc[settings.start_row:stop].map(create.is_usable_note).sum()
    if not asked and not settings.allow_empty:
        raise InputError(f"{notes_path} has no note to ask about in rows {settings.start_row}-{stop - 1} "
                         f"({len(notes)} rows, {unusable} of them empty); pass --allow_empty to accept that")
    plugged = plugged_engine(settings.model_id)
    if plugged is not None:  # an engine that is no model (clinical_distil.engines entry points), e.g. reference
        teacher = plugged(notes_path, notes.iloc[settings.start_row:stop], settings.seed)
    else:
        check_model(settings.model_id)
        check_engine_options(settings.engine, settings.dtype)
        tokenizer = load_tokenizer(settings.model_id) if settings.max_model_len else None
        if tokenizer is not None:  # the prompts against the context asked for, with the tokenizer alone
            create.check_context(tokenizer, notes.iloc[settings.start_row:stop], stage, settings.max_model_len)
    lock = FolderLock(target, "stage A's files",  # noqa: F841 (held to the end); one per shard
                      name=layout.lock_name(f"stage-a{layout.shard_suffix(settings.num_shards, settings.shard_index)}"))
    if plugged is None:
        # one prompt per note and question type; a few notes are not worth vLLM's compile (--vllm_compile auto)
        prompts = -(-int(asked) // settings.num_shards) * len(settings.qtypes.split(","))
        teacher = load_engine(settings.model_id, engine=settings.engine, max_model_len=settings.max_model_len,
                              tensor_parallel_size=settings.tensor_parallel_size, batch_size=settings.batch_size,
                              seed=settings.seed, dtype=settings.dtype,
                              start_mode=vllm_start_mode(settings.vllm_compile, prompts, settings.max_tokens))
    summary = runner.run_chunks(teacher, notes, stage, target, settings.model_id, start_row=settings.start_row,
                                limit=settings.limit, num_shards=settings.num_shards, shard_index=settings.shard_index,
                                manifest_extra={"notes_file": str(notes_path), "notes_in_file": len(notes),
                                                    "unusable_notes": unusable, "prompt_dir": settings.prompt_dir,
                                                    **getattr(teacher, "manifest", {"teacher": "language model"})})
    session, counts = summary["session"], summary["session"]["counts"]
    print(f"stage A: {counts.get('requests', 0)} replies in {counts.get('written_files', 0)} new files "
          f"({counts.get('skipped_files', 0)} already done, {unusable} empty notes skipped, "
          f"{counts.get('truncated_notes', 0)} notes shortened; {counts.get('retried_requests', 0)} retried, "
          f"{counts.get('unusable_after_retries', 0)} still unusable) in {session['wall_seconds']:.0f}s, "
          f"{session['output_tokens_per_second'] or 0:.1f} output tokens/s -> {target}")


if __name__ == "__main__":
    run_stage(CreateSettings, main)
