import json

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import DatabaseError

from kafka_bridge.connection import KafkaBridgeError
from kafka_bridge.debezium.connector import connect_client, connector_register, connector_remove
from kafka_bridge.debezium.status import outbox_connector_status, status_lines
from kafka_bridge.text import one_line


class Command(BaseCommand):
    help = (
        "The Debezium outbox connector on Kafka Connect (OUTBOX_PUBLISHER=debezium): register it (idempotent), "
        "show its status (exit 1 when it is not publishing), or delete it (--drop-slot: its replication slot too)."
    )

    def add_arguments(self, parser):
        sub = parser.add_subparsers(dest="action", required=True)
        register = sub.add_parser(
            "register", help="create or update the connector, its publication and heartbeat topic"
        )
        register.add_argument(
            "--database-host", help="PostgreSQL's host as Kafka Connect reaches it (default: this process's)"
        )
        register.add_argument("--database-port", type=int, help="PostgreSQL's port as Kafka Connect reaches it")
        status = sub.add_parser("status", help="the connector's state, tasks, slot lag and backlog")
        status.add_argument("--json", action="store_true", dest="as_json")
        delete = sub.add_parser("delete", help="delete the connector")
        delete.add_argument("--drop-slot", action="store_true", help="also drop its replication slot (WAL is freed)")

    def handle(self, *args, action: str, **options):
        client = connect_client()
        try:
            if action == "register":
                if settings.OUTBOX_PUBLISHER != "debezium":
                    raise CommandError(
                        "register refused: OUTBOX_PUBLISHER is relay, and the relay and Debezium together would "
                        "publish every event twice; set OUTBOX_PUBLISHER=debezium",
                        returncode=2,
                    )
                self.stdout.write(
                    str(
                        connector_register(
                            client=client,
                            database_host=options["database_host"],
                            database_port=options["database_port"],
                        )
                    )
                )
            elif action == "status":
                status = outbox_connector_status(
                    client=client,
                    max_slot_lag_bytes=settings.READINESS_MAX_SLOT_LAG_BYTES,
                    max_age_seconds=settings.READINESS_MAX_OUTBOX_AGE_SECONDS,
                )
                self.stdout.write(
                    json.dumps(status, indent=2) if options["as_json"] else "\n".join(status_lines(status))
                )
                if status["problems"]:
                    raise CommandError(status["problems"][0], returncode=1)
            else:
                for line in connector_remove(client=client, drop_slot=options["drop_slot"]):
                    self.stdout.write(line)
        except (KafkaBridgeError, DatabaseError, ValueError) as exc:
            raise CommandError(one_line(str(exc)), returncode=1) from exc
