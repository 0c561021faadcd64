import re
from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError

from kafka_bridge.outbox.store import outbox_purge

UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days"}


def parse_age(text: str) -> timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text.strip())
    if not match:
        raise ValueError(f"--older-than takes a number and a unit s, m, h or d (e.g. 7d), not {text!r}")
    return timedelta(**{UNITS[match.group(2)]: int(match.group(1))})


class Command(BaseCommand):
    help = "Delete outbox rows that Kafka acknowledged longer ago than --older-than. Unsent rows are never deleted."

    def add_arguments(self, parser):
        parser.add_argument("--older-than", required=True, help="age such as 30m, 12h or 7d")
        parser.add_argument("--dry-run", action="store_true", help="count, delete nothing")

    def handle(self, *args, older_than: str, dry_run: bool, **options):
        try:
            age = parse_age(older_than)
        except ValueError as exc:
            raise CommandError(str(exc), returncode=2) from exc
        count = outbox_purge(older_than=age, dry_run=dry_run)
        verb = "would delete" if dry_run else "deleted"
        self.stdout.write(f"{verb} {count} sent outbox row(s) older than {older_than}")
