"""Settings for orderflow (DJANGO_SETTINGS_MODULE=config.settings). Every value that varies
between deployments is read here, through `config.env.env`, and documented in `.env.example` and
docs/configuration.md; what no deployment changes (apps, middleware, templates, ...) is in
`config/settings_base.py`, imported first."""

from django.core.exceptions import ImproperlyConfigured

from config.env import BASE_DIR, env
from config.settings_base import *  # noqa: F403

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Good for development only: with DJANGO_DEBUG=false the process refuses to start with it, since
# whoever knows it can forge sessions and password-reset links.
DEVELOPMENT_SECRET_KEY = "insecure-development-key-change-me"
# An empty value counts as unset.
SECRET_KEY = env("DJANGO_SECRET_KEY", default="") or DEVELOPMENT_SECRET_KEY
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is the development default; set a secret of your own (or DJANGO_DEBUG=true for development)"
    )
ALLOWED_HOSTS = env.list("DJANGO_ALLOWED_HOSTS", default=["127.0.0.1", "localhost"])

# --- HTTPS, behind a proxy or not (all off by default; docs/production.env turns them on) -------
# The header and value a TLS-terminating proxy sets, e.g. "HTTP_X_FORWARDED_PROTO,https". Only
# set it when the proxy strips that header from what clients send.
_proxy_ssl_header = env.tuple("DJANGO_SECURE_PROXY_SSL_HEADER", default=())
if _proxy_ssl_header and len(_proxy_ssl_header) != 2:
    raise ImproperlyConfigured(
        'DJANGO_SECURE_PROXY_SSL_HEADER must be "<header>,<value>", e.g. "HTTP_X_FORWARDED_PROTO,https"'
    )
SECURE_PROXY_SSL_HEADER = tuple(_proxy_ssl_header) or None
SECURE_SSL_REDIRECT = env.bool("DJANGO_SECURE_SSL_REDIRECT", default=False)
SESSION_COOKIE_SECURE = env.bool("DJANGO_SESSION_COOKIE_SECURE", default=False)
CSRF_COOKIE_SECURE = env.bool("DJANGO_CSRF_COOKIE_SECURE", default=False)
SECURE_HSTS_SECONDS = env.int("DJANGO_SECURE_HSTS_SECONDS", default=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env.bool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", default=False)
SECURE_HSTS_PRELOAD = env.bool("DJANGO_SECURE_HSTS_PRELOAD", default=False)
# Origins (scheme and host) allowed to send unsafe requests with a session, e.g. the admin behind
# https://orders.example.com
CSRF_TRUSTED_ORIGINS = env.list("DJANGO_CSRF_TRUSTED_ORIGINS", default=[])

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the consumer and the relay write to the same file. WAL lets readers run
    # beside the writer; IMMEDIATE transactions take the write lock up front, so a busy
    # database makes a writer wait (up to `timeout` seconds) instead of failing with
    # "database is locked" when a read transaction tries to upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )

REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first so that an unauthenticated request gets 401 with a WWW-Authenticate
        # header rather than the 403 that SessionAuthentication alone would give.
        "rest_framework.authentication.TokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": env.int("API_PAGE_SIZE", default=50),
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON only, bounded by API_MAX_BODY_BYTES (config/parsers.py). No form or multipart parser:
    # no endpoint takes them (the admin and login pages are Django views, and the browsable
    # API's raw form posts JSON); a form body is a 415.
    "DEFAULT_PARSER_CLASSES": ["config.parsers.BoundedJSONParser"],
    "EXCEPTION_HANDLER": "config.api_errors.exception_handler",
    # Every DRF view unless it says otherwise. DRF checks permissions before throttles, so a
    # request without credentials is a 401 that uses up no rate.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.AnonRateThrottle",
        "rest_framework.throttling.UserRateThrottle",
    ],
    # Who "the client" of a per-IP rate is. DRF's default (None) takes the whole X-Forwarded-For
    # header when there is one, which any client can send itself to get a fresh count on every
    # request. 0: REMOTE_ADDR, right when nothing stands in front; N proxies in front that append
    # to X-Forwarded-For: the address the outermost of them saw.
    "NUM_PROXIES": env.int("API_NUM_PROXIES", default=0),
    # Per user, and per client IP for anonymous requests (and the login views), in DRF's rate
    # format: "<n>/<second|minute|hour|day>". A back-office service must not trip the user rate.
    "DEFAULT_THROTTLE_RATES": {
        "user": env("API_THROTTLE_USER_RATE", default="6000/min"),
        "anon": env("API_THROTTLE_ANON_RATE", default="60/min"),
    },
}

# --- Limits on what a client may send ----------------------------------------------------------
# Lines per order; a larger order is a 400 naming `lines`.
ORDER_MAX_LINES = env.int("ORDER_MAX_LINES", default=500)
# Request bodies larger than this are refused (413) before they are parsed.
API_MAX_BODY_BYTES = env.int("API_MAX_BODY_BYTES", default=1024 * 1024)
DATA_UPLOAD_MAX_MEMORY_SIZE = API_MAX_BODY_BYTES

# --- Kafka connection -------------------------------------------------------------------------
KAFKA_SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
KAFKA_SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")

KAFKA_BOOTSTRAP_SERVERS = env.list("KAFKA_BOOTSTRAP_SERVERS", default=["127.0.0.1:9092"])
KAFKA_SECURITY_PROTOCOL = env("KAFKA_SECURITY_PROTOCOL", default="PLAINTEXT").upper()
KAFKA_SASL_MECHANISM = env("KAFKA_SASL_MECHANISM", default=None)
KAFKA_SASL_USERNAME = env("KAFKA_SASL_USERNAME", default=None)
KAFKA_SASL_PASSWORD = env("KAFKA_SASL_PASSWORD", default=None)
KAFKA_SSL_CAFILE = env("KAFKA_SSL_CAFILE", default=None)
# Bound on every admin/metadata call, so that a status page or a health check answers quickly
# when the broker is unreachable instead of hanging for kafka-python's 30 s default.
KAFKA_ADMIN_TIMEOUT_MS = env.int("KAFKA_ADMIN_TIMEOUT_MS", default=5000)
KAFKA_RECONNECT_BACKOFF_MAX_MS = env.int("KAFKA_RECONNECT_BACKOFF_MAX_MS", default=1000)
# Bound on the admin's Kafka status page: it says the broker is unreachable instead of hanging.
KAFKA_STATUS_TIMEOUT_MS = env.int("KAFKA_STATUS_TIMEOUT_MS", default=3000)
# Topics the admin's topic browser shows besides the apps' own (their event topics and DLTs).
# Kafka's internal topics (`__consumer_offsets`: every group's members, hosts and offsets) are
# never shown, even when listed here.
KAFKA_BROWSE_TOPICS = env.list("KAFKA_BROWSE_TOPICS", default=[])

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

KAFKA_CLIENT_ID = env("KAFKA_CLIENT_ID", default="orderflow")

# --- Producer and outbox ----------------------------------------------------------------------
KAFKA_PRODUCER_LINGER_MS = env.int("KAFKA_PRODUCER_LINGER_MS", default=5)
KAFKA_PRODUCER_BATCH_SIZE = env.int("KAFKA_PRODUCER_BATCH_SIZE", default=16384)
# none, gzip, snappy, lz4 or zstd (lz4 is installed with kafka-python's extra)
KAFKA_PRODUCER_COMPRESSION = env("KAFKA_PRODUCER_COMPRESSION", default="lz4")
if KAFKA_PRODUCER_COMPRESSION in ("", "none"):
    KAFKA_PRODUCER_COMPRESSION = None
# The longest a request waits on Kafka after its commit. Past it, the event stays in the outbox
# for the relay, and the fast path pauses for KAFKA_PUBLISH_SUSPEND_SECONDS so that a dead
# broker does not slow every request down.
KAFKA_PUBLISH_TIMEOUT_MS = env.int("KAFKA_PUBLISH_TIMEOUT_MS", default=1000)
KAFKA_PUBLISH_SUSPEND_SECONDS = env.float("KAFKA_PUBLISH_SUSPEND_SECONDS", default=5.0)
# Off: events wait in the outbox for the relay (e.g. a web tier that must never touch Kafka).
KAFKA_PUBLISH_ON_COMMIT = env.bool("KAFKA_PUBLISH_ON_COMMIT", default=True)
OUTBOX_RELAY_INTERVAL = env.float("OUTBOX_RELAY_INTERVAL", default=1.0)
OUTBOX_RELAY_BATCH_SIZE = env.int("OUTBOX_RELAY_BATCH_SIZE", default=500)
OUTBOX_RELAY_GRACE_SECONDS = env.float("OUTBOX_RELAY_GRACE_SECONDS", default=5.0)
OUTBOX_RELAY_SEND_TIMEOUT = env.float("OUTBOX_RELAY_SEND_TIMEOUT", default=10.0)
OUTBOX_RELAY_MAX_BACKOFF = env.float("OUTBOX_RELAY_MAX_BACKOFF", default=30.0)
# How long a relay's claim on a batch of rows lasts; a relay that dies mid-batch releases its
# rows when the claim runs out. Must exceed OUTBOX_RELAY_SEND_TIMEOUT.
OUTBOX_RELAY_CLAIM_SECONDS = env.float("OUTBOX_RELAY_CLAIM_SECONDS", default=60.0)
# A row the broker refuses for a reason of its own (too large, say) is quarantined after this many
# failed sends: marked with the reason, shown in the admin, and no longer sent.
OUTBOX_QUARANTINE_ATTEMPTS = env.int("OUTBOX_QUARANTINE_ATTEMPTS", default=3)

# --- Consumer ---------------------------------------------------------------------------------
KAFKA_CONSUMER_POLL_TIMEOUT_MS = env.int("KAFKA_CONSUMER_POLL_TIMEOUT_MS", default=1000)
KAFKA_CONSUMER_MAX_POLL_RECORDS = env.int("KAFKA_CONSUMER_MAX_POLL_RECORDS", default=500)
KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS = env.int("KAFKA_CONSUMER_MAX_POLL_INTERVAL_MS", default=300000)
KAFKA_CONSUMER_SESSION_TIMEOUT_MS = env.int("KAFKA_CONSUMER_SESSION_TIMEOUT_MS", default=10000)
KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS = env.int("KAFKA_CONSUMER_HEARTBEAT_INTERVAL_MS", default=3000)
KAFKA_CONSUMER_FETCH_MAX_WAIT_MS = env.int("KAFKA_CONSUMER_FETCH_MAX_WAIT_MS", default=500)
KAFKA_CONSUMER_STATS_INTERVAL = env.float("KAFKA_CONSUMER_STATS_INTERVAL", default=30.0)
# Retries of a record whose handler failed transiently: exponential backoff with full jitter,
# from this base, capped at the max, for at most EXPORT_MAX_ATTEMPTS attempts.
KAFKA_CONSUMER_RETRY_BACKOFF_MS = env.int("KAFKA_CONSUMER_RETRY_BACKOFF_MS", default=500)
KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS = env.int("KAFKA_CONSUMER_RETRY_BACKOFF_MAX_MS", default=30000)
KAFKA_DLT_SEND_TIMEOUT = env.float("KAFKA_DLT_SEND_TIMEOUT", default=10.0)

# --- The order-export topic and its consumers -------------------------------------------------
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

# --- The external platform --------------------------------------------------------------------
EXPORT_PLATFORM_URL = env("EXPORT_PLATFORM_URL", default=None)
# "fake": the in-memory fake platform, which marks orders exported and sends them nowhere. Unset:
# the HTTP client when EXPORT_PLATFORM_URL is set; otherwise the fake, which run_export_consumer
# only accepts with DJANGO_DEBUG=true unless EXPORT_PLATFORM=fake says so.
EXPORT_PLATFORM = env("EXPORT_PLATFORM", default="").lower() or None
if EXPORT_PLATFORM not in (None, "fake", "http"):
    raise ImproperlyConfigured(f"EXPORT_PLATFORM={EXPORT_PLATFORM!r} is not one of fake, http")
if EXPORT_PLATFORM == "http" and not EXPORT_PLATFORM_URL:
    raise ImproperlyConfigured("EXPORT_PLATFORM=http needs EXPORT_PLATFORM_URL")
if EXPORT_PLATFORM == "fake" and EXPORT_PLATFORM_URL:
    raise ImproperlyConfigured("EXPORT_PLATFORM=fake and EXPORT_PLATFORM_URL are both set; keep one")
EXPORT_PLATFORM_TIMEOUT = env.float("EXPORT_PLATFORM_TIMEOUT", default=5.0)
EXPORT_MAX_ATTEMPTS = env.int("EXPORT_MAX_ATTEMPTS", default=5)
# Platform calls in flight at once per consumer process; one at a time per order, in offset
# order. 1: one call at a time, as a plain @KafkaListener makes them.
EXPORT_CONCURRENCY = env.int("EXPORT_CONCURRENCY", default=32)
# Records per partition that may be held past its committed offset (done out of order, or
# waiting behind a retried order) before the partition is paused.
EXPORT_MAX_UNCOMMITTED = env.int("EXPORT_MAX_UNCOMMITTED", default=2000)
# Platform calls per second at most (a backlog drain against a platform with a quota); unset:
# no limit.
EXPORT_RATE_LIMIT = env.float("EXPORT_RATE_LIMIT", default=None)
# After this many consecutive failed calls the breaker opens: no call for the cooldown (doubled
# after each failed probe, up to a minute), then one probe at a time until one succeeds.
# 0 turns the breaker off.
EXPORT_BREAKER_FAILURES = env.int("EXPORT_BREAKER_FAILURES", default=10)
EXPORT_BREAKER_COOLDOWN = env.float("EXPORT_BREAKER_COOLDOWN", default=5.0)
# A record larger than this is not an event of ours: dead-lettered without being parsed.
EXPORT_MAX_EVENT_BYTES = env.int("EXPORT_MAX_EVENT_BYTES", default=1024 * 1024)
# Platform calls kept per order for the operator's trace (`ExportAttempt`), newest first.
EXPORT_ATTEMPTS_KEPT = env.int("EXPORT_ATTEMPTS_KEPT", default=20)

for _name in ("EXPORT_CONCURRENCY", "EXPORT_MAX_UNCOMMITTED", "EXPORT_MAX_ATTEMPTS", "EXPORT_ATTEMPTS_KEPT"):
    if globals()[_name] < 1:
        raise ImproperlyConfigured(f"{_name} must be at least 1, not {globals()[_name]}")
if EXPORT_RATE_LIMIT is not None and EXPORT_RATE_LIMIT <= 0:
    raise ImproperlyConfigured(f"EXPORT_RATE_LIMIT must be positive or unset, not {EXPORT_RATE_LIMIT}")

# --- Metrics, health and readiness ------------------------------------------------------------
# The web process serves /metrics; with a token set, only to `Authorization: Bearer <token>`.
METRICS_AUTH_TOKEN = env("METRICS_AUTH_TOKEN", default=None)
# run_export_consumer and run_outbox_relay serve http://METRICS_ADDR:<port>/metrics; 0 is off.
METRICS_ADDR = env("METRICS_ADDR", default="127.0.0.1")
EXPORT_CONSUMER_METRICS_PORT = env.int("EXPORT_CONSUMER_METRICS_PORT", default=0)
OUTBOX_RELAY_METRICS_PORT = env.int("OUTBOX_RELAY_METRICS_PORT", default=0)
# Bound on the Kafka part of GET /api/health/ and of export_consumer_ready.
HEALTH_KAFKA_TIMEOUT_MS = env.int("HEALTH_KAFKA_TIMEOUT_MS", default=2000)
# GET /api/health/ answers from the last check for this long, so a storm of probes costs one.
HEALTH_CACHE_SECONDS = env.float("HEALTH_CACHE_SECONDS", default=2.0)
# export_consumer_ready's defaults: the most lag (records) and outbox age (seconds) still ready.
READINESS_MAX_LAG = env.int("READINESS_MAX_LAG", default=1000)
READINESS_MAX_OUTBOX_AGE_SECONDS = env.float("READINESS_MAX_OUTBOX_AGE_SECONDS", default=300.0)

LOG_LEVEL = env("LOG_LEVEL", default="INFO").upper()
# plain: one readable line per record; json: one JSON object per line with the extra fields.
LOG_FORMAT = env("LOG_FORMAT", default="plain").lower()
if LOG_FORMAT not in ("plain", "json"):
    raise ImproperlyConfigured(f"LOG_FORMAT={LOG_FORMAT!r} is not one of plain, json")
# Levels of single loggers, as Spring's logging.level.<name>: "exports.processor=WARNING" drops
# the consumer's line per export (at thousands of exports a second its largest cost) and keeps
# its failures, dead letters and the throughput line.
LOG_LEVELS = {}
for _entry in env.list("LOG_LEVELS", default=[]):
    _name, _, _level = _entry.partition("=")
    if not _name.strip() or _level.strip().upper() not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ImproperlyConfigured(f"LOG_LEVELS entry {_entry!r} is not <logger>=<DEBUG|INFO|WARNING|ERROR|CRITICAL>")
    LOG_LEVELS[_name.strip()] = _level.strip().upper()
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {
        "plain": {"format": "%(asctime)s %(levelname)s %(name)s %(message)s"},
        "json": {"()": "config.logging.JsonFormatter"},
    },
    # No password or URL secret in any line, kafka-python's DEBUG output included; the filter
    # rewrites the record itself, so handlers added after this one get it redacted too.
    "filters": {"secrets": {"()": "config.logging.SecretsFilter"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": LOG_FORMAT, "filters": ["secrets"]}},
    "root": {"handlers": ["console"], "level": LOG_LEVEL},
    "loggers": {
        # kafka-python logs every failed reconnect at ERROR; the project reports unreachable brokers
        # itself, in one line. KAFKA_CLIENT_LOG_LEVEL=INFO shows the client's own view.
        "kafka": {"level": env("KAFKA_CLIENT_LOG_LEVEL", default="CRITICAL").upper()},
        # runserver prints the same line itself.
        "django.utils.autoreload": {"level": "WARNING"},
        **{name: {"level": level} for name, level in LOG_LEVELS.items()},
    },
}
