"""What C libraries print: caught, so that it reaches people as our message, not raw.

Image decoders inside GDCM (OpenJPEG, CharLS, libjpeg) write straight to file
descriptor 2 ("Stream too short", "Not a JPEG file: starts with 0x70 0xd6"), around
Python's ``sys.stderr``. :func:`captured` points fd 2 at a temporary file while such a
library runs and hands back its lines, which the reader then puts in its own error or
warning. One capture at a time (a lock): fd 2 is the process's.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import threading

_LOCK = threading.Lock()
MAX_BYTES = 1 << 16


class Captured:
    """The lines a library printed while captured (filled when the capture ends)."""

    def __init__(self):
        self.lines: list[str] = []

    def summary(self, limit: int = 3) -> str:
        """The first distinct lines, joined: what to quote in a message."""
        distinct = list(dict.fromkeys(line for line in self.lines if line))
        more = f" (+{len(distinct) - limit} more)" if len(distinct) > limit else ""
        return "; ".join(distinct[:limit]) + more


@contextlib.contextmanager
def captured():
    """Capture fd 2 (C-level stderr) for the ``with`` block; yields a :class:`Captured`."""
    result = Captured()
    fd = 2  # what C libraries write to, whatever Python's sys.stderr is
    with _LOCK, tempfile.TemporaryFile() as sink:
        with contextlib.suppress(AttributeError, ValueError, OSError):
            sys.stderr.flush()
        try:
            saved = os.dup(fd)
        except OSError:  # no fd 2 at all (a detached process): nothing to capture
            yield result
            return
        os.dup2(sink.fileno(), fd)
        try:
            yield result
        finally:
            os.dup2(saved, fd)
            os.close(saved)
            sink.seek(0)
            text = sink.read(MAX_BYTES).decode("utf-8", "replace")
            result.lines = [" ".join(line.split()) for line in text.splitlines()]
