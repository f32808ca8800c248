"""What every CLI shares: the tail that turns an error, Ctrl+C or SIGTERM into one clear line and an exit code."""

from __future__ import annotations

import argparse
import logging
import signal
import sys
import threading
from typing import Callable

from hfstream.errors import HfStreamError

log = logging.getLogger("hfstream.cli")

EXIT_ERROR = 2        # a failure the user can fix: the message says how
EXIT_SIGINT = 130     # 128 + SIGINT: Ctrl+C
EXIT_SIGTERM = 143    # 128 + SIGTERM: stopped by a scheduler or `kill`


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread like Ctrl+C (so cleanup runs), exiting 143 instead of 130."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated()


def run_main(work: Callable[[], int], interrupted: str = "interrupted") -> int:
    """Run a CLI's work and return its exit code.

    An ``HfStreamError`` prints ``error: MESSAGE`` (with its ``HINT:`` line) once and exits 2;
    Ctrl+C prints ``interrupted`` and exits 130; SIGTERM exits 143; a closed stdout (``| head``)
    exits 0. The traceback of an error is logged at debug level (``-v``), never printed otherwise.

    Args:
        work: the command, returning its own exit code.
        interrupted: what to print on Ctrl+C / SIGTERM (e.g. "interrupted: nothing was written").
    """
    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        return work()
    except HfStreamError as exc:
        log.debug("traceback of the error below", exc_info=True)
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except Terminated:
        print(f"{interrupted} (SIGTERM)", file=sys.stderr)
        return EXIT_SIGTERM
    except KeyboardInterrupt:
        print(interrupted, file=sys.stderr)
        return EXIT_SIGINT
    except BrokenPipeError:  # `hfstream head ... | head -3`
        return 0
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def help_texts(doc: str) -> dict[str, str]:
    """A CLI module's docstring as argparse's ``description`` (its first paragraph) and ``epilog``
    (the rest), with the reStructuredText marks (````code````, ``::``) a terminal does not need."""
    plain = doc.replace("``", "").replace("::\n", ":\n")
    first, _, rest = plain.partition("\n\n")
    return {"description": first, "epilog": rest}


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Help as written (examples keep their lines), with each option's default shown when it has one."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if (action.option_strings and action.default not in (None, False, argparse.SUPPRESS)
                and "default" not in text and not isinstance(action.default, bool)):
            text += " (default: %(default)s)"
        return text
