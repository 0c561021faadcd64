"""Fixtures shared by the whole suite, and its markers by folder.

Each test is marked with its kind, the folder it lives in: `unit` (no broker, no process),
`integration`, `faults` or `browser`; `make test-fast` runs `-m unit` alone. Tests that touch
Kafka talk to the real broker at KAFKA_BOOTSTRAP_SERVERS (`make test` starts one) and isolate
themselves with topic and group names of their own, never by wiping what other tests or a
running `make run` keep on the broker. What the tests share besides fixtures is in
`tests/support/`.
"""

from __future__ import annotations

import os
import re
import uuid
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from kafka import KafkaAdminClient

from exports.platform.client import PermanentExportError
from kafka_bridge.connection import BrokerUnavailable, admin_client
from tests.support.consumers import export_consumer_running
from tests.support.helpers import wait_until
from tests.support.platforms import RecordingPlatform

TESTS_DIR = Path(__file__).resolve().parent
KINDS = ("unit", "integration", "faults", "browser")


class KnownSettings:
    """pytest-django's `settings`, refusing a name the project has no setting of: a test that
    sets one (a setting since removed, say, or folded into KAFKA_CONSUMER_OPTIONS) would
    otherwise run on the defaults it meant to change and prove nothing."""

    def __init__(self, wrapped):
        object.__setattr__(self, "_wrapped", wrapped)

    def __getattr__(self, name):
        return getattr(self._wrapped, name)

    def __setattr__(self, name, value):
        from django.conf import settings as django_settings

        if name.isupper() and not hasattr(django_settings, name):
            raise AttributeError(f"{name} is not a setting of this project (config/settings/)")
        setattr(self._wrapped, name, value)

    def __delattr__(self, name):
        delattr(self._wrapped, name)


@pytest.fixture
def settings(settings):
    return KnownSettings(settings)


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark each test with its folder's kind (before `-m` selects), so no file names its own; on
    PostgreSQL, skip the tests that never touch the suite's database."""
    on_postgresql = os.environ.get("DATABASE_URL", "").startswith(("postgres://", "postgresql://"))
    for item in items:
        path = Path(item.path).resolve()
        kind = path.relative_to(TESTS_DIR).parts[0] if path.is_relative_to(TESTS_DIR) else None
        if kind not in KINDS:
            continue
        item.add_marker(kind)
        if kind == "unit" and item.get_closest_marker("kafka"):
            raise pytest.UsageError(f"{item.nodeid} is marked kafka: its place is tests/integration/, not tests/unit/")
        if on_postgresql and item.get_closest_marker("database_independent"):
            item.add_marker(pytest.mark.skip(reason="database_independent: the SQLite run gives the same answer"))


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, dropped once no other session is on it. PostgreSQL ends
    the backends of a process a test stopped a moment after it exits, and DROP DATABASE refuses
    a database other sessions are on: wait for them a little, then name what is left in a
    warning and end it, since the database goes anyway."""
    yield
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    others_sql = (
        "SELECT pid, application_name, client_addr, state, left(query, 120) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )

    def others() -> list[tuple]:
        with connection.cursor() as cursor:
            cursor.execute(others_sql)
            return cursor.fetchall()

    with django_db_blocker.unblock():
        try:
            wait_until(lambda: not others(), timeout=5)
        except AssertionError:
            left = others()
            warnings.warn(
                f"{len(left)} session(s) still on the test database, ended before its drop: {left}", stacklevel=1
            )
            with connection.cursor() as cursor:
                cursor.executemany("SELECT pg_terminate_backend(%s)", [(pid,) for pid, *_ in left])
        finally:
            connection.close()


def _unique(prefix: str, request: pytest.FixtureRequest) -> str:
    test_name = re.sub(r"[^a-zA-Z0-9._-]+", "-", request.node.name)[:60].strip("-")
    return f"{prefix}-{test_name}-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def kafka_admin() -> Iterator[KafkaAdminClient]:
    """A session-wide admin client; fails the test clearly when no broker runs."""
    try:
        with admin_client(timeout_ms=10_000) as admin:
            yield admin
    except BrokerUnavailable as exc:
        pytest.fail(f"{exc}. Start one with `make kafka-up` (make test does it for you).")


@pytest.fixture
def unique_name(request: pytest.FixtureRequest) -> Callable[[str], str]:
    """`unique_name("topic")` gives a name no other test (or run) uses."""
    return lambda prefix: _unique(prefix, request)


@pytest.fixture
def kafka_topic_factory(
    kafka_admin: KafkaAdminClient, unique_name: Callable[[str], str]
) -> Iterator[Callable[..., str]]:
    """Creates uniquely named topics on the real broker and deletes them after the test."""
    created: list[str] = []

    def create(*, partitions: int = 1, prefix: str = "t") -> str:
        name = unique_name(prefix)
        kafka_admin.create_topics(
            {name: {"num_partitions": partitions, "replication_factor": 1}}, wait_for_metadata=True
        )
        created.append(name)
        return name

    yield create
    if created:
        kafka_admin.delete_topics(created)


@pytest.fixture
def kafka_topic(kafka_topic_factory: Callable[..., str]) -> str:
    """One fresh single-partition topic."""
    return kafka_topic_factory()


@pytest.fixture
def consumer_group(unique_name: Callable[[str], str], kafka_admin: KafkaAdminClient) -> Iterator[str]:
    group = unique_name("g")
    yield group
    _delete_groups(kafka_admin, [group])


def _delete_groups(admin: KafkaAdminClient, groups: list[str]) -> None:
    """Remove a test's consumer groups from the shared broker, so `kafka_status` on a
    development broker is not crowded with them. A group still in use is left alone."""
    try:
        admin.delete_groups(groups)
    except Exception:
        pass


@pytest.fixture
def event_topics(
    settings, unique_name: Callable[[str], str], kafka_admin: KafkaAdminClient
) -> Iterator[tuple[str, str]]:
    """Points the settings at an event topic and DLT of this test's own (not yet created)."""
    topic = unique_name("order-export")
    settings.ORDER_EXPORT_TOPIC = topic
    settings.ORDER_EXPORT_DLT_TOPIC = f"{topic}.DLT"
    yield topic, f"{topic}.DLT"
    existing = {t["name"] for t in kafka_admin.describe_topics([topic, f"{topic}.DLT"]) if t["error_code"] == 0}
    if existing:
        kafka_admin.delete_topics(sorted(existing))


@pytest.fixture
def export_topics(event_topics, settings) -> tuple[str, str]:
    """The event topic and DLT of this test, created on the broker with 3 partitions."""
    from exports.topics import export_topic_specs
    from kafka_bridge.cluster.topics import topics_ensure

    settings.ORDER_EXPORT_PARTITIONS = 3
    topics_ensure(specs=export_topic_specs())
    return event_topics


@pytest.fixture
def export_group(settings, unique_name, kafka_admin: KafkaAdminClient) -> Iterator[str]:
    settings.ORDER_EXPORT_CONSUMER_GROUP = unique_name("order-export-consumer")
    yield settings.ORDER_EXPORT_CONSUMER_GROUP
    _delete_groups(
        kafka_admin, [settings.ORDER_EXPORT_CONSUMER_GROUP, f"{settings.ORDER_EXPORT_CONSUMER_GROUP}.dlt-replay"]
    )


@pytest.fixture(autouse=True)
def _cache_cleared():
    """Throttle counters and the cached health answer live in the cache: each test starts
    without what the tests before it left there."""
    from django.core.cache import cache

    cache.clear()
    yield
    cache.clear()


@pytest.fixture(autouse=True)
def _fast_path_publisher_closed_after_the_test():
    """The on-commit publisher marks rows sent from a thread with a database connection of its
    own; closed after each test that used it, so no test inherits its work and PostgreSQL can
    drop the test database at the end."""
    yield
    from kafka_bridge.outbox import publisher as producer

    if producer._request_publisher is not None:
        producer.reset_request_publisher()


@pytest.fixture
def fresh_publisher():
    """The on-commit publisher rebuilt from this test's settings, and closed after it."""
    from kafka_bridge.outbox.publisher import reset_request_publisher

    reset_request_publisher()
    yield
    reset_request_publisher()


@pytest.fixture
def fake_platform():
    return RecordingPlatform()


@pytest.fixture
def running_export_consumer(export_topics, export_group, fake_platform, transactional_db):
    """The export consumer exporting to `fake_platform`."""
    with export_consumer_running(fake_platform):
        yield fake_platform


class RefusingPlatform(RecordingPlatform):
    """The fake platform, answering 422 while `refusing` is set (from the start), then taking
    orders like the fake."""

    def __init__(self):
        super().__init__()
        self.refusing = True

    def send(self, *, order, idempotency_key):
        if self.refusing:
            raise PermanentExportError("HTTP 422 from the platform: unknown customer")
        super().send(order=order, idempotency_key=idempotency_key)


@pytest.fixture
def refusing_platform():
    return RefusingPlatform()


@pytest.fixture
def refusing_consumer(export_topics, export_group, refusing_platform, fresh_publisher):
    """The export consumer exporting to `refusing_platform`; yields the loop."""
    with export_consumer_running(refusing_platform) as loop:
        yield loop


@pytest.fixture
def private_broker(tmp_path, settings):
    """A running broker of this test's own, which the test may stop and start; every Kafka
    client the project builds from settings points at it."""
    from tests.support.brokers import PrivateBroker

    broker = PrivateBroker(tmp_path / "kafka")
    broker.start()
    settings.KAFKA_BOOTSTRAP_SERVERS = [broker.bootstrap]
    yield broker
    broker.stop()


@pytest.fixture
def platform_stub():
    """A running `PlatformStub`; point EXPORT_PLATFORM_URL (or an HttpExternalPlatformClient)
    at `platform_stub.url`."""
    from tests.support.platform_stub import PlatformServer, PlatformStub

    server = PlatformServer(PlatformStub())
    yield server.stub
    server.close()


@pytest.fixture
def spans():
    """Spans made during the test, kept in memory (`SpanRecorder`); without this fixture the
    project only propagates trace context, as a process with no OTEL_TRACES_EXPORTER does."""
    from tests.support.tracing import SpanRecorder

    recorder = SpanRecorder().start()
    yield recorder
    recorder.stop()


@pytest.fixture
def spawn():
    """`spawn(command, env)` starts a `manage.py` command; whatever still runs after the test is
    killed, so a failed test leaves no consumer or relay behind."""
    from tests.support.processes import ManagedProcess

    started: list[ManagedProcess] = []

    def start(command: str, env: dict[str, str]) -> ManagedProcess:
        process = ManagedProcess(command, env)
        started.append(process)
        return process

    try:
        yield start
    finally:
        for process in started:
            process.stop_if_running()


@pytest.fixture
def debug_records(caplog):
    """Every record of every logger from DEBUG up, kafka-python's included (what
    LOG_LEVELS=kafka=DEBUG prints), as the handlers after the console handler see them."""
    import logging

    caplog.set_level(logging.DEBUG)
    caplog.set_level(logging.DEBUG, logger="kafka")
    return caplog


@pytest.fixture
def browser(tmp_path):
    """Debian's headless Chromium driven by Selenium through Debian's chromedriver (nothing
    downloads a browser)."""
    import shutil

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    assert shutil.which("chromium") and shutil.which("chromedriver"), (
        "Chromium and chromedriver are needed: `make tools` installs Debian's chromium and chromium-driver"
    )
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        # This machine has no network beyond loopback: stop Chromium from trying.
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        f"--user-data-dir={tmp_path / 'chromium'}",
        "--window-size=1400,1600",
    ]:
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(executable_path=shutil.which("chromedriver")), options=options)
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()
