from django.core.management.base import BaseCommand, CommandError
from kafka.errors import KafkaError

from exports.redrive import RedriveForbidden, dlt_replay
from kafka_bridge.client import KafkaBridgeError


class Command(BaseCommand):
    help = (
        "Republish dead-lettered order-export records to the topic they came from, oldest first, "
        "reopening their exports. Needs a user with the exports.redrive_orderexport permission."
    )

    def add_arguments(self, parser):
        parser.add_argument("--operator", required=True, help="username of who does the replay (checked, audited)")
        parser.add_argument("--dry-run", action="store_true", help="list what would be replayed; change nothing")
        parser.add_argument("--limit", type=int, help="replay at most N records")

    def handle(self, *args, operator: str, dry_run: bool, limit: int | None, **options):
        if limit is not None and limit < 1:
            raise CommandError(f"--limit must be at least 1, not {limit}", returncode=2)
        try:
            items = dlt_replay(operator=operator, dry_run=dry_run, limit=limit)
        except RedriveForbidden as exc:
            raise CommandError(f"not allowed: {exc}", returncode=1) from exc
        except (KafkaBridgeError, KafkaError, TimeoutError) as exc:
            raise CommandError(f"Kafka: {exc}", returncode=1) from exc
        for item in items:
            self.stdout.write(("would replay " if dry_run else "replayed ") + str(item))
        verb = "would be replayed (dry run)" if dry_run else "replayed"
        self.stdout.write(f"{len(items)} record(s) {verb}")
