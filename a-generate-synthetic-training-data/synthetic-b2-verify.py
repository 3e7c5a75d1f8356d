"""Stage B2 (optional): a verifier model re-answers every item stage B kept; items it disagrees with are flagged.

    python a-generate-synthetic-training-data/synthetic-b2-verify.py                    # the teacher verifies
    python a-generate-synthetic-training-data/synthetic-b2-verify.py --model_id models/other-model --engine vllm
reads synthetic-raw/synth_all_df.csv (stage B's items with their notes), asks each item's question of its note
with the students' answer prompt, and writes synthetic-raw/verification/{model_name}/ (chunk files and manifest;
a rerun resumes) and synthetic-raw/verification.csv (teacher's and verifier's answers, and whether they agree,
numbers compared as numbers). Stage C filters on it with require_verified=True. --help lists every flag.
"""

import json
from pathlib import Path

from clinical_distil import eval_inference, layout, runner, verify
from clinical_distil.cli import run_stage
from clinical_distil.engines import check_engine_options
from clinical_distil.evaluate import read_model_outputs
from clinical_distil.files import (FolderLock, InputError, check_model, check_output_folder, write_csv)
from clinical_distil.prompts import load_templates
from clinical_distil.stages import VerifySettings


def verifier_of(settings: VerifySettings, raw: Path) -> str:
    """The verifier: --model_id, else the teacher stage B recorded (a model, not the reference teacher)."""
    if settings.model_id:
        return settings.model_id
    summary = layout.stage_b_summary_file(raw)
    teacher = json.loads(summary.read_text()).get("teacher", {}).get("model_id") if summary.exists() else None
    if not teacher:
        raise InputError(f"no teacher recorded in {summary}; pass --model_id with the verifier")
    if teacher == "reference":
        raise InputError("the items were written by the reference teacher, which answers from fact sheets, not "
                         "notes; pass --model_id with a verifier model")
    return teacher


def main(settings: VerifySettings) -> None:
    raw = layout.raw_dir(layout.data_root(settings.data_dir))
    items = verify.read_items(raw)
    if str(settings.num_items) != "all":
        items = items.head(int(settings.num_items))
    model_id = verifier_of(settings, raw)
    source = "--model_id" if settings.model_id else f"the verifier (the teacher in {layout.stage_b_summary_file(raw)})"
    check_model(model_id, source)
    adapter = str(layout.resolve(settings.adapter)) if settings.adapter else None
    check_engine_options(settings.engine, settings.dtype, adapter)
    name = settings.model_name or Path(str(model_id).rstrip("/")).name
    target = check_output_folder(layout.verification_dir(raw, name))
    verdicts = layout.verification_file(raw)
    if verdicts.exists() and not settings.overwrite:
        raise InputError(f"{verdicts} exists; pass --overwrite True to verify the items again")
    templates = load_templates(settings.prompt_dir)
    prompts = verify.prompt_table(items, templates)
    run = eval_inference.AnswerRun(settings, layout.VERIFY_INPUT, templates)
    runner.plan_run(len(prompts), run, target, 0, None, settings.num_shards,
                    settings.shard_index)  # chunk files of other items stop here, before the model loads
    target.mkdir(parents=True, exist_ok=True)
    shard = layout.shard_suffix(settings.num_shards, settings.shard_index)
    lock = FolderLock(target, "the verification", name=layout.lock_name(f"answers{shard}"))  # noqa: F841 (held)
    model = eval_inference.answering_engine(settings, model_id, adapter, len(prompts))
    runner.run_chunks(model, prompts, run, target, model_id, num_shards=settings.num_shards,
                      shard_index=settings.shard_index,
                      manifest_extra={"verifier": model_id, "adapter": settings.adapter})
    answered = read_model_outputs(target, layout.VERIFY_INPUT)
    if len(answered) < len(prompts):
        print(f"synthetic-b2-verify: {len(answered)} of {len(prompts)} items answered so far; {verdicts.name} is "
              "written when every shard has run")
        return
    answered = prompts.drop(columns=["prompt"]).merge(answered[["id", "output", "finish_reason"]], on="id",
                                                      how="left", validate="one_to_one")
    table = verify.judge(answered, model_id)
    write_csv(table, verdicts)
    agree = int(table["verifier_agrees"].sum())
    print(f"synthetic-b2-verify: {model_id} agrees with the teacher on {agree} of {len(table)} items "
          f"({agree / len(table):.1%}); by question type: "
          + ", ".join(f"{kind} {share:.0%}" for kind, share in table.groupby("question_type")["verifier_agrees"]
                      .mean().items()) + f" -> {verdicts}")


if __name__ == "__main__":
    run_stage(VerifySettings, main)
