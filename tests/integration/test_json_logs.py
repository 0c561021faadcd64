"""LOG_FORMAT=json: one JSON object per line with time, level, logger, message and the extra
fields; the consumer's lines about a record carry its order id, event id, partition and offset,
while the plain text of those lines stays as it was."""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
from typing import Any

import pytest

from config.env import BASE_DIR
from config.logging import JsonFormatter
from exports.platform.client import TransientExportError
from kafka_bridge.models import OutboxEvent
from kafka_bridge.outbox.publisher import request_publisher
from orders.services import order_confirm
from tests.support.factories import order_factory
from tests.support.helpers import wait_until
from tests.support.platforms import RecordingPlatform


class JsonLines:
    """A handler with the JSON formatter on the given loggers; `lines()` parses what it wrote."""

    def __init__(self, *loggers: str):
        self.stream = io.StringIO()
        self.handler = logging.StreamHandler(self.stream)
        self.handler.setFormatter(JsonFormatter())
        self.loggers = [logging.getLogger(name) for name in loggers]
        for logger in self.loggers:
            logger.addHandler(self.handler)

    def lines(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stream.getvalue().splitlines()]

    def close(self) -> None:
        for logger in self.loggers:
            logger.removeHandler(self.handler)


@pytest.fixture
def json_lines():
    capture = JsonLines("exports.consumer", "kafka_bridge.consumer")
    yield capture
    capture.close()


@pytest.fixture
def export_lines_on():
    """LOG_LEVELS=exports.consumer=DEBUG: the line per export, which INFO leaves out."""
    consumer_logger = logging.getLogger("exports.consumer")
    level = consumer_logger.level
    consumer_logger.setLevel(logging.DEBUG)
    yield
    consumer_logger.setLevel(level)


def test_the_formatter_writes_one_json_object_with_the_extra_fields():
    record = logging.LogRecord("orderflow.test", logging.WARNING, __file__, 1, "order %s: %s", (7, "late"), None)
    record.order_id, record.partition = 7, 2

    entry = json.loads(JsonFormatter().format(record))

    assert entry.pop("time").endswith("+00:00")
    assert entry == {
        "level": "WARNING",
        "logger": "orderflow.test",
        "message": "order 7: late",
        "order_id": 7,
        "partition": 2,
    }


def test_the_formatter_keeps_an_exception_and_values_json_cannot_hold_on_one_line():
    import uuid

    try:
        raise ValueError("boom\nsecond line")
    except ValueError:
        record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    record.event_id = uuid.UUID("0b6e2c1e-8a0f-4c55-9a3e-6f1d2b7c9e10")

    text = JsonFormatter().format(record)

    assert "\n" not in text
    entry = json.loads(text)
    assert entry["event_id"] == "0b6e2c1e-8a0f-4c55-9a3e-6f1d2b7c9e10"
    assert entry["exception"].startswith("Traceback") and "ValueError: boom\nsecond line" in entry["exception"]


class FlakyPlatform(RecordingPlatform):
    """Fails the first call with a transient error, then takes every order."""

    def __init__(self) -> None:
        super().__init__()
        self.failed = False

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        if not self.failed:
            self.failed = True
            raise TransientExportError("platform answered 503")
        super().send(order=order, idempotency_key=idempotency_key)


@pytest.fixture
def fake_platform() -> FlakyPlatform:
    return FlakyPlatform()


@pytest.mark.kafka
@pytest.mark.django_db(transaction=True)
def test_every_consumer_line_about_a_record_carries_order_event_partition_and_offset(
    json_lines, export_lines_on, running_export_consumer, export_topics, fresh_publisher
):
    topic, _ = export_topics
    order = order_factory()
    order_confirm(order_id=order.pk)
    wait_until(lambda: running_export_consumer.received_order_ids() == [order.pk], timeout=30)
    assert request_publisher().flush(timeout=10)
    row = OutboxEvent.objects.get(key=str(order.pk))
    expected = {"order_id": order.pk, "event_id": str(row.event_id), "partition": row.partition, "offset": row.offset}

    exported = wait_until(
        lambda: [line for line in json_lines.lines() if line.get("outcome") == "exported"], timeout=10
    )
    retried = [line for line in json_lines.lines() if line["logger"] == "kafka_bridge.consumer" and "offset" in line]

    # The loop's retry line and the export line, each with the record's coordinates.
    assert retried and exported
    for line in retried + exported:
        assert {name: line.get(name) for name in expected} == expected, line
        assert line["topic"] == topic
    # The text of the export line is the plain one, unchanged.
    assert exported[0]["message"] == (
        f"export: order {order.pk} event {row.event_id} partition {row.partition} offset {row.offset}: exported"
    )
    assert exported[0]["level"] == "DEBUG" and exported[0]["logger"] == "exports.consumer"
    assert retried[0]["level"] == "WARNING" and "attempt 1/" in retried[0]["message"]


def run_django(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); import logging; {code}"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_log_format_json_makes_every_line_a_json_object():
    result = run_django(
        "logging.getLogger('exports.consumer').info('export: order %s', 7, extra={'order_id': 7, 'offset': 41})",
        LOG_FORMAT="json",
    )

    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    entry = json.loads(line)
    assert {name: entry[name] for name in ("level", "logger", "message", "order_id", "offset")} == {
        "level": "INFO",
        "logger": "exports.consumer",
        "message": "export: order 7",
        "order_id": 7,
        "offset": 41,
    }


def test_log_format_plain_is_the_default_and_keeps_the_text_line():
    result = run_django("logging.getLogger('exports.consumer').info('export: order %s', 7, extra={'order_id': 7})")

    assert result.returncode == 0, result.stderr
    [line] = result.stderr.splitlines()
    assert line.endswith(" INFO exports.consumer export: order 7")


def test_an_unknown_log_format_stops_start_up_with_a_clear_error():
    result = run_django("", LOG_FORMAT="xml")

    assert result.returncode == 1
    assert "ImproperlyConfigured: LOG_FORMAT='xml' is not one of plain, json" in result.stderr


def test_log_levels_set_single_loggers_and_leave_the_others_at_the_root_level():
    result = run_django(
        "logging.getLogger('exports.consumer').info('export: order 7: exported');"
        "logging.getLogger('exports.consumer').warning('export: order 8: retrying');"
        "logging.getLogger('kafka_bridge.consumer').info('consumer: 1 record');"
        "logging.getLogger('kafka_bridge.outbox.relay').debug('relay: idle')",
        LOG_LEVELS="exports.consumer=WARNING, kafka_bridge.outbox.relay=debug",
    )

    assert result.returncode == 0, result.stderr
    assert [line.split(" ", 2)[2] for line in result.stderr.splitlines()] == [
        "WARNING exports.consumer export: order 8: retrying",
        "INFO kafka_bridge.consumer consumer: 1 record",
        "DEBUG kafka_bridge.outbox.relay relay: idle",
    ]


@pytest.mark.parametrize("value", ["exports.consumer", "exports.consumer=LOUD", "=INFO"])
def test_a_malformed_log_levels_entry_stops_start_up_in_one_line(value):
    result = subprocess.run(
        [sys.executable, "manage.py", "check"],
        cwd=BASE_DIR,
        capture_output=True,
        text=True,
        timeout=60,
        env={
            **os.environ,
            "DJANGO_SETTINGS_MODULE": "config.settings.production",
            "DJANGO_DEBUG": "true",
            "LOG_LEVELS": value,
        },
    )

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        f"ImproperlyConfigured: LOG_LEVELS entry {value!r} is not <logger>=<DEBUG|INFO|WARNING|ERROR|CRITICAL>"
    ]
