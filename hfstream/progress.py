"""Progress bars on stderr: live on a terminal, one plain line every 30 s in a log file."""

from __future__ import annotations

import sys
from typing import Any, TextIO

LOG_INTERVAL_S = 30.0  # seconds between two progress lines when stderr is not a terminal


class _Lines:
    """A stream for tqdm that turns each redraw into its own line (no carriage returns)."""

    def __init__(self, stream: TextIO):
        self._stream = stream

    def write(self, text: str) -> None:
        line = text.replace("\r", "").rstrip("\n")
        if line.strip():
            self._stream.write(line + "\n")

    def flush(self) -> None:
        self._stream.flush()


def progress_bar(**options: Any) -> Any:
    """A ``tqdm`` bar on stderr. On a terminal it redraws in place; in a log file (stderr not
    a TTY) it writes a line at most every :data:`LOG_INTERVAL_S` seconds, and a last one when
    it closes, instead of thousands of carriage-return updates on one line.
    """
    from tqdm import tqdm

    stream = sys.stderr
    if not (hasattr(stream, "isatty") and stream.isatty()):
        options.setdefault("mininterval", LOG_INTERVAL_S)
        # tqdm's monitor thread forces a redraw once ``maxinterval`` (10 s) passes without one:
        # in a log file that is an extra line every 10-20 s. Lines come every mininterval only.
        options["maxinterval"] = max(options["mininterval"], options.get("maxinterval", 0))
        options.update(file=_Lines(stream), dynamic_ncols=False, ncols=100, ascii=True)
    else:
        options.setdefault("file", stream)
    return tqdm(**options)
