"""The whole job in one command: select notes -> A -> B -> C -> fine-tune -> E merge -> evaluate -> report.

    python run-pipeline.py --config configs/demo.yaml                      (make demo: CPU, bundled samples)
    python run-pipeline.py --teacher meta-llama/Meta-Llama-3.1-70B-Instruct \\
        --student meta-llama/Llama-3.2-1B-Instruct --notes data/mimic/notes_100000.csv.gz
Runs the same stage scripts and notebooks one can run by hand, skipping steps whose outputs exist
(rerun the same command to resume), and writes reports/{run}/report.md (+ report.html, figures/).
"""

import logging
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from clinical_distil import pipeline  # noqa: E402
from clinical_distil.cli import run  # noqa: E402


def main(config: str | None = None, from_stage: str | None = None, to_stage: str | None = None,
         overwrite: bool = False, dry_run: bool = False, **settings) -> None:
    started_stages = pipeline.stage_range(from_stage, to_stage)
    chosen = pipeline.PipelineSettings.from_sources(config, **settings)
    layout = pipeline.layout_for(chosen)
    cuda_devices = 0
    if chosen.num_gpus is None and "finetune" in started_stages:
        import torch

        cuda_devices = torch.cuda.device_count()
    stages = pipeline.plan(layout, overwrite=overwrite, cuda_devices=cuda_devices)
    print(f"run {layout.run}: stages {started_stages[0]} to {started_stages[-1]}, data root {layout.root}, "
          f"report {layout.report_dir}")
    from clinical_distil.report import write_report

    try:
        pipeline.run_stages(layout, stages, started_stages, overwrite=overwrite, announce=print,
                            write_report=write_report, dry_run=dry_run)
    except pipeline.StageFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        sys.exit(2 if failure.returncode == 2 else 1)
    if not dry_run and "report" in started_stages:
        print(f"report: {layout.report_dir / 'report.md'} (and report.html)")


main.__doc__ = f"""Run the distillation pipeline end to end (or --from_stage/--to_stage a range of it).

Args:
    config: YAML file of settings (the flags below); flags given on the command line win.
    from_stage: first stage to run, one of {', '.join(pipeline.STAGES)}.
    to_stage: last stage to run.
    overwrite: redo the selected stages even where their outputs exist.
    dry_run: print each step's command and whether it would run, run nothing.
{pipeline.describe_settings()}
"""

# fire reads the signature for parsing and --help: name every setting as a keyword argument
main.__signature__ = pipeline.signature_with_settings(main)

if __name__ == "__main__":
    logging.getLogger("clinical_distil").setLevel(logging.INFO)
    run(main)
