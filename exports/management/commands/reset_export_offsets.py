from datetime import datetime

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kafka_bridge.cluster.group_offsets import group_offsets_reset
from kafka_bridge.connection import KafkaBridgeError


def parse_aware_datetime(text: str) -> datetime:
    """An ISO-8601 datetime with a timezone (`Z` or `+02:00`). One without is refused rather than
    guessed: the operator's local time, the server's and UTC can be hours apart."""
    try:
        moment = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(
            f"--to-datetime takes an ISO-8601 datetime such as 2026-11-24T09:30:00Z, not {text!r}"
        ) from None
    if moment.utcoffset() is None:
        raise ValueError(f"--to-datetime {text} has no timezone; add one, e.g. {text}Z for UTC or {text}+01:00")
    return moment


class Command(BaseCommand):
    help = (
        "Move the export consumer group's committed offsets on the event topic to the earliest "
        "or latest offset, or to the first record at or after a datetime. Refused while the "
        "group has active members."
    )

    def create_parser(self, prog_name, subcommand, **kwargs):
        parser = super().create_parser(prog_name, subcommand, **kwargs)
        # A usage error is one line ("...: error: one of the arguments ... is required"), not
        # the whole usage block first; --help still prints everything.
        parser.print_usage = lambda file=None: None
        return parser

    def add_arguments(self, parser):
        target = parser.add_mutually_exclusive_group(required=True)
        target.add_argument("--to-earliest", action="store_true", help="the first offset still on the topic")
        target.add_argument("--to-latest", action="store_true", help="the end: skip everything not yet consumed")
        target.add_argument(
            "--to-datetime",
            metavar="ISO",
            help="the first record at or after this time, e.g. 2026-11-24T09:30:00Z (a timezone is required)",
        )
        parser.add_argument("--dry-run", action="store_true", help="print the moves, change nothing")

    def handle(self, *args, to_earliest: bool, to_latest: bool, to_datetime: str | None, dry_run: bool, **options):
        if to_datetime is not None:
            try:
                target = parse_aware_datetime(to_datetime)
            except ValueError as exc:
                raise CommandError(str(exc), returncode=2) from exc
        else:
            target = "earliest" if to_earliest else "latest"
        try:
            reset = group_offsets_reset(
                group=settings.ORDER_EXPORT_CONSUMER_GROUP,
                topic=settings.ORDER_EXPORT_TOPIC,
                target=target,
                dry_run=dry_run,
            )
        except KafkaBridgeError as exc:
            raise CommandError(str(exc), returncode=1) from exc
        for move in reset.moves:
            self.stdout.write(str(move))
        self.stdout.write(reset.summary())
