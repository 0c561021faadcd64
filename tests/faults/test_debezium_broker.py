"""The broker stopped and started under Debezium (OUTBOX_PUBLISHER=debezium): a broker, a Kafka
Connect worker and an outbox connector of the test's own (the shared broker is never stopped),
orders confirmed while the broker is away; every event on the topic once.

Marked `serial` and `debezium` like tests/integration/test_debezium.py: skipped where the test
database is not PostgreSQL with logical decoding."""

from __future__ import annotations

import contextlib
import threading
from collections import Counter

import pytest

from kafka_bridge.models import OutboxEvent
from tests.support.connect import connect_worker_started, debezium_connector_registered, logical_decoding_or_skip
from tests.support.factories import order_factory
from tests.support.figures import report_figures
from tests.support.helpers import wait_until
from tests.support.records import end_offsets, read_records

pytestmark = [pytest.mark.kafka, pytest.mark.serial, pytest.mark.debezium]


@pytest.fixture
def logical_decoding(transactional_db):
    logical_decoding_or_skip()


@pytest.fixture
def worker_on_private_broker(logical_decoding, private_broker, tmp_path):
    yield from connect_worker_started(tmp_path / "connect", bootstrap=private_broker.bootstrap)


def test_broker_stopped_and_started_under_the_connector_loses_nothing_and_doubles_nothing(
    logical_decoding, private_broker, worker_on_private_broker, export_topics
):
    topic, _ = export_topics
    total = 400
    failures: list[BaseException] = []
    with_broker_down = threading.Event()

    def confirm_all() -> None:
        from django.db import connection

        try:
            for i in range(total):
                if i == total // 4:
                    # A quarter confirmed with the broker up, the rest while it is away.
                    with_broker_down.wait(timeout=60)
                order_factory(customer_id=f"down-{i}", confirmed=True)
        except BaseException as exc:
            failures.append(exc)
        finally:
            connection.close()

    with contextlib.contextmanager(debezium_connector_registered)(worker_on_private_broker):
        confirming = threading.Thread(target=confirm_all, name="confirm-while-down")
        confirming.start()
        try:
            wait_until(lambda: sum(end_offsets(topic).values()) >= total // 4, timeout=60, message="no record arrived")
            private_broker.stop()
            with_broker_down.set()
            confirming.join(timeout=120)
            assert not failures, failures
            stopped_at = OutboxEvent.objects.count()  # every row written while the broker was away
            private_broker.start()
        finally:
            with_broker_down.set()
            confirming.join(timeout=120)

        records = read_records(topic, expected=total, timeout=120, isolation_level="read_committed")
        counts = Counter(dict(r.headers)["event_id"].decode() for r in records)
        uncommitted = len(read_records(topic, expected=total, timeout=30))
        report_figures(
            "broker stopped and started under the Debezium connector",
            orders=total,
            written_while_down=total - total // 4,
            lost=total - len(counts),
            doubled=sum(1 for n in counts.values() if n > 1),
            records_incl_aborted=uncommitted,
        )
        assert stopped_at == total
        assert set(counts) == {str(e) for e in OutboxEvent.objects.values_list("event_id", flat=True)}
        assert max(counts.values()) == 1
