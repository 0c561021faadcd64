"""Management commands as child processes, for tests of what a process does on a signal, the
database they share with the test, and their environment."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from config.env import BASE_DIR


class ManagedProcess:
    """`manage.py <command>` as a child process, its stdout and stderr collected line by line."""

    def __init__(self, command: str, env: dict[str, str], *, name: str | None = None):
        self.command = command
        self.name = name or command
        self.lines: list[str] = []
        self.process = subprocess.Popen(
            [sys.executable, str(BASE_DIR / "manage.py"), command],
            cwd=BASE_DIR,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self._reader = threading.Thread(target=self._read, name=f"{self.name}-output", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)

    def output(self) -> str:
        return "".join(self.lines)

    def kill(self) -> None:
        """SIGKILL: no handler, no final commit, no leaving the group."""
        self.process.send_signal(signal.SIGKILL)
        self.process.wait(timeout=10)

    def terminate(self, timeout: float = 15) -> tuple[int, float]:
        """SIGTERM, as an operator stops it: the exit code and the seconds it took; the test
        fails if it takes longer than `timeout`."""
        started = time.monotonic()
        self.process.send_signal(signal.SIGTERM)
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            pytest.fail(f"{self.name} did not exit within {timeout:g} s of SIGTERM; it said:\n{self.output()[-3000:]}")
        self._reader.join(timeout=5)
        return code, time.monotonic() - started

    def stop_if_running(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def database_url_of_test_db() -> str:
    """A DATABASE_URL for subprocesses that must see what the test committed."""
    from django.db import connection

    db = connection.settings_dict
    if db["ENGINE"].endswith("sqlite3"):
        return f"sqlite:///{db['NAME']}"
    auth = db["USER"] + (f":{db['PASSWORD']}" if db["PASSWORD"] else "")
    return f"postgres://{auth}@{db['HOST']}:{db['PORT']}/{db['NAME']}"


def command_env(**extra: str) -> dict[str, str]:
    """The environment of a child process that works on this test's database: this process's,
    with `extra` on top."""
    return {**os.environ, "DATABASE_URL": database_url_of_test_db(), **extra}


def export_consumer_env(topics: tuple[str, str], group: str, platform_url: str, **extra: str) -> dict[str, str]:
    """The environment of a `run_export_consumer` child: this test's database, its topic and DLT
    (`export_topics`) and its group, exporting over HTTP to the platform at `platform_url`."""
    topic, dlt = topics
    return command_env(
        ORDER_EXPORT_TOPIC=topic,
        ORDER_EXPORT_DLT_TOPIC=dlt,
        ORDER_EXPORT_CONSUMER_GROUP=group,
        EXPORT_PLATFORM_URL=platform_url,
        **extra,
    )
