"""The deployment surface: the variables the settings read are the ones docs/configuration.md
and .env.example document, at most 33; a variable no longer read stops start-up naming its
replacement; the Kafka options mappings lay the deployer's keys over the project's defaults."""

import re

import pytest
from django.core.exceptions import ImproperlyConfigured

from config.env import BASE_DIR, env_options
from config.settings.removed import REMOVED_VARIABLES, removed_variables_refuse
from config.settings.web import hsts_parse

# Every module of the production settings, and the Env itself; the test settings' own knob
# (TEST_SETTINGS) is the suite's, documented in docs/testing.md.
SETTINGS_SOURCES = [BASE_DIR / "config" / "env.py"] + [
    path for path in sorted((BASE_DIR / "config" / "settings").glob("*.py")) if path.name != "test.py"
]
READ = re.compile(r'env(?:_options|\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"')


def variables_read() -> set[str]:
    return {name for path in SETTINGS_SOURCES for name in READ.findall(path.read_text())}


def variables_in_the_docs_tables() -> set[str]:
    """The first cell of each table row of docs/configuration.md up to its section on the variables no longer read."""
    text = (BASE_DIR / "docs" / "configuration.md").read_text().split("\n## Variables no longer read")[0]
    return set(re.findall(r"^\| `([A-Z][A-Z0-9_]+)` \|", text, re.MULTILINE))


def test_the_settings_read_exactly_the_variables_the_docs_document_and_at_most_33():
    read = variables_read()
    assert len(read) > 20, "few env() calls found: the pattern is out of date"
    assert read == variables_in_the_docs_tables()
    # 31: OTEL_TRACE_URL_TEMPLATE, the link to a trace (tracing's own OTEL_* variables are
    # OpenTelemetry's, read by kafka_bridge/tracing.py and the SDK, not by the settings).
    # 33: OUTBOX_PUBLISHER and KAFKA_CONNECT_URL, the choice of Debezium as the outbox's publisher.
    assert len(read) <= 33


def test_the_docs_say_how_many_variables_there_are():
    text = (BASE_DIR / "docs" / "configuration.md").read_text()
    assert f"the {len(variables_read())} variables below" in text


def test_every_variable_the_settings_read_is_in_env_example():
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.MULTILINE))
    assert variables_read() - documented == set()


def test_no_removed_variable_is_still_read_or_documented():
    assert variables_read() & set(REMOVED_VARIABLES) == set()
    example = (BASE_DIR / ".env.example").read_text()
    assert [name for name in REMOVED_VARIABLES if re.search(rf"^#? ?{name}=", example, re.MULTILINE)] == []


@pytest.mark.parametrize("name", sorted(REMOVED_VARIABLES))
def test_a_removed_variable_is_refused_in_one_line_naming_its_replacement(name):
    with pytest.raises(ImproperlyConfigured) as excinfo:
        removed_variables_refuse({name: "1", "DJANGO_DEBUG": "true"})
    message = str(excinfo.value)
    assert "\n" not in message
    assert message.startswith(f"{name} is ")
    assert "no longer read: " in message or "internal setting; remove it" in message


def test_kafka_tuning_variables_name_their_options_key():
    assert REMOVED_VARIABLES["KAFKA_PRODUCER_LINGER_MS"] == (
        """is no longer read: set KAFKA_PRODUCER_OPTIONS='{"linger_ms": 5}'"""
    )
    assert '"session_timeout_ms"' in REMOVED_VARIABLES["KAFKA_CONSUMER_SESSION_TIMEOUT_MS"]


def test_no_removed_variable_set_passes():
    removed_variables_refuse({"KAFKA_BOOTSTRAP_SERVERS": "b:9092", "KAFKA_PRODUCER_OPTIONS": "{}"})


DEFAULTS = {"linger_ms": 5, "batch_size": 16384}


def test_options_unset_are_the_defaults(monkeypatch):
    monkeypatch.delenv("TEST_OPTIONS", raising=False)
    assert env_options("TEST_OPTIONS", defaults=DEFAULTS) == DEFAULTS


def test_options_lay_the_deployers_keys_over_the_defaults(monkeypatch):
    monkeypatch.setenv("TEST_OPTIONS", '{"linger_ms": 20, "max_request_size": 2097152}')
    assert env_options("TEST_OPTIONS", defaults=DEFAULTS) == {
        "linger_ms": 20,
        "batch_size": 16384,
        "max_request_size": 2097152,
    }


@pytest.mark.parametrize("value", ["[1, 2]", "5", '"linger_ms"', "null"])
def test_options_that_are_not_a_json_object_are_refused_naming_the_variable(monkeypatch, value):
    monkeypatch.setenv("TEST_OPTIONS", value)
    with pytest.raises(ImproperlyConfigured, match=r"^TEST_OPTIONS must be a JSON object") as excinfo:
        env_options("TEST_OPTIONS", defaults=DEFAULTS)
    assert "\n" not in str(excinfo.value)


def test_options_that_are_not_json_are_refused_naming_the_variable(monkeypatch):
    monkeypatch.setenv("TEST_OPTIONS", "linger_ms=5")
    with pytest.raises(ImproperlyConfigured, match=r"^TEST_OPTIONS is not valid JSON") as excinfo:
        env_options("TEST_OPTIONS", defaults=DEFAULTS)
    assert "\n" not in str(excinfo.value)


def test_options_may_not_set_the_connection_or_the_projects_own_keys(monkeypatch):
    monkeypatch.setenv("TEST_OPTIONS", '{"bootstrap_servers": "x:9092", "acks": 1}')
    with pytest.raises(ImproperlyConfigured, match=r"^TEST_OPTIONS may not set acks, bootstrap_servers: "):
        env_options("TEST_OPTIONS", defaults=DEFAULTS, fixed=("bootstrap_servers", "acks"))


def test_the_producer_and_consumer_get_the_merged_options(settings):
    from kafka_bridge.consumer.api import consumer_config
    from kafka_bridge.outbox.sending import producer_config

    settings.KAFKA_PRODUCER_OPTIONS = {**settings.KAFKA_PRODUCER_OPTIONS, "linger_ms": 20}
    settings.KAFKA_CONSUMER_OPTIONS = {**settings.KAFKA_CONSUMER_OPTIONS, "max_poll_records": 7}
    producer = producer_config(timeout_ms=1000)
    assert (producer["linger_ms"], producer["acks"], producer["delivery_timeout_ms"]) == (20, "all", 2020)
    consumer = consumer_config(group_id="g")
    assert (consumer["max_poll_records"], consumer["group_id"], consumer["enable_auto_commit"]) == (7, "g", False)


def test_the_project_defaults_are_the_former_variables_defaults(settings):
    assert {k: settings.KAFKA_PRODUCER_OPTIONS[k] for k in ("linger_ms", "batch_size", "compression_type")} == {
        "linger_ms": 5,
        "batch_size": 16384,
        "compression_type": "lz4",
    }
    assert settings.KAFKA_CONSUMER_OPTIONS["session_timeout_ms"] == 10000


@pytest.mark.parametrize(
    "value, policy",
    [
        ("max-age=3600", (3600, False, False)),
        ("max-age=31536000; includeSubDomains; preload", (31536000, True, True)),
        ("max-age=31536000,includeSubDomains", (31536000, True, False)),
    ],
)
def test_the_hsts_policy_is_read_as_the_header_writes_it(value, policy):
    assert hsts_parse(value) == policy


@pytest.mark.parametrize("value", ["3600", "max-age=1h", "preload"])
def test_an_hsts_policy_without_max_age_is_refused(value):
    with pytest.raises(ImproperlyConfigured, match="DJANGO_SECURE_HSTS="):
        hsts_parse(value)
