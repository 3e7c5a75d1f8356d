"""Ask a distilled model a criteria file's questions of every note: grounded answers, patient and cohort tables.

    python extract.py --criteria criteria/n2c2-2018.yaml --notes data/samples/n2c2-2018-track1/test \
        --model_id models/SmolLM2-135M-Instruct
    python extract.py --criteria my_criteria.csv --notes data/mimic/NOTEEVENTS.csv.gz --model_id models/RUN-merged \
        --num_notes 1000 --engine vllm
writes into {data_dir}/outputs/extract/{model_name}_{criteria}/ (or --output_dir): prompts.csv and the answers'
chunk files of 1,000 answers with their manifest (a rerun resumes; once every answer is there, a rerun writes
the tables again without loading the model), answers.csv (one row per note x criterion: answer, met by the
rule or off-type, the quote with its offsets in the note, sections), patients.csv (met / not met per patient
and criterion, from which note, and whether on no quote found in a note), cohort.csv (patients meeting each
criterion and all of them), review.html (a self-contained page for checking each answer against its
highlighted quote) and extraction.json (sources, counts, seconds and GPU-hours per 1,000 notes).
--require_grounded_quote counts a patient as meeting a criterion only on a quote found in the note. --help
lists every flag.
"""

import json
import time
from pathlib import Path

from clinical_distil import eval_inference, extract, layout, runner
from clinical_distil.chunks import package_versions
from clinical_distil.cli import run_stage
from clinical_distil.criteria import read_criteria
from clinical_distil.engines import check_engine_options
from clinical_distil.evaluate import read_model_outputs
from clinical_distil.files import (
    FolderLock,
    InputError,
    atomic_group,
    check_model,
    check_output_folder,
    read_csv,
    write_csv,
    write_text,
)
from clinical_distil.prompts import load_templates
from clinical_distil.stages import ExtractSettings


def main(settings: ExtractSettings) -> None:
    started = time.time()
    criteria = read_criteria(layout.resolve(settings.criteria))
    limit = None if str(settings.num_notes) == "all" else int(settings.num_notes)
    notes, kind = extract.read_notes(layout.resolve(settings.notes), limit)
    check_model(settings.model_id)
    adapter = str(layout.resolve(settings.adapter)) if settings.adapter else None
    check_engine_options(settings.engine, settings.dtype, adapter)
    name = settings.model_name or Path(str(settings.adapter or settings.model_id).rstrip("/")).name
    target = check_output_folder(layout.resolve(settings.output_dir) if settings.output_dir else layout.extraction_dir(
        layout.data_root(settings.data_dir), name, Path(settings.criteria).stem))
    templates = load_templates(settings.prompt_dir)
    prompts = extract.prompt_table(notes, criteria, templates)
    prompt_file = target / f"{layout.EXTRACTION_PROMPTS}.csv"
    if prompt_file.exists() and not settings.overwrite:
        earlier = read_csv(prompt_file, keep_default_na=False, dtype=str)
        if list(earlier.columns) != extract.PROMPT_COLUMNS or \
                extract.prompts_digest(earlier) != extract.prompts_digest(prompts):
            raise InputError(f"{target} holds the answers to other questions or notes; give another --output_dir, "
                             "or --overwrite to answer again there")
    run = eval_inference.AnswerRun(settings, layout.EXTRACTION_PROMPTS, templates)
    # a mismatch of chunk files stops here, before the model loads
    todo = runner.plan_run(len(prompts), run, target, 0, None, settings.num_shards, settings.shard_index).tasks
    target.mkdir(parents=True, exist_ok=True)
    lock = FolderLock(target, "this extraction",  # noqa: F841 (held to the end)
                      name=layout.lock_name(f"answers{layout.shard_suffix(settings.num_shards, settings.shard_index)}"))
    if settings.overwrite or not prompt_file.exists():
        write_csv(prompts, prompt_file)
    manifest = runner.manifest_path(run, target, settings.num_shards, settings.shard_index)
    if not todo:  # every answer of this shard is on disk: the tables need no model (e.g. another grounding setting)
        answered = json.loads(manifest.read_text()) if manifest.exists() else {}
        engine = answered.get("engine")
    else:
        model = eval_inference.answering_engine(settings, settings.model_id, adapter, len(prompts))
        answered = runner.run_chunks(
            model, prompts, run, target, settings.model_id, num_shards=settings.num_shards,
            shard_index=settings.shard_index,
            manifest_extra={"adapter": settings.adapter, "model_name": name, "criteria": str(settings.criteria),
                            "notes": str(settings.notes)})
        engine = model.name
    rows = read_model_outputs(target, layout.EXTRACTION_PROMPTS)
    if len(rows) < len(prompts):  # other shards still to run: the tables wait for all answers
        print(f"extract.py: {len(rows)} of {len(prompts)} answers so far (shard {settings.shard_index} of "
              f"{settings.num_shards} done); the tables are written when every shard has run -> {target}")
        return
    rows = prompts[["id", "patient", "note_id", "criterion", "question"]].merge(
        rows[["id", "output", "finish_reason", "note_truncated"]], on="id", how="left", validate="one_to_one")
    answers = extract.answer_table(rows, notes, criteria, settings.fuzzy_threshold)
    patients = extract.patient_table(answers, criteria, settings.require_grounded_quote)
    cohort = extract.cohort_table(patients, criteria)
    title = f"{Path(settings.criteria).name} on {Path(settings.notes).name}, answered by {name}"
    page = extract.review_page(extract.review_data(answers, notes, criteria, title, patients,
                                                         settings.require_grounded_quote))
    seconds = answered.get("wall_seconds")
    ungrounded = patients[patients["met_ungrounded"]]
    summary = {
        "criteria": str(settings.criteria), "criteria_count": len(criteria), "notes": str(settings.notes),
        "notes_kind": kind, "note_count": len(notes), "patients": int(notes["patient"].nunique()),
        "answers": len(answers), "model_id": settings.model_id, "adapter": settings.adapter, "engine": engine,
        "gpus": answered.get("gpus", 0), "answer_seconds": seconds,
        **eval_inference.cost(seconds, len(notes), int(notes["patient"].nunique()), answered.get("gpus", 0)),
        "quotes": answers["quote_in_note"].value_counts().to_dict(),
        "unparsed_answers": int((answers["answer"] == "").sum()),
        "off_type_answers": int((answers["met"] == extract.OFF_TYPE).sum()),
        "require_grounded_quote": settings.require_grounded_quote,
        # patient x criterion decisions met by the rule on no note whose quote is found in it
        "met_ungrounded": len(ungrounded),
        "met_ungrounded_by_criterion": {criterion.id: int((ungrounded["criterion"] == criterion.id).sum())
                                        for criterion in criteria if criterion.rule is not None},
        "prompts_digest": extract.prompts_digest(prompts), "versions": package_versions(),
        "seconds": round(time.time() - started, 1),
    }
    files = [target / layout.EXTRACTION_FILES[key] for key in ("answers", "patients", "cohort", "review", "manifest")]
    with atomic_group(files) as staged:  # the tables and the page appear together, or none of them
        write_csv(answers, staged[0])
        write_csv(patients, staged[1])
        write_csv(cohort, staged[2])
        write_text(page, staged[3])
        write_text(json.dumps(summary, indent=2) + "\n", staged[4])
    met = cohort.iloc[-1]
    everyone = f"; {met['patients']} of {met['of']} patients meet all criteria with a rule" \
        if met["criterion"] == "all criteria with a rule" else ""
    counted = "not counted as met: --require_grounded_quote" if settings.require_grounded_quote else \
        "counted as met; --require_grounded_quote leaves them out"
    pace = "" if summary["seconds_per_note"] is None else f", {summary['seconds_per_note']:.3f} s/note"
    print(f"extract.py: {len(answers)} answers for {len(notes)} notes x {len(criteria)} criteria "
          f"({summary['quotes'].get('none', 0)} quotes not found in the note, {summary['unparsed_answers']} "
          f"unparsed, {summary['off_type_answers']} off-type); {len(ungrounded)} patient x criterion decisions "
          f"rest on no quote found in a note ({counted}){everyone}{pace} -> {target}")


if __name__ == "__main__":
    run_stage(ExtractSettings, main)
