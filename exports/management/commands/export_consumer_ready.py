from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from exports.readiness import export_consumer_readiness


class Command(BaseCommand):
    help = (
        "Readiness probe of the export consumer: exit 0 when its group is Stable, its lag and the "
        "outbox's oldest unsent event (with Debezium: the connector, its slot's lag) are within bounds; else exit 1 with one line saying why."
    )

    def add_arguments(self, parser):
        parser.add_argument("--max-lag", type=int, help="most records of lag still ready (default READINESS_MAX_LAG)")
        parser.add_argument(
            "--max-outbox-age",
            type=float,
            help="oldest unsent outbox event, in seconds, still ready (default READINESS_MAX_OUTBOX_AGE_SECONDS)",
        )
        parser.add_argument(
            "--max-slot-lag",
            type=int,
            help="with OUTBOX_PUBLISHER=debezium: most bytes of WAL the connector's slot may hold back "
            "(default READINESS_MAX_SLOT_LAG_BYTES)",
        )

    def handle(self, *args, max_lag: int | None, max_outbox_age: float | None, max_slot_lag: int | None, **options):
        readiness = export_consumer_readiness(
            max_lag=settings.READINESS_MAX_LAG if max_lag is None else max_lag,
            max_outbox_age=settings.READINESS_MAX_OUTBOX_AGE_SECONDS if max_outbox_age is None else max_outbox_age,
            max_slot_lag=max_slot_lag,
        )
        if not readiness.ready:
            raise CommandError("not ready: " + "; ".join(readiness.problems), returncode=1)
        self.stdout.write("ready: " + ", ".join(readiness.facts))
