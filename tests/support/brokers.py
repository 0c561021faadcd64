"""A broker of a test's own, for tests that stop and start Kafka: the shared broker that the
rest of the suite (and a running `make run`) uses is never touched."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path

from config.env import BASE_DIR
from tests.support.ports import free_port


class PrivateBroker:
    """kafka/broker.sh on free ports with its own data folder.

    With `sasl_users` ({name: password}), it also has a SASL_PLAINTEXT listener at
    `sasl_bootstrap` that accepts those users with PLAIN and SCRAM-SHA-512; `bootstrap` stays
    the PLAINTEXT listener.
    """

    def __init__(self, data_dir: Path, *, sasl_users: Mapping[str, str] | None = None):
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_LOCAL_PORT": str(self.port),
            "KAFKA_LOCAL_CONTROLLER_PORT": str(free_port()),
            "KAFKA_DATA_DIR": str(data_dir),
            # The client compiler alone (C1): a broker that lives for one test starts on about
            # 40% less CPU and never earns the optimising compiler back.
            "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m -XX:TieredStopAtLevel=1",
            # broker.sh pings `bootstrap`, the PLAINTEXT listener, whatever the environment or
            # .env say about the project's own clients.
            "KAFKA_SECURITY_PROTOCOL": "PLAINTEXT",
        }
        for name in ("KAFKA_SASL_PORT", "KAFKA_SASL_USERS"):
            self.env.pop(name, None)
        self.sasl_port: int | None = None
        self.sasl_bootstrap: str | None = None
        if sasl_users:
            self.sasl_port = free_port()
            self.sasl_bootstrap = f"127.0.0.1:{self.sasl_port}"
            self.env["KAFKA_SASL_PORT"] = str(self.sasl_port)
            self.env["KAFKA_SASL_USERS"] = ",".join(f"{user}:{password}" for user, password in sasl_users.items())

    def _broker_sh(self, command: str) -> str:
        result = subprocess.run(
            [str(BASE_DIR / "kafka" / "broker.sh"), command],
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
        )
        if result.returncode != 0:
            raise RuntimeError(f"broker.sh {command} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> None:
        self._broker_sh("up")

    def stop(self) -> None:
        self._broker_sh("down")

    @contextlib.contextmanager
    def frozen(self) -> Iterator[None]:
        """The broker process stopped (SIGSTOP) and continued (SIGCONT) on exit: a broker that
        answers nothing for a while and then carries on where it was."""
        pid = int((Path(self.env["KAFKA_DATA_DIR"]) / "kafka.pid").read_text())
        os.kill(pid, signal.SIGSTOP)
        try:
            yield
        finally:
            os.kill(pid, signal.SIGCONT)

    def is_listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0
