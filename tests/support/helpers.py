"""Waiting for asynchronous outcomes, and reading what was logged."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 10.0,
    *,
    interval: float = 0.05,
    message: str | Callable[[], str] = "condition not met",
) -> T:
    """Poll `predicate` until it returns something truthy, and return that value.

    The Python counterpart of Awaitility's `await().atMost(...).until(...)`: fails the test with
    `message` (a string, or a callable producing one from the last state) after `timeout` seconds.
    """
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() >= deadline:
            text = message() if callable(message) else message
            raise AssertionError(f"{text} (waited {timeout:g} s)")
        time.sleep(interval)


def logged_text(caplog) -> str:
    """The captured lines, and every attribute of every record (its args and extra fields)."""
    return "\n".join([caplog.text] + [repr(vars(record)) for record in caplog.records])
