from django.core.management.base import BaseCommand, CommandError

from kafka_bridge.cluster.topics import topics_ensure
from kafka_bridge.connection import KafkaBridgeError
from kafka_bridge.registry import managed_topic_specs


class Command(BaseCommand):
    help = (
        "Create the event topic and its dead-letter topic if missing, and grow their partition "
        "count to ORDER_EXPORT_PARTITIONS. Exits 1, changing nothing, if that would lower it."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--partitions",
            type=int,
            help="partition count to create or grow to (default: ORDER_EXPORT_PARTITIONS)",
        )

    def handle(self, *args, partitions: int | None, **options):
        if partitions is not None and partitions < 1:
            raise CommandError(f"--partitions must be at least 1, not {partitions}", returncode=2)
        try:
            changes = topics_ensure(specs=managed_topic_specs(partitions=partitions))
        except KafkaBridgeError as exc:
            raise CommandError(str(exc), returncode=1) from exc
        for change in changes:
            self.stdout.write(str(change))
