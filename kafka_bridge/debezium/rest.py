"""Kafka Connect's REST API, the calls the project makes: a connector's configuration (PUT,
which creates or updates it), status, committed offsets, restart and deletion. Every call is
bounded; an unreachable worker or an error answer is a `ConnectError` in one line."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote

from kafka_bridge.connection import KafkaBridgeError
from kafka_bridge.text import one_line


class ConnectError(KafkaBridgeError):
    """Kafka Connect did not answer, or answered with an error (its message, in one line)."""


class ConnectClient:
    def __init__(self, *, url: str, timeout: float):
        self.url = url.rstrip("/")
        self.timeout = timeout

    def _call(self, method: str, path: str, body: Any = None, *, missing_ok: bool = False) -> Any:
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(
            f"{self.url}{path}",
            data=data,
            method=method,
            headers={"Accept": "application/json", **({"Content-Type": "application/json"} if data else {})},
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            if exc.code == 404 and missing_ok:
                return None
            try:
                message = json.loads(exc.read() or b"{}").get("message") or exc.reason
            except ValueError:
                message = exc.reason
            raise ConnectError(one_line(f"Kafka Connect at {self.url}: {method} {path}: {exc.code} {message}")) from exc
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ConnectError(one_line(f"Kafka Connect at {self.url} unreachable: {reason}")) from exc
        return json.loads(raw) if raw else None

    @staticmethod
    def _path(name: str) -> str:
        return f"/connectors/{quote(name, safe='')}"

    def connector_config_put(self, *, name: str, config: dict[str, str]) -> dict:
        """Create the connector, or update its configuration: the same call either way."""
        return self._call("PUT", f"{self._path(name)}/config", config)

    def connector_config(self, *, name: str) -> dict[str, str] | None:
        return self._call("GET", f"{self._path(name)}/config", missing_ok=True)

    def connector_status(self, *, name: str) -> dict | None:
        """{"connector": {"state", "worker_id"}, "tasks": [{"id", "state", "worker_id", "trace"?}]};
        None when there is no such connector."""
        return self._call("GET", f"{self._path(name)}/status", missing_ok=True)

    def connector_offsets(self, *, name: str) -> list[dict] | None:
        """The source offsets the connector has committed ([{"partition", "offset"}])."""
        answer = self._call("GET", f"{self._path(name)}/offsets", missing_ok=True)
        return None if answer is None else answer.get("offsets", [])

    def connector_restart(self, *, name: str) -> None:
        """Restart the connector and its failed tasks."""
        self._call("POST", f"{self._path(name)}/restart?includeTasks=true&onlyFailed=true")

    def connector_stop(self, *, name: str) -> None:
        """Stop the connector and its tasks, keeping its configuration (STOPPED)."""
        self._call("PUT", f"{self._path(name)}/stop")

    def connector_offsets_reset(self, *, name: str) -> None:
        """Forget the connector's committed source offsets (it must be STOPPED)."""
        self._call("DELETE", f"{self._path(name)}/offsets")

    def connector_delete(self, *, name: str) -> bool:
        """Delete the connector (its offsets stay in the worker's offsets topic). False when there
        was none."""
        if self.connector_status(name=name) is None:
            return False
        self._call("DELETE", self._path(name), missing_ok=True)
        return True

    def worker(self) -> dict:
        """The worker's version and the Kafka cluster it belongs to (GET /)."""
        return self._call("GET", "/")
