"""Settings that stop start-up with a clear error, and one that follows another: each tried in a
process of its own, the way `manage.py` and the web server start (`django.setup()`)."""

import os
import subprocess
import sys

import pytest

from config.env import BASE_DIR


def run_django(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production", **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_an_unknown_security_protocol_stops_start_up_with_a_clear_error():
    result = run_django({"KAFKA_SECURITY_PROTOCOL": "TLS"})
    assert result.returncode == 1
    assert (
        "ImproperlyConfigured: KAFKA_SECURITY_PROTOCOL='TLS' is not one of "
        "PLAINTEXT, SSL, SASL_PLAINTEXT, SASL_SSL" in result.stderr
    )


def test_an_unknown_sasl_mechanism_stops_start_up_with_a_clear_error():
    result = run_django({"KAFKA_SECURITY_PROTOCOL": "SASL_SSL", "KAFKA_SASL_MECHANISM": "GSSAPI"})
    assert result.returncode == 1
    assert "KAFKA_SASL_MECHANISM='GSSAPI' is not one of PLAIN, SCRAM-SHA-256, SCRAM-SHA-512" in result.stderr


@pytest.mark.parametrize("address", ["broker", "broker:", "broker:notaport", "broker:70000", ":9092"])
def test_a_bootstrap_server_that_is_not_host_and_port_stops_start_up_with_a_clear_error(address):
    result = run_django({"KAFKA_BOOTSTRAP_SERVERS": f"127.0.0.1:9092,{address}"})
    assert result.returncode == 1
    assert f"ImproperlyConfigured: KAFKA_BOOTSTRAP_SERVERS entry {address!r} is not host:port" in result.stderr


def test_the_settings_module_before_it_became_a_package_is_refused_naming_its_successor():
    result = run_django({"DJANGO_SETTINGS_MODULE": "config.settings"})
    assert result.returncode == 1
    assert (
        "ImproperlyConfigured: DJANGO_SETTINGS_MODULE=config.settings is no longer a settings module: "
        "set it to config.settings.production" in result.stderr
    )


def test_an_empty_secret_key_with_debug_off_counts_as_the_development_default():
    result = run_django({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": ""})
    assert result.returncode == 1
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is the development default" in result.stderr


def test_the_dlt_topic_follows_the_event_topic_unless_set():
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings; "
            "print(settings.ORDER_EXPORT_TOPIC, settings.ORDER_EXPORT_DLT_TOPIC)",
        ],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings.production", "ORDER_EXPORT_TOPIC": "orders-v2"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.stdout.split() == ["orders-v2", "orders-v2.DLT"]


@pytest.mark.parametrize(
    ("env", "line"),
    [
        (
            {"OTEL_TRACES_EXPORTER": "jaeger"},
            "OTEL_TRACES_EXPORTER names jaeger: this deployment has otlp, console, none",
        ),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "OTEL_EXPORTER_OTLP_PROTOCOL='grpc': the OTLP exporter installed speaks http/protobuf",
        ),
        (
            {"OTEL_TRACE_URL_TEMPLATE": "https://tempo.example/trace/"},
            "OTEL_TRACE_URL_TEMPLATE='https://tempo.example/trace/' must be an http(s) URL with {trace_id} in it",
        ),
    ],
)
def test_tracing_settings_this_deployment_cannot_honour_stop_start_up_with_a_clear_error(env, line):
    result = run_django({"DJANGO_DEBUG": "true", **env})
    assert result.returncode == 1
    assert f"ImproperlyConfigured: {line}" in result.stderr


def test_an_otlp_exporter_with_its_endpoint_starts():
    result = run_django(
        {
            "DJANGO_DEBUG": "true",
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        }
    )
    assert result.returncode == 0, result.stderr


def test_debezium_on_sqlite_is_refused_in_one_line():
    result = run_django({"OUTBOX_PUBLISHER": "debezium", "DATABASE_URL": "sqlite:///unused.sqlite3"})
    assert result.returncode == 1
    assert (
        "ImproperlyConfigured: OUTBOX_PUBLISHER=debezium needs PostgreSQL (DATABASE_URL=postgres://...)"
        in result.stderr
    )


def test_an_unknown_outbox_publisher_is_refused_naming_the_known_ones():
    result = run_django({"OUTBOX_PUBLISHER": "polling"})
    assert result.returncode == 1
    assert "ImproperlyConfigured: OUTBOX_PUBLISHER='polling' is not one of relay, debezium" in result.stderr


def test_publishing_on_commit_said_on_beside_debezium_is_refused():
    result = run_django(
        {
            "OUTBOX_PUBLISHER": "debezium",
            "DATABASE_URL": "postgres://orderflow@127.0.0.1:1/unused",
            "KAFKA_PUBLISH_ON_COMMIT": "true",
        }
    )
    assert result.returncode == 1
    assert "KAFKA_PUBLISH_ON_COMMIT=true contradicts OUTBOX_PUBLISHER=debezium" in result.stderr
