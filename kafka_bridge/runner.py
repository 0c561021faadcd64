"""What long-running loops share: a stop flag that signal handlers set, and the garbage
collector's settings for a process that runs one loop for hours."""

from __future__ import annotations

import gc
import logging
import signal
import threading

logger = logging.getLogger(__name__)


class StopFlag:
    """Set by SIGINT/SIGTERM (or a test); loops check it between units of work and wait on it
    instead of sleeping, so a stop request is seen at once."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def set(self) -> None:
        self._event.set()

    def is_set(self) -> bool:
        return self._event.is_set()

    def wait(self, timeout: float) -> bool:
        return self._event.wait(timeout)

    def install_signal_handlers(self) -> None:
        """Handlers only set the flag: the loop finishes the work in hand and closes in order."""

        def handler(signum, frame):
            logger.info("received %s; finishing the work in hand, then stopping", signal.Signals(signum).name)
            self.set()

        signal.signal(signal.SIGINT, handler)
        signal.signal(signal.SIGTERM, handler)


# Allocations between young-generation collections: the default 700 makes a loop that handles
# thousands of records a second collect hundreds of times a second, each pass stopping every thread.
YOUNG_GENERATION_THRESHOLD = 10_000


def garbage_collector_settle() -> None:
    """Once a long-running process has loaded and built everything: move what is alive now (Django,
    the apps, the clients, the settings) out of the collector's reach (`gc.freeze`), so that a
    full collection no longer walks it, and collect the young generation less often. The garbage a
    loop makes is mostly short-lived and freed by reference counting; cycles are still collected."""
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_GENERATION_THRESHOLD, older, oldest)
