"""Run a command as the terminal's foreground job; exit 0 when it was stopped on request.

    python scripts/foreground.py COMMAND [ARG...]

`make run` starts honcho through it. make dies of a Ctrl-C it receives itself, and then fails
whatever its recipe returns; a shell sends Ctrl-C to its foreground job alone, so this hands the
terminal to the command, as a shell does. honcho stops every process on Ctrl-C or SIGTERM and exits
130 or 143: stopping on request is how `make run` is meant to end, so that is exit 0. Without a
terminal (`make run &`, a test), SIGINT, SIGTERM or SIGHUP sent to this script goes on to the
command.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

STOPPED_ON_REQUEST = {128 + signal.SIGINT, 128 + signal.SIGTERM}


def run(argv: list[str]) -> int:
    process: subprocess.Popen | None = None

    def pass_on(signum, frame) -> None:
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM if signum == signal.SIGHUP else signum)

    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, pass_on)
    # A process group of its own, which the terminal's Ctrl-C can reach alone.
    process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, process_group=0)
    with terminal_foreground(process.pid):
        code = process.wait()
    return 0 if code in STOPPED_ON_REQUEST else code


@contextmanager
def terminal_foreground(pgid: int) -> Iterator[None]:
    """Make `pgid` the terminal's foreground process group meanwhile, as a shell does for a job.
    Only when this script is in the foreground itself (a `make run &` takes nothing)."""
    try:
        in_foreground = os.tcgetpgrp(0) == os.getpgrp()
    except OSError:  # stdin is not a terminal
        in_foreground = False
    if not in_foreground:
        yield
        return
    # A background process that changes the terminal's foreground gets SIGTTOU: ignored, as shells do.
    previous = signal.signal(signal.SIGTTOU, signal.SIG_IGN)
    try:
        os.tcsetpgrp(0, pgid)
    except OSError:  # the command is gone already (it failed at once): nothing to hand over
        pass
    try:
        yield
    finally:
        os.tcsetpgrp(0, os.getpgrp())
        signal.signal(signal.SIGTTOU, previous)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    sys.exit(run(sys.argv[1:]))
