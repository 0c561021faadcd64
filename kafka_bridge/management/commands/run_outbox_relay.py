from django.conf import settings
from django.core.management.base import BaseCommand, CommandError

from kafka_bridge.metrics import metrics_serve
from kafka_bridge.outbox.relay import OutboxRelay
from kafka_bridge.runner import StopFlag


class Command(BaseCommand):
    help = "Publish outbox events not yet acknowledged by Kafka, oldest first, until SIGINT/SIGTERM."

    def add_arguments(self, parser):
        parser.add_argument("--batch-size", type=int, help="rows per round (default OUTBOX_RELAY_BATCH_SIZE)")
        parser.add_argument(
            "--interval", type=float, help="seconds between rounds when idle (default OUTBOX_RELAY_INTERVAL)"
        )
        parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port (default 0: off)")
        parser.add_argument("--metrics-addr", default="127.0.0.1", help="the address /metrics listens on")

    def handle(self, *args, batch_size, interval, metrics_port, metrics_addr, **options):
        if settings.OUTBOX_PUBLISHER != "relay":
            raise CommandError(
                f"run_outbox_relay does not run with OUTBOX_PUBLISHER={settings.OUTBOX_PUBLISHER}: the Debezium "
                "connector publishes the outbox (manage.py debezium_connector status)",
                returncode=2,
            )
        stop = StopFlag()
        stop.install_signal_handlers()
        metrics_serve(port=metrics_port, addr=metrics_addr)
        OutboxRelay(stop=stop, batch_size=batch_size, interval=interval).run()
