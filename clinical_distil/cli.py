"""Running a fire CLI the way every script in the project does.

Errors a researcher can fix (`InputError`) become one line on stderr and exit code 2;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, Callable

import fire

from clinical_distil.files import InputError


def run(command: Callable[..., Any] | dict, name: str | None = None) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        # fire prints whatever the command returns; stages return None or a short summary
        fire.Fire(command, name=name)
    except InputError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted: finished files are kept; rerun the same command to resume", file=sys.stderr)
        sys.exit(130)
