"""Stage E: merge a fine-tuned LoRA adapter into its base model and save a deployable folder.

    python a-generate-synthetic-training-data/synthetic-e-convert-peft.py \\
        --adapter_dir results/Llama-3.2-1B_all_1_8_16/final --output_dir models/llama-3.2-1b-distilled
The base is loaded unquantized, the adapter folded in, the merge checked in float32 against base +
adapter, and the result saved in --dtype with the tokenizer and chat template, written beside --output_dir and
renamed into place. An existing --output_dir is replaced only when it holds an earlier merge (its merge.json) and
--overwrite is given; a fine-tuning run's folder, or any other, is refused. --help lists every flag.
"""

from pathlib import Path

from clinical_distil import convert_peft, layout
from clinical_distil.cli import run_stage
from clinical_distil.files import FolderLock, InputError, model_location
from clinical_distil.stages import ConvertPeftSettings


def main(settings: ConvertPeftSettings) -> None:
    adapter = layout.resolve(settings.adapter_dir)
    convert_peft.check_adapter(adapter)
    inside_run = adapter == layout.final_adapter(adapter.parent) or adapter.match(layout.CHECKPOINT_GLOB)
    name = adapter.parent.name if inside_run else adapter.name
    target = layout.resolve(settings.output_dir) if settings.output_dir else layout.merged_model(
        layout.MODELS, f"{name}-merged")
    # everything the merge could fail on or destroy is checked before a model loads
    convert_peft.check_merge_target(target, settings.overwrite)
    base = convert_peft.merge_base(adapter, settings.base_model_id)
    for what, path in (("the adapter", adapter), ("the base model", Path(model_location(base)))):
        if path == target or target in path.parents:
            raise InputError(f"{what} {path} lies inside --output_dir {target}, which the merge would replace; "
                             "give another --output_dir")
    lock = FolderLock(target.parent, "the merged model", name=layout.lock_name(target.name))  # noqa: F841 (held)
    report = convert_peft.merge_adapter(adapter, target, base_model_id=base, dtype=settings.dtype,
                                   overwrite=settings.overwrite)
    print(f"merged {report['adapter']} into {report['base_model']} -> {target} "
          f"(float32 check: max next-token logit difference {report['max_logit_difference']:.2e} <= "
          f"{report['tolerance']})")


if __name__ == "__main__":
    run_stage(ConvertPeftSettings, main)
