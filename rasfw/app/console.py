"""What the command lines show: messages (printed and logged) and one-line errors with their exit codes."""

from __future__ import annotations

import logging
import os
import sys
from typing import NoReturn

from rasfw.checks import first_line

EXIT_USAGE = 2
EXIT_FAILURE = 1  # not a usage error: something failed while running
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as a shell reports Ctrl-C


def show(message: str) -> None:
    """Print `message` for the user and log it (Hydra's job log, e.g. `<output dir>/rasfw.log`).

    Args:
        message: the text, one or more lines.
    """
    print(message, flush=True)
    logging.getLogger("rasfw").info(message)


def fail(exc: BaseException) -> NoReturn:
    """Stop with `exc` as one line on stderr (`error: ...`) and exit code 2; `RASFW_DEBUG=1` raises it instead.

    Args:
        exc: the usage error (its first line is shown).
    """
    if os.environ.get("RASFW_DEBUG"):
        raise exc
    print(f"error: {first_line(exc)}", file=sys.stderr)
    sys.exit(EXIT_USAGE)
