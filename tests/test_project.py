"""The project as a whole: checks, migrations, the database it runs on, the admin."""
import io
import os
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection

from config.env import BASE_DIR


def test_system_checks_find_no_issue():
    out = io.StringIO()
    call_command("check", "--fail-level", "WARNING", stdout=out)
    assert out.getvalue().strip() == "System check identified no issues (0 silenced)."


@pytest.mark.django_db
def test_models_and_migrations_agree():
    out = io.StringIO()
    call_command("makemigrations", "--check", "--dry-run", stdout=out)
    assert out.getvalue().strip() == "No changes detected"


@pytest.mark.django_db
def test_the_suite_runs_on_the_database_that_database_url_names():
    url = os.environ.get("DATABASE_URL", "sqlite://")
    expected = "postgresql" if url.startswith(("postgres", "pgsql")) else "sqlite"
    assert connection.vendor == expected
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
        assert cursor.fetchone() == (1,)


@pytest.mark.django_db
def test_the_admin_login_page_is_served(client):
    response = client.get("/admin/login/")
    assert response.status_code == 200
    assert b"Django administration" in response.content


def run_django(env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup()"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
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


def test_an_empty_secret_key_with_debug_off_counts_as_the_development_default():
    result = run_django({"DJANGO_DEBUG": "false", "DJANGO_SECRET_KEY": ""})
    assert result.returncode == 1
    assert "ImproperlyConfigured: DJANGO_SECRET_KEY is the development default" in result.stderr


def test_the_dlt_topic_follows_the_event_topic_unless_set():
    result = subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); from django.conf import settings; "
         "print(settings.ORDER_EXPORT_TOPIC, settings.ORDER_EXPORT_DLT_TOPIC)"],
        cwd=BASE_DIR,
        env={**os.environ, "DJANGO_SETTINGS_MODULE": "config.settings", "ORDER_EXPORT_TOPIC": "orders-v2"},
        capture_output=True, text=True, timeout=60,
    )
    assert result.stdout.split() == ["orders-v2", "orders-v2.DLT"]


def test_settings_defaults_match_the_contract():
    # The suite's environment may override the connection, but not these.
    assert settings.ORDER_EXPORT_CONSUMER_GROUP == os.environ.get("ORDER_EXPORT_CONSUMER_GROUP", "order-export-consumer")
    assert settings.EXPORT_PLATFORM_TIMEOUT == float(os.environ.get("EXPORT_PLATFORM_TIMEOUT", 5))
    assert settings.EXPORT_MAX_ATTEMPTS == int(os.environ.get("EXPORT_MAX_ATTEMPTS", 5))


def test_every_variable_the_settings_read_is_documented_in_env_example():
    import re

    read = set(re.findall(r'env(?:\.\w+)?\(\s*"([A-Z][A-Z0-9_]+)"', (BASE_DIR / "config" / "settings.py").read_text()))
    documented = set(re.findall(r"^#? ?([A-Z][A-Z0-9_]+)=", (BASE_DIR / ".env.example").read_text(), re.MULTILINE))
    assert read, "no env() calls found: the pattern is out of date"
    assert read - documented == set()
