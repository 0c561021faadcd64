"""The project as a whole: checks, migrations, the database it runs on, the admin, the settings.
(Settings that stop start-up are tried in processes of their own: tests/integration/test_start_up_settings.py.)"""

import io
import os

import pytest
from django.conf import settings
from django.core.management import call_command
from django.db import connection


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


def test_settings_defaults_match_the_contract():
    # The suite's environment may override the connection, but not these.
    assert (
        os.environ.get("ORDER_EXPORT_CONSUMER_GROUP", "order-export-consumer") == settings.ORDER_EXPORT_CONSUMER_GROUP
    )
    assert float(os.environ.get("EXPORT_PLATFORM_TIMEOUT", 5)) == settings.EXPORT_PLATFORM_TIMEOUT
    assert int(os.environ.get("EXPORT_MAX_ATTEMPTS", 5)) == settings.EXPORT_MAX_ATTEMPTS


def test_a_test_cannot_set_a_setting_the_project_does_not_have(settings):
    with pytest.raises(AttributeError, match="KAFKA_CONSUMER_MAX_POLL_RECORDS is not a setting"):
        settings.KAFKA_CONSUMER_MAX_POLL_RECORDS = 5
    settings.EXPORT_MAX_ATTEMPTS = 3

    from django.conf import settings as django_settings

    assert django_settings.EXPORT_MAX_ATTEMPTS == 3
