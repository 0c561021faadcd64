from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from kafka.errors import KafkaError

from exports.consumer import export_consumer
from kafka_bridge.metrics import metrics_serve
from kafka_bridge.runner import StopFlag, garbage_collector_settle


class Command(BaseCommand):
    help = (
        "Consume the order-export topic in the consumer group and export each order to the "
        "external platform, until SIGINT/SIGTERM."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--concurrency", type=int, help="platform calls in flight at once (default EXPORT_CONCURRENCY, 32)"
        )
        parser.add_argument("--rate-limit", type=float, help="platform calls per second at most (default: no limit)")
        parser.add_argument("--metrics-port", type=int, default=0, help="serve /metrics on this port (default 0: off)")
        parser.add_argument("--metrics-addr", default="127.0.0.1", help="the address /metrics listens on")

    def handle(self, *args, concurrency, rate_limit, metrics_port, metrics_addr, **options):
        for name, value in (("--concurrency", concurrency), ("--rate-limit", rate_limit)):
            if value is not None and value <= 0:
                raise CommandError(f"{name} must be positive, not {value}", returncode=1)
        stop = StopFlag()
        stop.install_signal_handlers()
        try:
            loop = export_consumer(stop=stop, concurrency=concurrency, rate_limit=rate_limit)
        except ImproperlyConfigured as exc:
            # No platform to export to: refuse to start rather than drop every order.
            raise CommandError(str(exc), returncode=1) from exc
        metrics_serve(port=metrics_port, addr=metrics_addr)
        garbage_collector_settle()
        try:
            loop.run()
        except KafkaError as exc:
            # Only what the loop cannot ride out reaches here, such as refused credentials.
            raise CommandError(f"Kafka: {type(exc).__name__}: {exc}", returncode=1) from exc
