"""A 3-node Kafka cluster of a test's own, for tests of replication and broker failures.

Each node is a KRaft broker+controller run from the same jars as kafka/broker.sh, on free
loopback ports and in a data folder of the test's own; the shared broker on 9092 is never
touched. Use it as a context manager: every JVM is stopped on the way out, even when starting
the cluster failed halfway.
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from kafka import KafkaAdminClient
from kafka.errors import KafkaError

from config.env import BASE_DIR
from tests.support.helpers import wait_until
from tests.support.ports import free_ports

KAFKA_DIR = BASE_DIR / "kafka"
LIB = KAFKA_DIR / "lib"
NODE_IDS = (1, 2, 3)

# Three JVMs share 2 cores with the rest of the suite: a small heap each is ample for a few
# test topics, and the client compiler alone (C1) starts a JVM on about 40% less CPU, which a
# broker that lives for one test never earns back in steady-state speed.
HEAP_OPTS = ["-Xms128m", "-Xmx384m", "-XX:TieredStopAtLevel=1"]


def kafka_cluster_id() -> str:
    """What `StorageTool random-uuid` prints (16 random bytes, URL-safe base64 without padding,
    never starting with "-"), without starting a JVM for it."""
    while (cluster_id := base64.urlsafe_b64encode(os.urandom(16)).rstrip(b"=").decode()).startswith("-"):
        pass
    return cluster_id


def _die_with_parent() -> None:
    """In the child, before exec: a JVM must not outlive a pytest that was killed outright
    (where no teardown runs). Linux only; elsewhere the teardown is the only guard."""
    if sys.platform.startswith("linux"):
        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class KafkaCluster:
    """Three KRaft nodes (roles broker,controller; static voters 1, 2, 3) on 127.0.0.1."""

    def __init__(self, data_dir: Path, *, start_timeout: float = 120.0, stop_grace: float = 10.0):
        self.data_dir = data_dir
        self.start_timeout = start_timeout
        self.stop_grace = stop_grace
        ports = free_ports(2 * len(NODE_IDS))
        self.ports = dict(zip(NODE_IDS, ports[: len(NODE_IDS)]))
        self.controller_ports = dict(zip(NODE_IDS, ports[len(NODE_IDS) :]))
        self.processes: dict[int, subprocess.Popen] = {}
        self.killed: set[int] = set()

    # -- addresses ---------------------------------------------------------------------------

    def bootstrap(self, node_id: int) -> str:
        return f"127.0.0.1:{self.ports[node_id]}"

    @property
    def bootstrap_servers(self) -> list[str]:
        return [self.bootstrap(node_id) for node_id in NODE_IDS]

    @property
    def alive(self) -> list[int]:
        return [node_id for node_id in NODE_IDS if node_id not in self.killed]

    def client_config(self, *, nodes: list[int] | None = None) -> dict[str, Any]:
        """kafka-python keyword arguments for this cluster (all nodes, or `nodes`)."""
        return {
            "bootstrap_servers": [self.bootstrap(n) for n in (nodes or NODE_IDS)],
            # kafka-python's default backs off up to 30 s between reconnects to a node that went
            # away; the Java client's 1 s keeps fail-over quick (as kafka_bridge.connection does).
            "reconnect_backoff_max_ms": 1000,
        }

    def admin(self, *, nodes: list[int] | None = None, timeout_ms: int = 10_000) -> KafkaAdminClient:
        return KafkaAdminClient(
            **self.client_config(nodes=nodes),
            client_id="test-cluster-admin",
            request_timeout_ms=timeout_ms,
            bootstrap_timeout_ms=timeout_ms,
        )

    # -- files -------------------------------------------------------------------------------

    def node_dir(self, node_id: int) -> Path:
        return self.data_dir / f"node-{node_id}"

    def config_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / "server.properties"

    def log_tail(self, node_id: int, lines: int = 30) -> str:
        logs = self.node_dir(node_id) / "logs"
        text = []
        for name in ("kafka.out", "server.log"):
            path = logs / name
            if path.exists():
                tail = path.read_text(errors="replace").splitlines()[-lines:]
                text.append(f"--- node {node_id} {name} ---\n" + "\n".join(tail))
        return "\n".join(text) or f"(node {node_id} wrote no log)"

    def _write_config(self, node_id: int) -> None:
        voters = ",".join(f"{n}@127.0.0.1:{self.controller_ports[n]}" for n in NODE_IDS)
        node_dir = self.node_dir(node_id)
        (node_dir / "log").mkdir(parents=True, exist_ok=True)
        (node_dir / "logs").mkdir(parents=True, exist_ok=True)
        port, controller_port = self.ports[node_id], self.controller_ports[node_id]
        self.config_path(node_id).write_text(
            f"""\
# Written by tests/support/cluster.py for one test run.
process.roles=broker,controller
node.id={node_id}
controller.quorum.voters={voters}
listeners=PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}
advertised.listeners=PLAINTEXT://127.0.0.1:{port}
controller.listener.names=CONTROLLER
inter.broker.listener.name=PLAINTEXT
listener.security.protocol.map=CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT
log.dirs={node_dir / "log"}
num.partitions=1
default.replication.factor=3
min.insync.replicas=2
offsets.topic.replication.factor=3
transaction.state.log.replication.factor=3
transaction.state.log.min.isr=2
group.initial.rebalance.delay.ms=0
auto.create.topics.enable=false
# An out-of-sync replica must never become leader: that is how acknowledged writes get lost.
unclean.leader.election.enable=false
"""
        )

    # -- processes ---------------------------------------------------------------------------

    def _java(self, node_id: int, *args: str) -> list[str]:
        return [
            "java",
            *HEAP_OPTS,
            "-XX:+UseG1GC",
            "-XX:MaxGCPauseMillis=20",
            "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={KAFKA_DIR / 'log4j2.properties'}",
            f"-Dkafka.logs.dir={self.node_dir(node_id) / 'logs'}",
            "-cp",
            f"{LIB}/*",
            *args,
        ]

    def _spawn(self, node_id: int, args: list[str], output: Path) -> subprocess.Popen:
        with output.open("ab") as out:
            # A session (process group) of its own: kill() and stop() signal the whole group,
            # and a Ctrl-C in the terminal does not reach the JVM before the teardown does.
            return subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=_die_with_parent,
            )

    def _format(self) -> None:
        cluster_id = kafka_cluster_id()
        # Static voters (controller.quorum.voters): no --standalone, no --initial-controllers.
        formats = {
            node_id: self._spawn(
                node_id,
                self._java(
                    node_id, "kafka.tools.StorageTool", "format", "-t", cluster_id, "-c", str(self.config_path(node_id))
                ),
                self.node_dir(node_id) / "logs" / "format.log",
            )
            for node_id in NODE_IDS
        }
        try:
            for node_id, process in formats.items():
                if process.wait(timeout=60) != 0:
                    log = (self.node_dir(node_id) / "logs" / "format.log").read_text(errors="replace")
                    raise RuntimeError(f"formatting node {node_id}'s storage failed:\n{log}")
        finally:
            for process in formats.values():
                if process.poll() is None:
                    os.killpg(process.pid, signal.SIGKILL)
                    process.wait(timeout=30)

    def _unfenced_brokers(self) -> int:
        for node_id, process in self.processes.items():
            if node_id not in self.killed and process.poll() is not None:
                raise AssertionError(
                    f"node {node_id} exited during start-up (code {process.returncode}):\n" + self.log_tail(node_id)
                )
        try:
            admin = self.admin(timeout_ms=3000)
        except KafkaError:
            return 0
        try:
            brokers = admin.describe_cluster()["brokers"]
        except KafkaError:
            return 0
        finally:
            admin.close()
        # describe_cluster() also lists fenced brokers, which take no partitions yet.
        return sum(1 for broker in brokers if not broker.get("is_fenced"))

    def start(self) -> None:
        """Write the configs, format the storage, start the 3 JVMs and wait for 3 live brokers."""
        if not any(LIB.glob("kafka_*.jar")):
            raise AssertionError(
                f"{LIB} holds no Kafka broker jars: run `make kafka-up` (`make test` does) to "
                "resolve them from kafka/pom.xml"
            )
        for node_id in NODE_IDS:
            self._write_config(node_id)
        self._format()
        for node_id in NODE_IDS:
            self.processes[node_id] = self._spawn(
                node_id,
                self._java(node_id, "kafka.Kafka", str(self.config_path(node_id))),
                self.node_dir(node_id) / "logs" / "kafka.out",
            )
        wait_until(
            lambda: self._unfenced_brokers() == len(NODE_IDS),
            timeout=self.start_timeout,
            interval=0.5,
            message=lambda: (
                "the cluster did not list 3 live brokers:\n" + "\n".join(self.log_tail(n, 10) for n in NODE_IDS)
            ),
        )

    def kill(self, node_id: int) -> None:
        """SIGKILL one node: no controlled shutdown, no flush, as if its machine lost power."""
        process = self.processes[node_id]
        self.killed.add(node_id)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=30)

    def stop(self) -> None:
        """SIGTERM every node still running, and SIGKILL those still there after `stop_grace` s.

        The data is thrown away, so a clean shutdown buys nothing but time: with a node
        killed, the last node's controlled shutdown can wait for a controller quorum that is gone.
        """
        running = [p for p in self.processes.values() if p.poll() is None]
        for process in running:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        for process in running:
            try:
                process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=30)

    def __enter__(self) -> KafkaCluster:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()
