"""A Kafka Connect worker of the tests' own (connect/worker.sh, on a free port, with a group and
internal topics of its own, on the shared broker) and the outbox connector registered on it for
the test database, under names of its own, with OUTBOX_PUBLISHER=debezium for as long as it runs.

The tests that use them are marked `serial` (they run alone, before the parallel run: one worker
for them all) and `debezium`, and are skipped where there is no PostgreSQL with logical decoding.
"""

from __future__ import annotations

import os
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from django.test.utils import override_settings

from kafka_bridge.connection import admin_client
from kafka_bridge.debezium.connector import connector_purge, connector_register
from kafka_bridge.debezium.rest import ConnectClient
from kafka_bridge.debezium.status import outbox_connector_status
from tests.support.helpers import wait_until
from tests.support.ports import free_port

ROOT = Path(__file__).resolve().parents[2]
WORKER_SH = ROOT / "connect" / "worker.sh"


@dataclass
class ConnectWorker:
    url: str
    group: str
    env: dict[str, str]
    data_dir: Path

    def run(self, action: str, *, timeout: float = 300) -> subprocess.CompletedProcess:
        done = subprocess.run(
            ["bash", str(WORKER_SH), action], env=self.env, capture_output=True, text=True, timeout=timeout, check=False
        )
        if done.returncode != 0:
            raise AssertionError(f"connect/worker.sh {action} exited {done.returncode}: {done.stdout}{done.stderr}")
        return done

    def pid(self) -> int:
        return int(self.run("pid").stdout.strip())

    def kill(self) -> None:
        """SIGKILL, as an OOM killer or a lost host would: no offset flush, no clean shutdown."""
        pid = self.pid()
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not _alive(pid), timeout=10, message=f"Connect worker {pid} still alive after SIGKILL")

    @property
    def client(self) -> ConnectClient:
        return ConnectClient(url=self.url, timeout=10.0)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie (the worker was started by a shell that exited, so it is not our child) is gone too.
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def logical_decoding_or_skip() -> None:
    """Skip the test unless the test database is PostgreSQL with wal_level=logical (the caller
    holds database access)."""
    import pytest
    from django.db import connection

    from kafka_bridge.debezium.postgres import wal_level

    if connection.vendor != "postgresql":
        pytest.skip("Debezium reads PostgreSQL's write-ahead log: make test DB=postgres runs these")
    if wal_level() != "logical":
        pytest.skip("PostgreSQL runs with wal_level != logical (scripts/postgres.sh up sets it)")


def connect_worker_started(tmp_dir: Path, *, bootstrap: str | None = None) -> Iterator[ConnectWorker]:
    """Start a worker (on the broker at `bootstrap`, else the suite's), yield it, stop it and
    delete its internal topics."""
    port = free_port()
    group = f"orderflow-connect-test-{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        "CONNECT_PORT": str(port),
        "CONNECT_GROUP": group,
        "CONNECT_DATA_DIR": str(tmp_dir),
        **({"KAFKA_BOOTSTRAP_SERVERS": bootstrap} if bootstrap else {}),
    }
    worker = ConnectWorker(url=f"http://127.0.0.1:{port}", group=group, env=env, data_dir=tmp_dir)
    worker.run("up")
    try:
        yield worker
    finally:
        worker.run("down", timeout=60)
        with admin_client(timeout_ms=10_000) as admin:
            topics = [f"{group}-{suffix}" for suffix in ("configs", "offsets", "status")]
            existing = {t["name"] for t in admin.describe_topics(topics) if t["error_code"] == 0}
            if existing:
                admin.delete_topics(sorted(existing))


def connector_running(worker: ConnectWorker) -> bool:
    status = outbox_connector_status(client=worker.client)
    slot = status.get("slot")
    return (
        status["state"] == "RUNNING"
        and [t["state"] for t in status["tasks"]] == ["RUNNING"]
        and bool(slot and slot["active"])
    )


def debezium_connector_registered(worker: ConnectWorker) -> Iterator[dict]:
    """The outbox connector on `worker` for the test database, under names of this run's own,
    with the settings that say Debezium publishes; yields those settings. Returns once the
    connector streams (its slot exists and is read), so that every row committed afterwards is
    published. Deletes the connector, its slot, its publication and its heartbeat topic after
    (`connector_purge`)."""
    suffix = uuid.uuid4().hex[:8]
    names = {
        "OUTBOX_PUBLISHER": "debezium",
        "KAFKA_PUBLISH_ON_COMMIT": False,
        "KAFKA_CONNECT_URL": worker.url,
        "DEBEZIUM_CONNECTOR_NAME": f"orderflow-outbox-test-{suffix}",
        "DEBEZIUM_SLOT_NAME": f"orderflow_outbox_test_{suffix}",
        "DEBEZIUM_PUBLICATION_NAME": f"orderflow_outbox_test_{suffix}",
        "DEBEZIUM_TOPIC_PREFIX": f"orderflow-test-{suffix}",
    }
    with override_settings(**names):
        connector_register(client=worker.client)
        wait_until(lambda: connector_running(worker), timeout=60, message="the outbox connector never streamed")
        try:
            yield names
        finally:
            connector_purge(client=worker.client)
