"""Tracing exported, for the figures measured with and without it in one run: an OTLP/HTTP
receiver process (`python -m tests.support.otlp_receiver`, as a collector's otlp receiver on
4318 answers) and the standard OTEL_* variables that make a process export its spans to it.
The consume and http measurements each run one variant with them beside their untraced one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

from bench.harness import PYTHON, BenchError, Harness, log_tail

RECEIVER_TIMEOUT = 30.0
# The label of a traced variant's figure.
TRACED = "tracing exported (OTEL_TRACES_EXPORTER=otlp, http/protobuf)"


@contextmanager
def otlp_receiver_running(harness: Harness) -> Iterator[dict[str, str]]:
    """A receiver process while the block runs; yields the OTEL_* variables that export to it
    (the SDK's defaults otherwise: the parent-based always-on sampler, batches every 5 s)."""
    port_file = harness.path("otlp-port")
    worker = harness.command(
        [PYTHON, "-m", "tests.support.otlp_receiver", "--port", "0", "--port-file", str(port_file)],
        env=harness.env(),
        name="otlp-receiver",
    )
    try:
        deadline = time.monotonic() + RECEIVER_TIMEOUT
        while not (port_file.exists() and port_file.read_text().strip()):
            if not worker.alive():
                raise BenchError(
                    f"the OTLP receiver exited with {worker.process.returncode}\n{log_tail(worker.log_path)}"
                )
            if time.monotonic() > deadline:
                raise BenchError(f"the OTLP receiver did not listen within {RECEIVER_TIMEOUT:g} s")
            time.sleep(0.02)
        yield {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{int(port_file.read_text())}",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            "OTEL_SERVICE_NAME": "orderflow-bench",
        }
    finally:
        worker.terminate(timeout=10)
