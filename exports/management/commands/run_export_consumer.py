from django.core.management.base import BaseCommand

from exports.consumer import export_consumer
from kafka_bridge.runner import StopFlag


class Command(BaseCommand):
    help = (
        "Consume the order-export topic in the consumer group and export each order to the "
        "external platform, until SIGINT/SIGTERM."
    )

    def handle(self, *args, **options):
        stop = StopFlag()
        stop.install_signal_handlers()
        export_consumer(stop=stop).run()
