"""A broker of a test's own, for tests that stop and start Kafka: the shared broker that the
rest of the suite (and a running `make run`) uses is never touched."""
from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from config.env import BASE_DIR


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class PrivateBroker:
    """kafka/broker.sh on free ports with its own data folder."""

    def __init__(self, data_dir: Path):
        self.port = free_port()
        self.bootstrap = f"127.0.0.1:{self.port}"
        self.env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "KAFKA_LOCAL_PORT": str(self.port),
            "KAFKA_LOCAL_CONTROLLER_PORT": str(free_port()),
            "KAFKA_DATA_DIR": str(data_dir),
            "KAFKA_HEAP_OPTS": "-Xms128m -Xmx512m",
        }

    def _broker_sh(self, command: str) -> str:
        result = subprocess.run(
            [str(BASE_DIR / "kafka" / "broker.sh"), command],
            env=self.env, capture_output=True, text=True, timeout=180,
        )
        if result.returncode != 0:
            raise RuntimeError(f"broker.sh {command} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def start(self) -> None:
        self._broker_sh("up")

    def stop(self) -> None:
        self._broker_sh("down")

    def is_listening(self) -> bool:
        with socket.socket() as sock:
            return sock.connect_ex(("127.0.0.1", self.port)) == 0
