"""Running run-pipeline.py's plan: its inputs checked, each due step's command run to its end, the run recorded.

Every command runs as a child process under clinical_distil.guard, so it ends with the driver however the
driver ends; the driver holds the run's lock, times each stage (an interrupted run's time included) and
keeps `reports/{run}/run.json` up to date, which the report reads.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from clinical_distil.files import FolderLock, InputError, check_model, write_text
from clinical_distil.backends import is_plugged
from clinical_distil.guard import GRACE_SECONDS
from clinical_distil.layout import REPO_ROOT, RunLayout
from clinical_distil.pipeline import Command, Stage, Step, batches
from clinical_distil.report import read_run_state
from clinical_distil.run_settings import RunSettings, eval_raw_dir
from clinical_distil.tasks import get_task

log = logging.getLogger(__name__)


def check_inputs(run_layout: RunLayout, stages: list[Stage], selected: list[str], overwrite: bool = False) -> None:
    """Before the first stage runs: every model, evaluation folder and prompt folder that a stage still to run
    will read, so that a missing one is named now and not after hours of teacher generation."""
    settings: RunSettings = run_layout.settings["run"]
    due = {stage.name for stage in stages if stage.name in selected and stage.steps and
           (overwrite or not stage.finished())}
    if settings.prompt_dir:
        from clinical_distil.prompts import load_templates

        load_templates(settings.prompt_dir)
    # engines that are no model (the reference teacher): nothing to look for on disk
    if "create" in due and not is_plugged(settings.teacher):
        check_model(settings.teacher, "teacher")
    verifier = run_layout.settings["verify"].model_id or settings.teacher
    if "verify" in due and not is_plugged(verifier):
        check_model(verifier, "verifier")
    if due & {"prep_training", "finetune", "eval_inference"}:
        check_model(settings.student, "student")
    if due & {"prep_training", "preprocess"}:
        for task in run_layout.tasks:
            folder = eval_raw_dir(settings, task, run_layout.root)
            wanted = [folder] + ([folder / run_layout.eval_files[task]] if get_task(task).labelled_splits else [])
            missing = next((path for path in wanted if not path.is_dir()), None)
            if missing is not None:
                raise InputError(f"evaluation data of {task} not found: {missing} is not a folder; set eval: "
                                 f"{{{task}: {{input_dir: DIR}}}} or leave {task} out of tasks")


def notebook_error(executed: Path) -> tuple[str, str] | None:
    """(exception name, message) of the cell that stopped an executed notebook, if any."""
    try:
        cells = json.loads(executed.read_text())["cells"]
    except (OSError, ValueError, KeyError):
        return None
    for cell in cells:
        for output in cell.get("outputs", []):
            if output.get("output_type") == "error":
                message = str(output.get("evalue", "")).strip()
                return output.get("ename", ""), message.splitlines()[0] if message else ""
    return None


def done_line(prefix: str, seconds: float, earlier: float, run_seconds: float) -> str:
    """A finished stage's line: its time in this run, the interrupted runs' time apart (a stage resumed has
    taken longer than this run has lasted), and this run's time so far."""
    if earlier:
        return (f"{prefix}: done in {seconds:.1f}s, {earlier + seconds:.1f}s with the interrupted run(s) before "
                f"(this run so far {run_seconds:.0f}s)")
    return f"{prefix}: done in {seconds:.1f}s (this run so far {run_seconds:.0f}s)"


HEARTBEAT_SECONDS = 15.0  # how often run.json records a running stage's time (a killed driver loses less)


def _run_child(command: Command, env: dict[str, str], heartbeat: Callable[[], Any],
               stderr: Any = None, keep_fds: tuple[int, ...] = ()) -> int:
    """Run one step's command to its end, calling `heartbeat` every HEARTBEAT_SECONDS; its exit code.

    The command runs under clinical_distil.guard, so it (and all it starts) ends with the driver,
    however the driver ends. The guard has a session of its own: a scheduler that SIGKILLs the driver's
    whole process group at a time limit kills the driver, not the guard, which then stops the step.
    `keep_fds` (the run's lock) stay open in the guard, so a rerun waits until the step has stopped.
    """
    process = subprocess.Popen([sys.executable, "-m", "clinical_distil.guard", *command.argv], env=env, cwd=REPO_ROOT,
                               stderr=stderr, start_new_session=True, pass_fds=keep_fds)
    try:
        while True:
            try:
                return process.wait(timeout=HEARTBEAT_SECONDS)
            except subprocess.TimeoutExpired:
                heartbeat()
    except BaseException as stopped:
        # outside the terminal's process group the guard does not see Ctrl-C: pass it on (the step stops
        # and keeps what it finished), or SIGTERM for anything else that ends the driver
        with contextlib.suppress(ProcessLookupError):
            process.send_signal(signal.SIGINT if isinstance(stopped, KeyboardInterrupt) else signal.SIGTERM)
        try:
            process.wait(timeout=GRACE_SECONDS + 10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        raise


class StageFailed(Exception):
    def __init__(self, stage: str, step: str, returncode: int, reason: str = ""):
        why = f": {reason}" if reason else f" (exit code {returncode}); the message above says why"
        super().__init__(f"stage {stage} failed at '{step}'{why}. Finished work is kept: fix it and rerun the same "
                         "command to resume")
        self.returncode = returncode


@dataclass
class _Session:
    """What the stages of one driver session share: the run's state (run.json), the environment its commands run
    in, the run's lock (None in a dry run), where lines go and when the session started."""

    state: dict[str, Any]
    state_path: Path
    env: dict[str, str]
    lock: FolderLock | None
    announce: Callable[[str], None]
    started: float

    def save(self) -> None:
        write_text(json.dumps(self.state, indent=2, default=str) + "\n", self.state_path)


def _open_session(run_layout: RunLayout, announce: Callable[[str], None], dry_run: bool) -> _Session:
    """run.json as earlier sessions left it, with this run's settings, data root, notes and dataset; the run's lock."""
    state_path = run_layout.report_dir / "run.json"
    state = read_run_state(state_path)
    state["run"] = run_layout.run
    state["settings"] = {name: (value.changed() if name != "run" else value.values())
                         for name, value in run_layout.settings.items()}
    state["data_root"] = str(run_layout.root)
    state["notes_file"] = str(run_layout.notes_file)
    state["dataset"] = run_layout.dataset
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    lock = None
    if not dry_run:
        # one driver per run; a killed driver's step may still be stopping (its guard holds the lock until then)
        lock = FolderLock(run_layout.report_dir, advice="give this run another --run name",
                          wait_seconds=GRACE_SECONDS + 10)
        (run_layout.report_dir / "notebooks").mkdir(exist_ok=True)  # papermill writes executed copies there
    return _Session(state, state_path, env, lock, announce, time.time())


def _write_report(session: _Session, run_layout: RunLayout, prefix: str, record: dict[str, Any],
                  write_report: Callable[[RunLayout], Any] | None, dry_run: bool) -> None:
    if dry_run:
        session.announce(f"{prefix}: would write {run_layout.report_dir / 'report.md'}")
        return
    stage_started = time.time()
    record.update(status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"))
    session.save()  # the report reads the stage times from run.json
    if write_report is not None:
        write_report(run_layout)
    record.update(status="ran", seconds=round(time.time() - stage_started, 1))
    session.save()
    session.announce(f"{prefix}: {run_layout.report_dir / 'report.md'} ({record['seconds']:.1f}s)")


def _announce_commands(session: _Session, prefix: str, stage: Stage, todo: list[Step], commands: dict[str, Command],
                       due: list[tuple[list[Step], Command]]) -> None:
    """A dry run's lines: each finished step, and each command that would run."""
    for step in stage.steps:
        if step not in todo:
            session.announce(f"{prefix} [done] {step.label}: {step.command.shell()}")
    for members, command in due:
        stale = any(commands[step.label] is step.stale_command for step in members)
        note = " (stale: an input changed since it ran)" if stale else ""
        session.announce(f"{prefix} [run ] {' + '.join(step.label for step in members)}{note}: {command.shell()}")


def _run_command(session: _Session, stage: Stage, prefix: str, record: dict[str, Any], members: list[Step],
                 command: Command, commands: dict[str, Command], elapsed: Callable[[], float]) -> None:
    """One command of a stage (the due steps it runs) to its end, recorded in run.json; StageFailed if it fails."""
    label = " + ".join(step.label for step in members)
    for step in members:
        if commands[step.label] is step.stale_command:
            session.announce(f"{prefix}: '{step.label}' is older than its inputs; redoing it with --overwrite")
    step_started = time.time()
    log.info("%s: %s", label, command.shell())
    # a notebook's own traceback (papermill's, 50 lines) is shown only when it is not bad input
    captured = tempfile.TemporaryFile(mode="w+") if command.executed_notebook else None
    lock = session.lock
    try:
        returncode = _run_child(command, {**session.env, **command.env}, heartbeat=lambda: (
            record.update(seconds=elapsed()), session.save()), stderr=captured,
            keep_fds=(lock.handle.fileno(),) if lock.handle is not None else ())
    except KeyboardInterrupt:
        record.update(status="interrupted", seconds=elapsed())
        session.save()
        raise
    for step in members:  # steps run together share their command and its seconds
        record["steps"][step.label] = {"command": command.shell(), "returncode": returncode,
                                       "seconds": round(time.time() - step_started, 1)}
    if returncode != 0:
        record.update(status="failed", seconds=elapsed())
        session.save()
        reason = ""
        error = notebook_error(command.executed_notebook) if command.executed_notebook else None
        if error:
            reason = f"{error[1]} (in {command.executed_notebook})"
            returncode = 2 if error[0] == "InputError" else returncode  # bad input, as the scripts say
        if captured is not None and returncode != 2:
            captured.seek(0)
            sys.stderr.write(captured.read())
        raise StageFailed(stage.name, label, returncode, reason)
    if captured is not None:
        captured.close()


def _run_stage(session: _Session, stage: Stage, prefix: str, record: dict[str, Any], todo: list[Step],
               commands: dict[str, Command], due: list[tuple[list[Step], Command]]) -> None:
    """A stage's due commands in order, its time in run.json (an interrupted run's seconds included)."""
    session.announce(f"{prefix}: {len(todo)} of {len(stage.steps)} step(s) to run")
    # an interrupted stage's seconds count towards the stage; a finished one redone starts again
    resumed = record.get("status") in ("running", "failed", "interrupted")
    earlier = float(record.get("seconds") or 0) if resumed else 0.0
    stage_started = time.time()
    record.update(status="running", started=time.strftime("%Y-%m-%d %H:%M:%S"), steps=record.get("steps", {}),
                  seconds=round(earlier, 1))
    session.save()

    def elapsed() -> float:
        return round(earlier + time.time() - stage_started, 1)

    for members, command in due:
        _run_command(session, stage, prefix, record, members, command, commands, elapsed)
    record.update(status="ran", seconds=elapsed())
    session.save()
    session.announce(done_line(prefix, time.time() - stage_started, earlier, time.time() - session.started))


def run_stages(run_layout: RunLayout, stages: list[Stage], selected: list[str], overwrite: bool = False,
               announce: Callable[[str], None] = print, write_report: Callable[[RunLayout], Any] | None = None,
               dry_run: bool = False) -> dict[str, Any]:
    """Run the selected stages in order, skipping finished steps; returns the run state."""
    session = _open_session(run_layout, announce, dry_run)
    try:
        for position, stage in enumerate(stages, start=1):
            prefix = f"[{position}/{len(stages)}] {stage.name}"
            if stage.name not in selected:
                continue
            record = session.state["stages"].setdefault(stage.name, {})
            if not stage.steps:
                announce(f"{prefix}: nothing to do ({stage.note})")
                record.update(status=stage.idle, note=stage.note)
                continue
            if stage.name == "report":
                _write_report(session, run_layout, prefix, record, write_report, dry_run)
                continue
            todo = [step for step in stage.steps if overwrite or not step.finished()]
            if not todo:
                announce(f"{prefix}: skipped, outputs exist" +
                         (f" (ran in {record['seconds']:.0f}s earlier)" if record.get("seconds") else ""))
                record["status"] = "skipped"
                continue
            commands = {step.label: step.command_to_run(overwrite) for step in todo}
            due = batches(todo, commands, overwrite)
            if dry_run:
                _announce_commands(session, prefix, stage, todo, commands, due)
            else:
                _run_stage(session, stage, prefix, record, todo, commands, due)
    finally:
        if session.lock is not None:
            session.lock.release()
    return session.state
