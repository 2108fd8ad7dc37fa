"""One line per step of a long command: what it is doing, then how long it took.

    with step("starting 3 machines"):
        ...

prints ``lab: starting 3 machines ...`` when the step begins and completes the same line with
`` 4.2 s`` (or `` failed after 4.2 s``) when it ends, on stderr beside the lab's other messages.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TextIO


class _OpenLine:
    """Stands in for the stream while a step's line is open.

    The steps log on their own (``lab: db-1: degraded ...``); the first such message must start on
    a line of its own, and the step's line is then printed again, whole, when the step ends.
    """

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.interrupted = False
        self._lock = threading.Lock()  # the machines boot in threads that may log

    def write(self, text: str) -> int:
        with self._lock:
            if text and not self.interrupted:
                self.interrupted = True
                self.stream.write("\n")
            return self.stream.write(text)

    def flush(self) -> None:
        self.stream.flush()

    def __getattr__(self, name: str):
        return getattr(self.stream, name)


@contextmanager
def step(label: str, prefix: str = "lab") -> Iterator[None]:
    """Report ``label`` and its duration on one line of stderr."""
    stream = sys.stderr
    head = f"{prefix}: {label} ..."
    stream.write(head)
    stream.flush()
    line = _OpenLine(stream)
    sys.stderr = line
    started = time.monotonic()
    outcome = "failed after "
    try:
        yield
        outcome = ""
    finally:
        sys.stderr = stream
        elapsed = f"{outcome}{time.monotonic() - started:.1f} s"
        stream.write(f"{head} {elapsed}\n" if line.interrupted else f" {elapsed}\n")
        stream.flush()
