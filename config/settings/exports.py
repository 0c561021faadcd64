"""The order-export topic, its consumer group, and the external platform the consumer exports to."""

from django.core.exceptions import ImproperlyConfigured

from config.env import env

ORDER_EXPORT_TOPIC = env("ORDER_EXPORT_TOPIC", default="order-export")
ORDER_EXPORT_DLT_TOPIC = env("ORDER_EXPORT_DLT_TOPIC", default=f"{ORDER_EXPORT_TOPIC}.DLT")
ORDER_EXPORT_PARTITIONS = env.int("ORDER_EXPORT_PARTITIONS", default=3)
ORDER_EXPORT_REPLICATION_FACTOR = env.int("ORDER_EXPORT_REPLICATION_FACTOR", default=1)
ORDER_EXPORT_CONSUMER_GROUP = env("ORDER_EXPORT_CONSUMER_GROUP", default="order-export-consumer")

if ORDER_EXPORT_PARTITIONS < 1:
    raise ImproperlyConfigured(f"ORDER_EXPORT_PARTITIONS must be at least 1, not {ORDER_EXPORT_PARTITIONS}")
if ORDER_EXPORT_REPLICATION_FACTOR < 1:
    raise ImproperlyConfigured(
        f"ORDER_EXPORT_REPLICATION_FACTOR must be at least 1, not {ORDER_EXPORT_REPLICATION_FACTOR}"
    )

# Set: the HTTP client posts there. Unset: the fake platform, which marks orders exported and sends
# them nowhere; run_export_consumer accepts it only with DJANGO_DEBUG=true (or EXPORT_PLATFORM
# "fake", which only the test settings say).
EXPORT_PLATFORM_URL = env("EXPORT_PLATFORM_URL", default=None)
EXPORT_PLATFORM = None
EXPORT_PLATFORM_TIMEOUT = env.float("EXPORT_PLATFORM_TIMEOUT", default=5.0)
EXPORT_MAX_ATTEMPTS = env.int("EXPORT_MAX_ATTEMPTS", default=5)
if EXPORT_MAX_ATTEMPTS < 1:
    raise ImproperlyConfigured(f"EXPORT_MAX_ATTEMPTS must be at least 1, not {EXPORT_MAX_ATTEMPTS}")

# Platform calls in flight at once per consumer process; one at a time per order, in offset
# order (`run_export_consumer --concurrency`).
EXPORT_CONCURRENCY = 32
# Platform calls per second at most; None: no limit (`run_export_consumer --rate-limit`).
EXPORT_RATE_LIMIT = None
# Records per partition that may be held past its committed offset (done out of order, or
# waiting behind a retried order) before the partition is paused: what a crash redelivers at most.
EXPORT_MAX_UNCOMMITTED = 2000
# After this many consecutive failed calls the breaker opens: no call for the cooldown (doubled
# after each failed probe, up to a minute), then one probe at a time until one succeeds.
EXPORT_BREAKER_FAILURES = 10
EXPORT_BREAKER_COOLDOWN = 5.0
# A record larger than this is not an event of ours (the largest order's is about 63 KB):
# dead-lettered without being parsed.
EXPORT_MAX_EVENT_BYTES = 1024 * 1024
# Platform calls kept per order for the operator's trace (`ExportAttempt`), newest first: enough
# to see a retry history, bounded so a flapping platform does not grow the table without end.
EXPORT_ATTEMPTS_KEPT = 20
