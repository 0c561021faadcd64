from django.conf import settings
from django.core.management.base import BaseCommand

from kafka_bridge.metrics import metrics_serve
from kafka_bridge.relay import OutboxRelay
from kafka_bridge.runner import StopFlag


class Command(BaseCommand):
    help = "Publish outbox events not yet acknowledged by Kafka, oldest first, until SIGINT/SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, help="rows per round (default OUTBOX_RELAY_BATCH_SIZE)")
        parser.add_argument(
            "--interval", type=float, help="seconds between rounds when idle (default OUTBOX_RELAY_INTERVAL)"
        )

    def handle(self, *args, batch_size: int | None, interval: float | None, **options):
        stop = StopFlag()
        stop.install_signal_handlers()
        metrics_serve(port=settings.OUTBOX_RELAY_METRICS_PORT, addr=settings.METRICS_ADDR)
        OutboxRelay(stop=stop, batch_size=batch_size, interval=interval).run()
