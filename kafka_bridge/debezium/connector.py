"""The outbox connector: its configuration, built from the repo's file and this deployment's
database, and its registration (idempotent: the same configuration PUT again changes nothing).

The file (`DEBEZIUM_CONNECTOR_CONFIG`, connect/outbox-connector.json) holds what no deployment
changes: the EventRouter's field mapping, the converters that keep the payload's JSON bytes as
they are, the transforms that give the records the outbox row's own headers, exactly-once
delivery. `connector_config` adds the database's address and credentials (the test database's,
in the tests), the slot's, the publication's and the topic prefix's names, and the outbox
table."""

from __future__ import annotations

import json
import time
from dataclasses import dataclass

from django.conf import settings
from django.db import DatabaseError, connection

from kafka_bridge.cluster.topics import TopicSpec, topics_ensure
from kafka_bridge.connection import admin_client
from kafka_bridge.debezium.postgres import publication_ensure, slot_drop
from kafka_bridge.debezium.rest import ConnectClient, ConnectError
from kafka_bridge.models import OutboxEvent

# Debezium's default `topic.heartbeat.prefix`: its heartbeats go to <prefix>.<topic.prefix>, a
# topic that must exist before the first heartbeat.
HEARTBEAT_TOPIC_PREFIX = "__debezium-heartbeat"


def connect_client() -> ConnectClient:
    return ConnectClient(url=settings.KAFKA_CONNECT_URL, timeout=settings.KAFKA_CONNECT_TIMEOUT_SECONDS)


def heartbeat_topic() -> str:
    return f"{HEARTBEAT_TOPIC_PREFIX}.{settings.DEBEZIUM_TOPIC_PREFIX}"


def connector_config(*, database_host: str | None = None, database_port: int | None = None) -> dict[str, str]:
    """The connector's configuration: the file's, with this deployment's database (as Kafka
    Connect's workers reach it: `database_host`/`database_port` when that is not the address
    this process uses) and the project's names."""
    config = json.loads(settings.DEBEZIUM_CONNECTOR_CONFIG.read_text(encoding="utf-8"))
    db = connection.settings_dict
    with connection.cursor() as cursor:
        cursor.execute("SELECT current_schema()")
        schema = cursor.fetchone()[0]
    config.update(
        {
            "database.hostname": database_host or db["HOST"] or "127.0.0.1",
            "database.port": str(database_port or db["PORT"] or 5432),
            "database.user": db["USER"] or "",
            "database.password": db["PASSWORD"] or "",
            "database.dbname": db["NAME"],
            "slot.name": settings.DEBEZIUM_SLOT_NAME,
            "publication.name": settings.DEBEZIUM_PUBLICATION_NAME,
            "topic.prefix": settings.DEBEZIUM_TOPIC_PREFIX,
            "table.include.list": f"{schema}.{OutboxEvent._meta.db_table}",
        }
    )
    return config


@dataclass(frozen=True)
class Registration:
    connector: str
    action: str  # "created", "updated" or "unchanged"
    publication: str  # "created", "altered" or "unchanged"

    def __str__(self) -> str:
        return (
            f"connector {self.connector}: {self.action}; publication {settings.DEBEZIUM_PUBLICATION_NAME}: "
            f"{self.publication}"
        )


def connector_register(
    *, client: ConnectClient, database_host: str | None = None, database_port: int | None = None
) -> Registration:
    """Make the publication, the heartbeat topic and the connector what the project says:
    nothing changes where they already are."""
    publication = publication_ensure(name=settings.DEBEZIUM_PUBLICATION_NAME, table=OutboxEvent._meta.db_table)
    topics_ensure(specs=[TopicSpec(name=heartbeat_topic(), partitions=1, replication_factor=-1)])
    config = connector_config(database_host=database_host, database_port=database_port)
    name = settings.DEBEZIUM_CONNECTOR_NAME
    current = client.connector_config(name=name)
    if (
        current is not None
        and all(current.get(k) == v for k, v in config.items())
        and set(current) - {"name"} <= set(config)
    ):
        return Registration(connector=name, action="unchanged", publication=publication)
    client.connector_config_put(name=name, config=config)
    return Registration(connector=name, action="created" if current is None else "updated", publication=publication)


def connector_remove(*, client: ConnectClient, drop_slot: bool, slot_wait: float = 30.0) -> list[str]:
    """Delete the connector; with `drop_slot`, then its replication slot (once the connector's
    task has let go of it, up to `slot_wait` seconds). What was done, as lines."""
    name, slot = settings.DEBEZIUM_CONNECTOR_NAME, settings.DEBEZIUM_SLOT_NAME
    done = []
    if drop_slot and client.connector_status(name=name) is not None:
        # The committed source offsets outlive the connector; a connector registered again under
        # its name would ask the new slot for a position it never had. Forgotten with the slot.
        client.connector_stop(name=name)
        deadline = time.monotonic() + slot_wait
        while (client.connector_status(name=name) or {}).get("connector", {}).get("state") != "STOPPED":
            if time.monotonic() > deadline:
                raise ConnectError(f"connector {name} did not stop within {slot_wait:g} s")
            time.sleep(0.2)
        client.connector_offsets_reset(name=name)
        done.append(f"connector {name}: offsets reset")
    done.append(f"connector {name}: {'deleted' if client.connector_delete(name=name) else 'not registered'}")
    if drop_slot:
        deadline = time.monotonic() + slot_wait
        while True:
            try:
                dropped = slot_drop(name=slot)
            except DatabaseError as exc:
                # "replication slot ... is active": the deleted connector's task has not let go yet.
                if "is active" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.5)
                continue
            break
        done.append(f"replication slot {slot}: {'dropped' if dropped else 'none'}")
    return done


def connector_purge(*, client: ConnectClient) -> list[str]:
    """All that `connector_register` made, gone: the connector with its offsets and its slot,
    the publication and the heartbeat topic. For runs under names of their own (the tests, the
    bench); a deployment keeps its publication and heartbeat topic for the next registration."""
    done = connector_remove(client=client, drop_slot=True)
    with connection.cursor() as cursor:
        cursor.execute(f"DROP PUBLICATION IF EXISTS {connection.ops.quote_name(settings.DEBEZIUM_PUBLICATION_NAME)}")
    done.append(f"publication {settings.DEBEZIUM_PUBLICATION_NAME}: dropped")
    with admin_client(timeout_ms=10_000) as admin:
        existing = [t["name"] for t in admin.describe_topics([heartbeat_topic()]) if t["error_code"] == 0]
        if existing:
            admin.delete_topics(existing)
            done.append(f"topic {heartbeat_topic()}: deleted")
    return done
