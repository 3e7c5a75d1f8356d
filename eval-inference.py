"""Batch inference of a model over an evaluation set (eval-data/{dataset}/{input_file}.csv).

    python eval-inference.py --model_id models/llama-3.2-1b-distilled --dataset_name i2b2 --input_file test
    python eval-inference.py --model_id meta-llama/Llama-3.2-1B --adapter results/RUN/final --model_name distilled-1b
    python eval-inference.py --model_id models/RUN-distilled --dataset_name i2b2,apixaban --input_file test,prompts
    python eval-inference.py --model_id meta-llama/Llama-3.2-1B --adapter results/RUN/final --model_name RUN-distilled \\
        --base_model_name RUN-base --dataset_name i2b2,apixaban --input_file test,prompts
writes outputs/{dataset}/{model_name}/{input_file}_{start}_{rows}_chunk_{i}.csv (input rows + output,
finish_reason, token counts) and manifest_{input_file}.json, under the data root; several datasets, and the base
model beside its adapter (--base_model_name), are answered one after another with one model load (vLLM starts
once). --help lists every flag.
"""

from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from clinical_distil import eval_inference, layout, runner
from clinical_distil.backends import plugged_engine
from clinical_distil.cli import run_stage
from clinical_distil.engines import check_engine_options, load_tokenizer
from clinical_distil.files import FolderLock, InputError, check_model, check_output_folder
from clinical_distil.prompts import load_templates
from clinical_distil.stages import EvalInferenceSettings

if TYPE_CHECKING:
    import pandas as pd


class Job(NamedTuple):
    """One model's answers to one dataset: where they go and how many rows this shard answers."""

    dataset: str
    run: eval_inference.AnswerRun  # the answering run over the eval file
    limit: int | None
    rows: "pd.DataFrame"  # the eval file's rows
    target: Path  # the answers' folder
    share: int  # this shard's rows, for the engine's choice of compiling (--vllm_compile auto)
    name: str
    with_adapter: bool


def main(settings: EvalInferenceSettings) -> None:
    root = layout.data_root(settings.data_dir)
    templates = load_templates(settings.prompt_dir)
    # (folder name, with the adapter) of each model that answers: the adapter's answers, then the base model's
    models = [(settings.answer_name, True)] + ([(settings.base_model_name, False)] if settings.base_model_name else [])
    # every dataset's rows and files are checked before the model loads (once, for all of them)
    jobs, asked = [], []
    for dataset, input_file, limit in settings.jobs:
        source = layout.eval_file(root, dataset, input_file)
        rows = eval_inference.load_eval_rows(source, dataset)
        run = eval_inference.AnswerRun(settings, input_file, templates)
        asked += list(rows["prompt"].iloc[settings.start_row:None if limit is None else settings.start_row + limit])
        for name, with_adapter in models:
            target = check_output_folder(layout.resolve(settings.output_dir) if settings.output_dir else
                                         layout.model_outputs(root, dataset, name))
            stop = runner.plan_run(len(rows), run, target, settings.start_row, limit, settings.num_shards,
                                   settings.shard_index).stop
            if stop <= settings.start_row and not settings.allow_empty:
                raise InputError(f"{source} has no row to answer from row {settings.start_row} ({len(rows)} rows); "
                                 "pass --allow_empty to accept that")
            share = -(-max(0, stop - settings.start_row) // settings.num_shards)
            jobs.append(Job(dataset, run, limit, rows, target, share, name, with_adapter))
    plugged = plugged_engine(settings.model_id)  # an engine that is no model: the text-only rules as a classifier
    if plugged is not None and (settings.adapter or settings.base_model_name):
        raise InputError(f"--model_id {settings.model_id} is no model: it takes no --adapter or --base_model_name")
    adapter = str(layout.resolve(settings.adapter)) if settings.adapter else None
    if plugged is None:
        check_model(settings.model_id)
        check_engine_options(settings.engine, settings.dtype, adapter)
        tokenizer = load_tokenizer(settings.model_id) if settings.max_model_len else None
        if tokenizer is not None:  # the prompts against the context asked for, with the tokenizer alone
            eval_inference.check_context(tokenizer, asked, settings.max_model_len, settings.max_output_tokens,
                                         templates)
    shard = layout.shard_suffix(settings.num_shards, settings.shard_index)
    locks = [FolderLock(job.target, "the answers", name=layout.lock_name(f"answers{shard}"))  # noqa: F841 (held)
             for job in jobs]
    model = plugged(None, jobs[0].rows, settings.seed) if plugged is not None else \
        eval_inference.answering_engine(settings, settings.model_id, adapter, sum(job.share for job in jobs))
    base_model = model.base_only() if settings.base_model_name else None
    for dataset, run, limit, rows, target, _, name, with_adapter in jobs:
        summary = runner.run_chunks(
            model if with_adapter else base_model, rows, run, target, settings.model_id,
            start_row=settings.start_row, limit=limit, num_shards=settings.num_shards, shard_index=settings.shard_index,
            manifest_extra={"dataset_name": dataset, "adapter": settings.adapter if with_adapter else None,
                            "model_name": name, "rows_in_file": len(rows), "prompt_dir": settings.prompt_dir})
        session = summary["session"]
        print(f"eval-inference: {session['answered']} answers ({session['skipped_chunks']} chunks already done, "
              f"{session['notes_shortened']} notes shortened, {session['length_stops']} cut at the token limit), "
              f"{session['seconds_per_example'] or 0:.3f} s/example"
              + (f", {session['worked_examples_shown']} worked examples shown" if settings.worked_examples else "")
              + f" -> {target}")


if __name__ == "__main__":
    run_stage(EvalInferenceSettings, main)
