import json

from django.core.management.base import BaseCommand, CommandError

from exports.console.trace import order_trace
from exports.console.trace_output import order_trace_data, order_trace_lines


class Command(BaseCommand):
    help = (
        "Where an order is between its confirm and the platform: its outbox event, its record read "
        "back from the topic, every export attempt, its dead letter and redrives, and the time "
        "between the steps."
    )

    def add_arguments(self, parser):
        parser.add_argument("order_id", help="the order's id")
        parser.add_argument("--json", dest="as_json", action="store_true", help="one JSON object instead of text")
        parser.add_argument(
            "--no-topics",
            action="store_true",
            help="only what the database knows: do not read the record and dead letter back",
        )

    def handle(self, *args, order_id: str, as_json: bool, no_topics: bool, **options):
        if not (order_id.isascii() and order_id.isdigit()):
            raise CommandError(f"the order id must be a number, not {order_id!r}")
        trace = order_trace(order_id=int(order_id), read_topics=not no_topics)
        if trace is None:
            raise CommandError(f"no order {order_id}")
        if as_json:
            self.stdout.write(json.dumps(order_trace_data(trace), indent=2, ensure_ascii=False))
        else:
            self.stdout.write("\n".join(order_trace_lines(trace)))
