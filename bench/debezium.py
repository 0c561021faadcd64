"""The end-to-end pipeline with `OUTBOX_PUBLISHER=debezium` (PostgreSQL only), measured beside the
relay's: a Kafka Connect worker of the bench's own (connect/worker.sh on a free port, with a
group, internal topics and a data folder of this run's), started once per bench run when the
variant is measured and stopped at the end, its three internal topics deleted, in every case.

Each Debezium run registers the outbox connector for the bench database under names of this
run's own (connector, replication slot, publication, heartbeat topic), waits until it streams
(its slot exists and is read: rows committed before are not published), and removes all of it
after the run, the slot included. The connector runs only during its own runs: a slot left in
place through a relay run would hand the relay's rows to Debezium as well, and a slot left on
the bench database would keep it from being dropped.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from bench.harness import ROOT, BenchError, Harness, log_tail

WORKER_SH = ROOT / "connect" / "worker.sh"


def available(context) -> bool:
    """Whether the Connect worker can run here; says why not in a note when it cannot."""
    from django.conf import settings

    missing = []
    if shutil.which("java") is None:
        missing.append("Java 17+")
    if shutil.which("curl") is None:
        missing.append("curl")
    if not (ROOT / "connect" / "lib" / ".complete").exists() and shutil.which("mvn") is None:
        missing.append("Maven (to fetch the worker's jars)")
    if settings.KAFKA_SECURITY_PROTOCOL != "PLAINTEXT":
        missing.append("a PLAINTEXT broker (connect/worker.sh speaks no TLS/SASL)")
    if missing:
        context.note(f"the Debezium end-to-end figures are skipped: no {', no '.join(missing)}")
        return False
    return True


def debezium_version() -> str | None:
    """The version of Debezium's PostgreSQL connector in connect/plugins/debezium (from its jar's name)."""
    for jar in sorted((ROOT / "connect" / "plugins" / "debezium").glob("debezium-connector-postgres-*.jar")):
        return jar.stem.removeprefix("debezium-connector-postgres-")
    return None


def names(run_id: str) -> dict[str, str]:
    """The connector's names in a bench run: its own, never the deployment's defaults."""
    return {
        "DEBEZIUM_CONNECTOR_NAME": f"orderflow-outbox-bench-{run_id}",
        "DEBEZIUM_SLOT_NAME": f"orderflow_outbox_bench_{run_id}",
        "DEBEZIUM_PUBLICATION_NAME": f"orderflow_outbox_bench_{run_id}",
        "DEBEZIUM_TOPIC_PREFIX": f"orderflow-bench-{run_id}",
    }


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class ConnectWorker:
    """connect/worker.sh's worker for one bench run."""

    url: str
    group: str
    env: dict[str, str]
    log: Path
    version: str | None = None  # Kafka Connect's, as its REST API says

    @classmethod
    def start(cls, harness: Harness) -> ConnectWorker:
        """`connect/worker.sh up` on a free port; returns once its REST API answers. A worker that
        fails to start is stopped (and its topics deleted) before the error is raised."""
        from django.conf import settings

        port = _free_port()
        group = f"orderflow-connect-bench-{harness.run_id}"
        data_dir = harness.work_dir / "connect"
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": ",".join(settings.KAFKA_BOOTSTRAP_SERVERS),
            "CONNECT_PORT": str(port),
            "CONNECT_GROUP": group,
            "CONNECT_DATA_DIR": str(data_dir),
        }
        worker = cls(url=f"http://127.0.0.1:{port}", group=group, env=env, log=harness.path("connect-worker.log"))
        try:
            worker._script("up", timeout=600)
        except BaseException:
            worker.stop()
            raise
        worker.version = worker._version()
        return worker

    def _script(self, action: str, *, timeout: float) -> None:
        with open(self.log, "ab") as out:
            try:
                code = subprocess.call(
                    ["bash", str(WORKER_SH), action],
                    cwd=ROOT,
                    env=self.env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    timeout=timeout,
                )
            except subprocess.TimeoutExpired:
                code = None
        if code != 0:
            raise BenchError(
                f"connect/worker.sh {action} {'timed out' if code is None else f'exited with {code}'}\n"
                f"{log_tail(self.log)}"
            )

    def _version(self) -> str | None:
        from kafka_bridge.debezium.rest import ConnectClient, ConnectError

        try:
            return ConnectClient(url=self.url, timeout=5.0).worker().get("version")
        except ConnectError:
            return None

    def stop(self) -> list[str]:
        """`connect/worker.sh down`, then delete the worker's internal topics; what failed, as
        lines (both are tried whatever the other did)."""
        from kafka_bridge.connection import admin_client

        problems = []
        try:
            self._script("down", timeout=90)
        except BenchError as exc:
            problems.append(str(exc).splitlines()[0])
        topics = [f"{self.group}-{suffix}" for suffix in ("configs", "offsets", "status")]
        try:
            with admin_client(timeout_ms=10_000) as admin:
                existing = [t["name"] for t in admin.describe_topics(topics) if t["error_code"] == 0]
                if existing:
                    admin.delete_topics(existing)
        except Exception as exc:
            problems.append(f"could not delete the Connect worker's topics {', '.join(topics)}: {exc}")
        return problems


# --- worker side (python -m bench.worker, in the bench database's settings) -----------------


def _streaming() -> bool:
    """The connector and its task RUNNING and its slot read: every row committed from now on
    is published."""
    from kafka_bridge.debezium.status import outbox_connector_status

    status = outbox_connector_status()
    slot = status.get("slot")
    return (
        status["state"] == "RUNNING"
        and [t["state"] for t in status["tasks"]] == ["RUNNING"]
        and bool(slot and slot["active"])
    )


def connector_start(*, names: dict[str, str], timeout: float = 120.0) -> dict:
    """Register the outbox connector for this process's database under `names`, and wait until
    it streams. Returns how long that took."""
    from django.test.utils import override_settings

    from kafka_bridge.debezium.connector import connect_client, connector_register

    began = time.monotonic()
    with override_settings(**names):
        registration = connector_register(client=connect_client())
        deadline = time.monotonic() + timeout
        while not _streaming():
            if time.monotonic() > deadline:
                raise RuntimeError(f"the outbox connector did not stream within {timeout:g} s")
            time.sleep(0.2)
    return {"registration": str(registration), "seconds": round(time.monotonic() - began, 2)}


def connector_stop(*, names: dict[str, str]) -> dict:
    """Delete the connector (its offsets reset), its replication slot, its publication and its
    heartbeat topic."""
    from django.test.utils import override_settings

    from kafka_bridge.debezium.connector import connect_client, connector_purge

    with override_settings(**names):
        done = connector_purge(client=connect_client())
    return {"done": done}
