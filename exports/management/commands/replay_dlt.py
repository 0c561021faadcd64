import argparse

from django.core.management.base import BaseCommand, CommandError
from kafka.errors import KafkaError

from exports.redrive import DeadLetterSelection, DeadLettersNotFound, RedriveForbidden, dlt_replay
from kafka_bridge.connection import KafkaBridgeError


def dlt_position(value: str) -> tuple[int, int]:
    """`P:O`, a partition and an offset of the dead-letter topic."""
    partition, _, offset = value.partition(":")
    if not (partition.isascii() and partition.isdigit() and offset.isascii() and offset.isdigit()):
        raise argparse.ArgumentTypeError(f"{value!r} is not PARTITION:OFFSET, e.g. 0:42")
    return int(partition), int(offset)


class Command(BaseCommand):
    help = (
        "Republish dead-lettered order-export records to the topic they came from, oldest first, "
        "reopening their exports: all not replayed yet, or those --offset and --key select. "
        "Needs a user with the exports.redrive_orderexport permission."
    )

    def add_arguments(self, parser):
        parser.add_argument("--operator", required=True, help="username of who does the replay (checked, audited)")
        parser.add_argument("--dry-run", action="store_true", help="list what would be replayed; change nothing")
        parser.add_argument("--limit", type=int, help="replay at most N records")
        parser.add_argument(
            "--offset",
            type=dlt_position,
            action="append",
            default=[],
            metavar="P:O",
            help="the dead letter at this DLT partition and offset (repeatable)",
        )
        parser.add_argument(
            "--key",
            action="append",
            default=[],
            metavar="KEY",
            help="the dead letters with this key, an order id (repeatable)",
        )

    def handle(self, *args, operator: str, dry_run: bool, limit: int | None, offset, key, **options):
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be at least 1, not {limit}", returncode=2)
        selection = DeadLetterSelection(positions=frozenset(offset), keys=frozenset(key))
        try:
            result = dlt_replay(
                operator=operator,
                dry_run=dry_run,
                limit=limit,
                selection=selection,
                progress=lambda line: self.stderr.write(line),
            )
        except RedriveForbidden as exc:
            raise CommandError(f"not allowed: {exc}", returncode=1) from exc
        except DeadLettersNotFound as exc:
            raise CommandError(f"nothing replayed: not on the DLT or replayed before: {exc}", returncode=1) from exc
        except (KafkaBridgeError, KafkaError, TimeoutError) as exc:
            raise CommandError(f"Kafka: {exc}", returncode=1) from exc
        for item in result.items:
            self.stdout.write(("would replay " if dry_run else "replayed ") + str(item))
        for refusal in result.refused:
            self.stderr.write(f"refused {refusal}")
        verb = "would be replayed (dry run)" if dry_run else "replayed"
        self.stdout.write(f"{len(result.items)} record(s) {verb}")
        if result.refused:
            raise CommandError(f"{len(result.refused)} record(s) refused", returncode=1)
