"""Run one command so that it ends with the process that started it.

    python -m clinical_distil.guard COMMAND [ARGS ...]

The driver runs every step through this guard. The guard asks the kernel to signal it when its
parent dies (Linux's parent-death signal), starts the command in a process group of its own, and
when it is told to stop (its parent died, or Ctrl-C / SIGTERM reached it) stops that whole group:
the command and everything it started (papermill's kernel, accelerate's workers). A driver killed
with SIGKILL therefore leaves no stage running beside the rerun. Exits with the command's code.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

GRACE_SECONDS = 20  # for the command to stop on its own (keep what it finished) before it is killed


def _die_with_parent() -> None:
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the guard still stops the group when signalled
        pass


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m clinical_distil.guard COMMAND [ARGS ...]", file=sys.stderr)
        return 2
    child: subprocess.Popen | None = None
    stopped: list[int] = []  # the signal that asked the guard to stop, once it came

    def signal_group(signum: int) -> None:
        try:
            os.killpg(child.pid, signum)
        except (ProcessLookupError, PermissionError):
            pass

    def pass_on(signum: int) -> None:
        # Ctrl-C as Ctrl-C (a script then says what it kept); a dead parent or SIGTERM as SIGTERM
        signal_group(signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)

    def stop(signum, _frame) -> None:
        # only pass the signal on here: waiting inside a handler would wait on the wait it interrupted (Popen's
        # lock is held there), and the guard would outlive its command by the whole grace period
        if not stopped:
            stopped.append(signum)
            if child is not None:
                pass_on(signum)

    # the handlers come before the parent-death signal and the command: a signal while the command starts is
    # then passed on once it has started, not the guard's death with the command left running on its own
    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent or stopped:  # the parent died, or a stop came, before the command started
        return 128 + stopped[0] if stopped else 143
    child = subprocess.Popen(argv, start_new_session=True)
    if stopped:  # told to stop while the command started
        pass_on(stopped[0])
    deadline = None
    while True:
        try:
            code = child.wait(timeout=0.1)
            break
        except subprocess.TimeoutExpired:
            if stopped and deadline is None:
                deadline = time.monotonic() + GRACE_SECONDS  # for the command to keep what it finished
            if deadline is not None and time.monotonic() > deadline:
                signal_group(signal.SIGKILL)
    signal_group(signal.SIGKILL)  # what the command started may outlive it (a stray kernel): it goes with it
    return 128 + stopped[0] if stopped else code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
