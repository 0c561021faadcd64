"""The one-line progress indicator: `[3/14] consume: raw kafka-python (sqlite), run 1/3  (42 s)`."""

from __future__ import annotations

import sys
import time
from typing import TextIO


class Progress:
    def __init__(self, total: int, stream: TextIO | None = None):
        self.total = total
        self.stream = stream or sys.stderr
        self.step = 0
        self.label = ""
        self.tty = self.stream.isatty()
        self.started = time.monotonic()

    def next(self, label: str) -> None:
        """Start the next unit of work."""
        self.step += 1
        self.label = label
        self._show()

    def _show(self) -> None:
        line = f"[{self.step}/{self.total}] {self.label}  ({time.monotonic() - self.started:.0f} s)"
        if self.tty:
            # One line, rewritten in place.
            self.stream.write("\r\033[K" + line)
        else:
            self.stream.write(line + "\n")
        self.stream.flush()

    def note(self, text: str) -> None:
        """A line of its own (a skipped measurement, a warning), then the progress line again."""
        if self.tty:
            self.stream.write("\r\033[K")
        self.stream.write(text + "\n")
        if self.tty and self.label:
            self._show()
        self.stream.flush()

    def done(self) -> None:
        if self.tty:
            self.stream.write("\n")
        self.label = ""  # a note after the end is a line of its own, not followed by the last step's line
        self.stream.write(f"bench: finished in {time.monotonic() - self.started:.0f} s\n")
        self.stream.flush()
