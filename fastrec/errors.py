"""Errors that the command-line tools report without a traceback."""

from __future__ import annotations

import functools
import logging
import os
import signal
import sys
from collections.abc import Callable
from typing import TypeVar

F = TypeVar("F", bound=Callable[..., object])

log = logging.getLogger("fastrec")


class FastrecError(Exception):
    """A user-facing error: bad input, missing data or a failed download.

    The message names the file, line or value at fault and what to do next.
    """


class DataError(FastrecError):
    """Invalid or missing MovieLens input, or a corrupt window store."""


class ConfigError(FastrecError):
    """An unknown config key or an invalid config value."""


# Exit status of a process stopped by Ctrl-C (128 + SIGINT), as shells report it.
INTERRUPTED_STATUS = 130


def exit_interrupted() -> None:
    """End the process as killed by SIGINT, so that a calling shell loop stops too.

    A shell stops a loop only when its child died of the signal, not when the
    child exited with status 130. Where SIGINT cannot be raised, exit 130.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    if hasattr(signal, "SIGINT") and hasattr(os, "kill"):
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    sys.exit(INTERRUPTED_STATUS)


def exit_on_user_error(main: F) -> F:
    """Wrap a CLI entry point so that a FastrecError prints one line and exits 2.

    Ctrl-C outside the training loop (which saves a checkpoint itself) prints one
    line and ends the process as killed by SIGINT (status 130 in a shell) instead
    of a KeyboardInterrupt traceback.
    """

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except FastrecError as error:
            print(f"error: {error}", file=sys.stderr)
            sys.exit(2)
        except KeyboardInterrupt:
            print("interrupted", file=sys.stderr)
            exit_interrupted()

    return wrapper  # type: ignore[return-value]
