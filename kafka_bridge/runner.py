"""What long-running loops share: a stop flag that signal handlers set."""

from __future__ import annotations

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
