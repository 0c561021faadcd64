"""Kafka: the connection every client shares (bootstrap, TLS, SASL), the producer's and the
consumer's options, and whether requests publish on commit."""

from django.core.exceptions import ImproperlyConfigured

from config.env import BASE_DIR, env, env_options
from config.settings.base import DATABASES

KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

KAFKA_BOOTSTRAP_SERVERS = env.list("KAFKA_BOOTSTRAP_SERVERS", default=["127.0.0.1:9092"])
KAFKA_SECURITY_PROTOCOL = env("KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT").upper()
KAFKA_SASL_MECHANISM = env("KAFKA_SASL_MECHANISM", default=None)
KAFKA_SASL_USERNAME = env("KAFKA_SASL_USERNAME", default=None)
KAFKA_SASL_PASSWORD = env("KAFKA_SASL_PASSWORD", default=None)
KAFKA_SSL_CAFILE = env("KAFKA_SSL_CAFILE", default=None)

for _address in KAFKA_BOOTSTRAP_SERVERS:
    # kafka-python fails on a malformed address only when a client is built (a health check's 500).
    _host, _, _port = _address.rpartition(":")
    if not _host or not _port.isascii() or not _port.isdigit() or not 0 < int(_port) < 65536:
        raise ImproperlyConfigured(f"KAFKA_BOOTSTRAP_SERVERS entry {_address!r} is not host:port")
if KAFKA_SECURITY_PROTOCOL not in KAFKA_SECURITY_PROTOCOLS:
    raise ImproperlyConfigured(
        f"KAFKA_SECURITY_PROTOCOL={KAFKA_SECURITY_PROTOCOL!r} is not one of {', '.join(KAFKA_SECURITY_PROTOCOLS)}"
    )
if KAFKA_SASL_MECHANISM is not None:
    KAFKA_SASL_MECHANISM = KAFKA_SASL_MECHANISM.upper()
    if KAFKA_SASL_MECHANISM not in KAFKA_SASL_MECHANISMS:
        raise ImproperlyConfigured(
            f"KAFKA_SASL_MECHANISM={KAFKA_SASL_MECHANISM!r} is not one of {', '.join(KAFKA_SASL_MECHANISMS)}"
        )

# The client_id of the project's producers and consumers by default (the topic browser's is
# `<id>-browse`); the options below may give the producer and the consumer another.
KAFKA_CLIENT_ID = "orderflow"

# Keys no options mapping may set: the connection comes from the variables above, and the rest
# is what the outbox's and the consumer's guarantees rest on (kafka_bridge sets them itself).
KAFKA_CONNECTION_KEYS = (
    "bootstrap_servers",
    "security_protocol",
    "sasl_mechanism",
    "sasl_plain_username",
    "sasl_plain_password",
    "ssl_cafile",
    "kafka_client",
)
KAFKA_PRODUCER_FIXED_KEYS = (
    *KAFKA_CONNECTION_KEYS,
    "acks",
    "enable_idempotence",
    "allow_auto_create_topics",
    "bootstrap_timeout_ms",
    "max_block_ms",
    "request_timeout_ms",
    "delivery_timeout_ms",
)
KAFKA_CONSUMER_FIXED_KEYS = (
    *KAFKA_CONNECTION_KEYS,
    "group_id",
    "enable_auto_commit",
    "auto_offset_reset",
    "allow_auto_create_topics",
)

# kafka-python's keyword arguments: the project's defaults, with the JSON object in
# KAFKA_PRODUCER_OPTIONS / KAFKA_CONSUMER_OPTIONS laid over them (the deployer's keys win).
KAFKA_PRODUCER_OPTIONS = env_options(
    "KAFKA_PRODUCER_OPTIONS",
    defaults={
        "client_id": KAFKA_CLIENT_ID,
        # Longer costs the request path less CPU (fewer produce requests) and adds up to that
        # much to the end-to-end latency (docs/benchmarks.md).
        "linger_ms": 5,
        "batch_size": 16384,
        # lz4 is installed with kafka-python's extra.
        "compression_type": "lz4",
        # kafka-python's own metrics (sensors updated on every request, under the process's
        # GIL) are read by nothing in the project; the producer's I/O thread does less without.
        "metrics_enabled": False,
        # reconnect_backoff_max_ms comes with every client's connection (kafka_bridge.connection).
    },
    fixed=KAFKA_PRODUCER_FIXED_KEYS,
)
KAFKA_CONSUMER_OPTIONS = env_options(
    "KAFKA_CONSUMER_OPTIONS",
    defaults={
        "client_id": KAFKA_CLIENT_ID,
        "max_poll_records": 500,
        "max_poll_interval_ms": 300000,
        "session_timeout_ms": 10000,
        "heartbeat_interval_ms": 3000,
        "fetch_max_wait_ms": 500,
        # Records of a transaction its producer aborted are skipped: Kafka Connect's exactly-once
        # source support (OUTBOX_PUBLISHER=debezium) writes in transactions, and a worker killed
        # mid-transaction leaves its records on the topic, aborted. The project's own producers
        # are not transactional; for their records this changes nothing.
        "isolation_level": "read_committed",
    },
    fixed=KAFKA_CONSUMER_FIXED_KEYS,
)

# --- Who publishes the outbox ------------------------------------------------------------------
# relay: the project's own (the on-commit fast path, then run_outbox_relay for what it missed).
# debezium: Debezium's outbox EventRouter on Kafka Connect reads the rows from PostgreSQL's
# write-ahead log (docs/debezium.md); the web process sends nothing and run_outbox_relay refuses.
OUTBOX_PUBLISHERS = ("relay", "debezium")
OUTBOX_PUBLISHER = env("OUTBOX_PUBLISHER", default="relay").lower()
if OUTBOX_PUBLISHER not in OUTBOX_PUBLISHERS:
    raise ImproperlyConfigured(f"OUTBOX_PUBLISHER={OUTBOX_PUBLISHER!r} is not one of {', '.join(OUTBOX_PUBLISHERS)}")
if OUTBOX_PUBLISHER == "debezium" and DATABASES["default"]["ENGINE"] != "django.db.backends.postgresql":
    raise ImproperlyConfigured(
        "OUTBOX_PUBLISHER=debezium needs PostgreSQL (DATABASE_URL=postgres://...): Debezium reads the outbox "
        "from PostgreSQL's write-ahead log"
    )
# Kafka Connect's REST API, where the outbox connector is registered and its state read.
KAFKA_CONNECT_URL = env("KAFKA_CONNECT_URL", default="http://127.0.0.1:8083").rstrip("/")
# The connector's settings that no deployment changes (the EventRouter's, the converters', the
# transforms'); `debezium_connector register` adds the database's and the names below.
DEBEZIUM_CONNECTOR_CONFIG = BASE_DIR / "connect" / "outbox-connector.json"
DEBEZIUM_CONNECTOR_NAME = "orderflow-outbox"
# The replication slot and the publication (insert only, the outbox table alone) it reads from.
DEBEZIUM_SLOT_NAME = "orderflow_outbox"
DEBEZIUM_PUBLICATION_NAME = "orderflow_outbox"
# The connector's logical name: its heartbeat topic is __debezium-heartbeat.<prefix>.
DEBEZIUM_TOPIC_PREFIX = "orderflow"
# Bound on each call to Kafka Connect's REST API (the status page, readiness, the commands).
KAFKA_CONNECT_TIMEOUT_SECONDS = 3.0

# Off: events wait in the outbox for the relay (e.g. a web tier that must never touch Kafka).
# With OUTBOX_PUBLISHER=debezium it is off, and saying it is on is refused.
_publish_on_commit = env.bool("KAFKA_PUBLISH_ON_COMMIT", default=None)
if OUTBOX_PUBLISHER == "debezium" and _publish_on_commit:
    raise ImproperlyConfigured(
        "KAFKA_PUBLISH_ON_COMMIT=true contradicts OUTBOX_PUBLISHER=debezium: Debezium publishes every outbox row; "
        "unset KAFKA_PUBLISH_ON_COMMIT"
    )
KAFKA_PUBLISH_ON_COMMIT = OUTBOX_PUBLISHER == "relay" and _publish_on_commit is not False
# The longest a request waits on Kafka after its commit. Past it, the event stays in the outbox
# for the relay, and the fast path pauses for KAFKA_PUBLISH_SUSPEND_SECONDS so that a dead
# broker does not slow every request down.
KAFKA_PUBLISH_TIMEOUT_MS = 1000
KAFKA_PUBLISH_SUSPEND_SECONDS = 5.0

# Bound on every admin/metadata call, so that a status page or a health check answers quickly
# when the broker is unreachable instead of hanging for kafka-python's 30 s default.
KAFKA_ADMIN_TIMEOUT_MS = 5000
# Bound on the admin's Kafka pages: they say the broker is unreachable instead of hanging.
KAFKA_STATUS_TIMEOUT_MS = 3000
# Topics the admin's topic browser shows besides the apps' own (their event topics and DLTs).
# Kafka's internal topics are never shown, even when listed here.
KAFKA_BROWSE_TOPICS = []

# --- The outbox relay -------------------------------------------------------------------------
# Idle poll interval and rows per round (`run_outbox_relay --interval`, `--batch-size`).
OUTBOX_RELAY_INTERVAL = 1.0
OUTBOX_RELAY_BATCH_SIZE = 500
# Rows younger than this are still the fast path's to send; relaying them at once would only
# publish them twice.
OUTBOX_RELAY_GRACE_SECONDS = 5.0
# Per-round send bound, and the longest backoff while the broker is unreachable.
OUTBOX_RELAY_SEND_TIMEOUT = 10.0
OUTBOX_RELAY_MAX_BACKOFF = 30.0
# How long a relay's claim on a batch of rows lasts; a relay that dies mid-batch releases its
# rows when the claim runs out. Must exceed OUTBOX_RELAY_SEND_TIMEOUT.
OUTBOX_RELAY_CLAIM_SECONDS = 60.0
# A row the broker refuses for a reason of its own (too large, say) is quarantined after this many
# failed sends: marked with the reason, shown in the admin, and no longer sent.
OUTBOX_QUARANTINE_ATTEMPTS = 3

# --- The consumer loop ------------------------------------------------------------------------
# Long poll: how long one poll waits for records.
KAFKA_CONSUMER_POLL_TIMEOUT_MS = 1000
# Seconds between the consumer's throughput log lines.
KAFKA_CONSUMER_STATS_INTERVAL = 30.0
# Retries of a record whose handler failed transiently: exponential backoff with full jitter,
# from this base, capped at the max, for at most EXPORT_MAX_ATTEMPTS attempts.
KAFKA_CONSUMER_RETRY_BACKOFF_MS = 500
KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS = 30000
# How long the consumer waits for the dead-letter topic to acknowledge a record.
KAFKA_DLT_SEND_TIMEOUT = 10.0
