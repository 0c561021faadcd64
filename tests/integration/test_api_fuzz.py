"""The API fuzzed against its own OpenAPI schema.

schemathesis reads `/api/schema/` from the project's WSGI application, in this process, and for
every operation sends requests that fit the schema and requests that do not (wrong types,
missing fields, strings past their maxLength, odd characters, ...), as a superuser with a
token. Every answer must be no 5xx, with a status code, content type, headers and body that the
schema documents. A failed check fails the test, with the request that reproduces it.

Bounded and reproducible: a fixed number of examples per operation, a fixed seed, derandomized
Hypothesis and no example database, so CI sends the same requests on every run.
"""

from __future__ import annotations

from collections.abc import Iterator

import hypothesis
import pytest
import schemathesis
from django.contrib.auth import get_user_model
from django.core import signals
from django.db import close_old_connections
from rest_framework import throttling
from rest_framework.authtoken.models import Token
from schemathesis.config import SchemathesisConfig

from config.wsgi import application

pytestmark = pytest.mark.django_db

SEED = 20_261_129
EXAMPLES_PER_OPERATION = 100
# Far above anything this file sends: the fuzzer tests the API, not its throttles.
UNTHROTTLED_RATE = "1000000/min"

CHECKS = [
    schemathesis.checks.not_a_server_error,
    schemathesis.checks.status_code_conformance,
    schemathesis.checks.content_type_conformance,
    schemathesis.checks.response_schema_conformance,
    schemathesis.checks.response_headers_conformance,
]

CONFIG = SchemathesisConfig.from_dict(
    {
        "seed": SEED,
        "generation": {
            "mode": "all",  # requests that fit the schema, and requests that do not
            "max-examples": EXAMPLES_PER_OPERATION,
            "deterministic": True,
            "database": "none",
        },
    }
)

schema = schemathesis.openapi.from_wsgi("/api/schema/", application, config=CONFIG)


@pytest.fixture(autouse=True)
def requests_run_in_the_test_transaction() -> Iterator[None]:
    """The requests go through the real WSGI handler, whose request signals close the database
    connection: that would end the test's transaction. Django's test client detaches the same
    handler for the same reason."""
    signals.request_started.disconnect(close_old_connections)
    signals.request_finished.disconnect(close_old_connections)
    yield
    signals.request_started.connect(close_old_connections)
    signals.request_finished.connect(close_old_connections)


@pytest.fixture(autouse=True)
def throttles_out_of_the_way(settings, monkeypatch) -> None:
    """Every throttle scope at a rate the fuzzer cannot reach. DRF's throttles read their rates
    from a class attribute bound at import, which the setting alone would not change."""
    scopes = {"user", "anon", *throttling.SimpleRateThrottle.THROTTLE_RATES}
    scopes |= set(settings.REST_FRAMEWORK.get("DEFAULT_THROTTLE_RATES") or {})
    rates = dict.fromkeys(scopes, UNTHROTTLED_RATE)
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": rates}
    monkeypatch.setattr(throttling.SimpleRateThrottle, "THROTTLE_RATES", rates)


@pytest.fixture
def superuser_token() -> str:
    """A superuser holds every permission, so the fuzzer reaches each operation's own logic."""
    user = get_user_model().objects.create_superuser(username="fuzzer", email="fuzzer@example.com", password=None)
    return Token.objects.create(user=user).key


@schema.parametrize()
# One user and one database for all the examples of an operation, which is what this test wants:
# an order that one example creates is there for the next to read or confirm.
@hypothesis.settings(suppress_health_check=[hypothesis.HealthCheck.function_scoped_fixture])
def test_every_operation_answers_as_the_schema_documents(case, superuser_token):
    case.call_and_validate(headers={"Authorization": f"Token {superuser_token}"}, checks=CHECKS)
