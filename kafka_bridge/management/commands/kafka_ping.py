from django.core.management.base import BaseCommand, CommandError

from kafka_bridge.connection import BrokerUnavailable, admin_client, bootstrap_servers


class Command(BaseCommand):
    help = "Send a metadata request to the configured Kafka bootstrap servers; exit 1 if none answers."

    def add_arguments(self, parser):
        parser.add_argument("--timeout", type=float, default=5.0, help="seconds to wait (default 5)")
        parser.add_argument(
            "--print-bootstrap",
            action="store_true",
            help="print the configured bootstrap servers and exit without connecting",
        )

    def handle(self, *args, timeout: float, print_bootstrap: bool, **options):
        if print_bootstrap:
            self.stdout.write(bootstrap_servers())
            return
        try:
            with admin_client(timeout_ms=int(timeout * 1000)) as admin:
                cluster = admin.describe_cluster()
        except BrokerUnavailable as exc:
            raise CommandError(str(exc), returncode=1) from exc
        brokers = cluster["brokers"]
        self.stdout.write(
            f"kafka: {len(brokers)} broker(s) at {bootstrap_servers()}, "
            f"cluster {cluster['cluster_id']}, controller {cluster['controller_id']}"
        )
