from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.management.base import BaseCommand, CommandError
from kafka.errors import KafkaError

from exports.processor import export_consumer
from kafka_bridge.metrics import metrics_serve
from kafka_bridge.runner import StopFlag


class Command(BaseCommand):
    help = (
        "Consume the order-export topic in the consumer group and export each order to the "
        "external platform, until SIGINT/SIGTERM."
    )

    def handle(self, *args, **options):
        stop = StopFlag()
        stop.install_signal_handlers()
        try:
            loop = export_consumer(stop=stop)
        except ImproperlyConfigured as exc:
            # No platform to export to: refuse to start rather than drop every order.
            raise CommandError(str(exc), returncode=1) from exc
        metrics_serve(port=settings.EXPORT_CONSUMER_METRICS_PORT, addr=settings.METRICS_ADDR)
        try:
            loop.run()
        except KafkaError as exc:
            # Only what the loop cannot ride out reaches here, such as refused credentials.
            raise CommandError(f"Kafka: {type(exc).__name__}: {exc}", returncode=1) from exc
