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
    parent = os.getppid()
    _die_with_parent()
    if os.getppid() != parent:  # the parent died before the signal was asked for
        return 143
    child = subprocess.Popen(argv, start_new_session=True)

    def stop(signum, _frame) -> None:
        # Ctrl-C as Ctrl-C (a script then says what it kept); a dead parent or SIGTERM as SIGTERM
        try:
            os.killpg(child.pid, signal.SIGINT if signum == signal.SIGINT else signal.SIGTERM)
            child.wait(timeout=GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        try:  # what the command started may outlive it: stop the rest of its group too
            os.killpg(child.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        sys.exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, stop)
    code = child.wait()
    try:  # a finished command's leftovers (a stray kernel) go with it
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
