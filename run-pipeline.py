"""The whole job in one command: select notes -> A -> B -> C -> fine-tune -> E merge -> evaluate -> report.

    python run-pipeline.py --config configs/demo.yaml                      (make demo: CPU, bundled samples)
    python run-pipeline.py --teacher meta-llama/Meta-Llama-3.1-70B-Instruct \\
        --student meta-llama/Llama-3.2-1B-Instruct --notes data/mimic/notes_100000.csv.gz
    python run-pipeline.py --config my.yaml --create '{max_tokens: 2048}' --dry_run
Runs the same stage scripts and notebooks one can run by hand, skipping steps whose outputs exist
(rerun the same command to resume), and writes reports/{run}/report.md (+ report.html, figures/).
A stage's own flags go under the stage's name, in the YAML file or as a mapping on the command line.
"""

import inspect
import logging
import sys
from dataclasses import dataclass

from clinical_distil import layout, pipeline, run_settings
from clinical_distil.cli import check_command_line, run
from clinical_distil.driver import StageFailed, check_inputs, run_stages
from clinical_distil.files import InputError
from clinical_distil.settings import Settings, setting


@dataclass
class DriverFlags(Settings):
    """What to run of the job; the job's settings follow."""

    config: str | None = setting(None, "YAML file of settings (the flags below); flags given on the command line "
                                 "win")
    from_stage: str | None = setting(None, f"first stage to run, one of {', '.join(layout.RUN_STAGES)}")
    to_stage: str | None = setting(None, "last stage to run")
    overwrite: bool = setting(False, "redo the selected stages even where their outputs exist")
    dry_run: bool = setting(False, "print each step's command and whether it would run; run nothing")


@dataclass
class Flags(DriverFlags, run_settings.RunSettings):
    """Every flag of run-pipeline.py."""


def main(**values) -> None:
    driver = {name: values.pop(name, None) for name in DriverFlags.names()}
    flags = DriverFlags.from_values({name: value for name, value in driver.items() if value is not None})
    selected = pipeline.stage_range(flags.from_stage, flags.to_stage)
    settings = run_settings.RunSettings.from_sources(flags.config, **values)
    run_layout = run_settings.layout_for(settings)
    cuda_devices = 0
    if settings.num_gpus is None and "finetune" in selected:
        import torch

        cuda_devices = torch.cuda.device_count()
    stages = pipeline.plan(run_layout, overwrite=flags.overwrite, cuda_devices=cuda_devices)
    try:
        check_inputs(run_layout, stages, selected, overwrite=flags.overwrite)
    except InputError as error:
        if not flags.dry_run:
            raise
        print(f"warning: {error}", file=sys.stderr)  # a dry run shows the commands all the same
    print(f"run {run_layout.run}: stages {selected[0]} to {selected[-1]}, data root {run_layout.root}, "
          f"report {run_layout.report_dir}")
    from clinical_distil.report import write_report

    try:
        run_stages(run_layout, stages, selected, overwrite=flags.overwrite, announce=print,
                   write_report=write_report, dry_run=flags.dry_run)
    except StageFailed as failure:
        print(f"error: {failure}", file=sys.stderr)
        sys.exit(2 if failure.returncode == 2 else 1)
    if not flags.dry_run and "report" in selected:
        print(f"report: {run_layout.report_dir / 'report.md'} (and report.html)")


# fire reads the signature for parsing and --help: every flag a keyword argument, its help in the docstring;
# a flag left at its default is not passed on, so the config file's value stands
main.__signature__ = inspect.Signature([parameter.replace(default=None)
                                        for parameter in Flags.signature().parameters.values()])
main.__doc__ = (f"Run the distillation pipeline end to end (or --from_stage/--to_stage a range of it).\n\n"
                f"Args:\n{Flags.help_lines()}\n")

if __name__ == "__main__":
    logging.getLogger("clinical_distil").setLevel(logging.INFO)
    arguments = sys.argv[1:]
    run(main, name="run-pipeline.py", argv=arguments,
        check=None if any(word in ("--help", "-h") for word in arguments) else
        lambda: check_command_line(Flags, arguments))
