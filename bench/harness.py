"""What every measurement of the orchestrator shares: child processes, the benchmark's own
topics, groups and databases, and cleaning all of them up.

The orchestrator (`python -m bench`) never measures anything itself except the HTTP load and
Kafka's Java tools: each measurement runs in a fresh child process (`python -m bench.worker`)
with DJANGO_SETTINGS_MODULE=config.settings.production and environment overrides (DATABASE_URL,
ORDER_EXPORT_TOPIC, ...), so that producers, connections and settings never leak between them.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

from kafka import KafkaAdminClient, TopicPartition
from kafka.protocol.consumer import OffsetSpec

from kafka_bridge.connection import connection_config

ROOT = Path(__file__).resolve().parent.parent
PYTHON = sys.executable


class BenchError(Exception):
    """A measurement could not be taken; the message says which and why."""


def log_tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


@dataclass
class Worker:
    """A child process started with `Harness.spawn`; `stop()` sends SIGTERM and returns its
    result (what its worker function returned)."""

    name: str
    process: subprocess.Popen
    result_path: Path
    log_path: Path

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait(self, timeout: float) -> dict:
        try:
            code = self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            raise BenchError(f"{self.name} did not finish within {timeout:g} s\n{log_tail(self.log_path)}") from None
        if code != 0 or not self.result_path.exists():
            raise BenchError(f"{self.name} exited with {code}\n{log_tail(self.log_path)}")
        return json.loads(self.result_path.read_text())

    def stop(self, timeout: float = 60.0) -> dict:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        return self.wait(timeout)

    def terminate(self, timeout: float = 30.0) -> None:
        """SIGTERM, then SIGKILL after `timeout`: for processes that write no result."""
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()

    def kill(self) -> None:
        if self.alive():
            self.process.kill()
            self.process.wait(timeout=10)


@dataclass
class Harness:
    """One benchmark run: its scratch folder, its Kafka names and the processes it started."""

    work_dir: Path
    profile_dir: Path | None = None
    run_id: str = field(default_factory=lambda: uuid.uuid4().hex[:8])
    topics: list[str] = field(default_factory=list)
    groups: list[str] = field(default_factory=list)
    processes: list[Worker] = field(default_factory=list)
    _admin: KafkaAdminClient | None = None
    _counter: int = 0

    # --- names ------------------------------------------------------------------------------

    def name(self, prefix: str) -> str:
        self._counter += 1
        return f"bench-{self.run_id}-{prefix}-{self._counter}"

    @property
    def admin(self) -> KafkaAdminClient:
        if self._admin is None:
            self._admin = KafkaAdminClient(
                **connection_config(), client_id="orderflow-bench", request_timeout_ms=30_000
            )
        return self._admin

    def topic(self, prefix: str, *, partitions: int = 3, dlt: bool = False) -> str:
        """A new topic of this run (and its `.DLT` when `dlt`), deleted by `cleanup()`."""
        name = self.name(prefix)
        names = [name, f"{name}.DLT"] if dlt else [name]
        self.admin.create_topics(
            {n: {"num_partitions": partitions, "replication_factor": 1} for n in names}, wait_for_metadata=True
        )
        self.topics.extend(names)
        return name

    def delete_topics(self, names: list[str]) -> None:
        """Delete topics of this run before the end (a repeat's backlog of 100,000 records)."""
        names = list(names)
        if names:
            self.admin.delete_topics(names, raise_errors=False)
            self.topics = [name for name in self.topics if name not in names]

    def group(self, prefix: str) -> str:
        name = self.name(prefix)
        self.groups.append(name)
        return name

    # --- offsets ----------------------------------------------------------------------------

    def end_offset_total(self, topic: str, partitions: int = 3) -> int:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        return sum(
            found.offset for found in self.admin.list_partition_offsets(dict.fromkeys(tps, OffsetSpec.LATEST)).values()
        )

    def committed_total(self, group: str) -> int:
        committed = self.admin.list_group_offsets({group: None}).get(group) or {}
        return sum(meta.offset for meta in committed.values() if meta is not None and meta.offset > 0)

    def wait_group_caught_up(
        self,
        group: str,
        *,
        target: int,
        timeout: float,
        alive: Callable[[], bool] = lambda: True,
        stalled_after: float = 60.0,
    ) -> float:
        """Wait until `group` committed `target` offsets in all; returns when it did (monotonic).
        Gives up once nothing was committed for `stalled_after` seconds: a consumer that stopped
        fetching should fail the figure in a minute, not at the end of `timeout`."""
        now = time.monotonic()
        deadline, last, moved = now + timeout, -1, now
        while True:
            done = self.committed_total(group)
            now = time.monotonic()
            if done >= target:
                return now
            if not alive():
                raise BenchError(f"the consumers of {group} died after committing {done} of {target}")
            if done != last:
                last, moved = done, now
            elif now - moved > stalled_after:
                raise BenchError(
                    f"group {group} committed nothing for {stalled_after:g} s, at {done} of {target} offsets"
                )
            if now > deadline:
                raise BenchError(f"group {group} committed {done} of {target} offsets within {timeout:g} s")
            time.sleep(0.2)

    # --- child processes --------------------------------------------------------------------

    def env(self, **overrides: str | None) -> dict[str, str]:
        """The environment of a Django child process: the project's settings module plus the
        given overrides (None removes a variable)."""
        env = dict(os.environ)
        env["DJANGO_SETTINGS_MODULE"] = "config.settings.production"
        env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env.setdefault("PYTHONUNBUFFERED", "1")
        for key, value in overrides.items():
            if value is None:
                env.pop(key, None)
            else:
                env[key] = str(value)
        return env

    def _paths(self, name: str) -> tuple[Path, Path, Path]:
        self._counter += 1
        stem = f"{self._counter:04d}-{name.replace('.', '-')}"
        return self.work_dir / f"{stem}.args.json", self.work_dir / f"{stem}.result.json", self.work_dir / f"{stem}.log"

    def spawn(self, name: str, args: dict, *, env: dict[str, str]) -> Worker:
        """Start `python -m bench.worker name` in the background."""
        args_path, result_path, log_path = self._paths(name)
        args_path.write_text(json.dumps(args))
        if self.profile_dir is not None:
            env = {**env, "BENCH_PROFILE_DIR": str(self.profile_dir)}
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                [PYTHON, "-m", "bench.worker", name, str(args_path), str(result_path)],
                cwd=ROOT,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        worker = Worker(name, process, result_path, log_path)
        self.processes.append(worker)
        return worker

    def run(self, name: str, args: dict, *, env: dict[str, str], timeout: float = 600.0) -> dict:
        """Run `python -m bench.worker name` to the end and return its result."""
        return self.spawn(name, args, env=env).wait(timeout)

    def command(self, argv: list[str], *, env: dict[str, str], name: str) -> Worker:
        """Start any other process of the project (gunicorn, a management command)."""
        _, result_path, log_path = self._paths(name)
        with open(log_path, "wb") as log:
            process = subprocess.Popen(
                argv, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
            )
        worker = Worker(name, process, result_path, log_path)
        self.processes.append(worker)
        return worker

    def path(self, name: str) -> Path:
        self._counter += 1
        return self.work_dir / f"{self._counter:04d}-{name}"

    # --- the end ----------------------------------------------------------------------------

    def cleanup(self) -> None:
        """Stop what is still running, delete this run's topics and groups."""
        for worker in self.processes:
            if worker.alive():
                worker.process.send_signal(signal.SIGTERM)
                try:
                    worker.process.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    worker.kill()
        if self._admin is None:
            return
        try:
            if self.groups:
                self.admin.delete_groups(self.groups)
        except Exception:
            pass
        try:
            if self.topics:
                self.admin.delete_topics(self.topics, raise_errors=False)
        except Exception:
            pass
        self._admin.close()
        self._admin = None


# --- databases ------------------------------------------------------------------------------


@dataclass
class BenchDatabase:
    """A database of the benchmark's own: a migrated SQLite file in the scratch folder, or a
    database created on the project's PostgreSQL cluster and dropped at the end."""

    vendor: str
    url: str
    admin_url: str | None = None
    name: str | None = None

    @classmethod
    def sqlite(cls, work_dir: Path) -> BenchDatabase:
        return cls("sqlite", f"sqlite:///{work_dir / 'bench.sqlite3'}")

    @classmethod
    def postgresql(cls, base_url: str, run_id: str) -> BenchDatabase:
        import psycopg

        name = f"orderflow_bench_{run_id}"
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        parts = urlsplit(base_url)
        return cls("postgresql", urlunsplit(parts._replace(path=f"/{name}")), admin_url=base_url, name=name)

    def migrate(self, harness: Harness) -> None:
        log = harness.path(f"migrate-{self.vendor}.log")
        with open(log, "wb") as out:
            code = subprocess.call(
                [PYTHON, "manage.py", "migrate", "--noinput"],
                cwd=ROOT,
                env=harness.env(DATABASE_URL=self.url),
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        if code:
            raise BenchError(f"manage.py migrate on the {self.vendor} bench database failed\n{log_tail(log)}")

    def server_facts(self) -> dict:
        if self.vendor == "sqlite":
            import sqlite3

            return {"version": sqlite3.sqlite_version}
        import psycopg

        with psycopg.connect(self.url, autocommit=True) as conn:
            facts = {
                name: conn.execute(f"SELECT current_setting('{name}')").fetchone()[0]
                for name in ("server_version", "synchronous_commit", "fsync", "shared_buffers")
            }
        facts["version"] = facts.pop("server_version")
        return facts

    def drop(self) -> None:
        if self.vendor != "postgresql" or self.admin_url is None:
            return
        import psycopg

        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            # A replication slot left on the database (a Debezium run whose connector could not be
            # removed) keeps it from being dropped: its reader is ended and the slot dropped first.
            for _ in range(20):
                slots = conn.execute(
                    "SELECT slot_name, active_pid FROM pg_replication_slots WHERE database = %s", [self.name]
                ).fetchall()
                if not slots:
                    break
                for slot, pid in slots:
                    try:
                        if pid is not None:
                            conn.execute("SELECT pg_terminate_backend(%s)", [pid])
                        conn.execute("SELECT pg_drop_replication_slot(%s)", [slot])
                    except psycopg.Error:
                        pass  # still active (its reader came back): again
                time.sleep(0.5)
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
