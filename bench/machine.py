"""What the figures were measured on: the machine and the versions of everything involved."""

from __future__ import annotations

import os
import platform
import re
import subprocess
from importlib import metadata

from bench.harness import ROOT


def machine() -> dict:
    memory = None
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemTotal:"):
                    memory = int(line.split()[1]) * 1024
                    break
    except OSError:
        pass
    cpu_model = platform.processor() or ""
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            cpu_model = next(
                (line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")), cpu_model
            )
    except OSError:
        pass
    return {
        "cpus": os.cpu_count(),
        "memory_bytes": memory,
        "memory_gib": round(memory / 2**30, 1) if memory else None,
        "cpu_model": cpu_model,
        "platform": platform.platform(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _package(name: str) -> str | None:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def _kafka_version() -> str | None:
    jars = sorted((ROOT / "kafka" / "lib").glob("kafka-clients-*.jar"))
    if jars:
        return jars[-1].stem.removeprefix("kafka-clients-")
    pom = ROOT / "kafka" / "pom.xml"
    found = re.search(r"<kafka.version>([^<]+)</kafka.version>", pom.read_text()) if pom.exists() else None
    return found.group(1) if found else None


def _java_version() -> str | None:
    try:
        done = subprocess.run(["java", "-version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired):
        return None
    found = re.search(r'version "([^"]+)"', done.stderr)
    return found.group(1) if found else None


def versions(database_facts: dict[str, dict]) -> dict:
    librdkafka = None
    try:
        import confluent_kafka

        librdkafka = confluent_kafka.libversion()[0]
    except ImportError:
        pass
    return {
        "Python": platform.python_version(),
        "Django": _package("Django"),
        "kafka-python": _package("kafka-python"),
        "Kafka": _kafka_version(),
        "Java": _java_version(),
        "confluent-kafka": _package("confluent-kafka"),
        "librdkafka": librdkafka,
        "gunicorn": _package("gunicorn"),
        "psycopg": _package("psycopg"),
        "PostgreSQL": database_facts.get("postgresql", {}).get("version"),
        "SQLite": database_facts.get("sqlite", {}).get("version"),
    }
