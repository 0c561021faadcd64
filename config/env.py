"""The one `environ.Env` every settings module reads the environment through.

Values come from the process environment first, then from a `.env` file at the project root
(django-environ never overrides a variable that is already set). `make run` writes a `.env` for
development when there is none (DJANGO_DEBUG=true, a secret key of its own), so that every
`manage.py` command run in the checkout gets the same development settings.

DJANGO_READ_DOT_ENV_FILE=false (from the environment only) ignores the file: the test settings
set it, so that no test depends on a developer's `.env`, and so does docs/production.env, so that
a `.env` left in a deployed tree cannot turn DEBUG on.
"""

from pathlib import Path
from typing import Any

import environ
from django.core.exceptions import ImproperlyConfigured

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.bool("DJANGO_READ_DOT_ENV_FILE", default=True):
    environ.Env.read_env(BASE_DIR / ".env")


def env_options(name: str, *, defaults: dict[str, Any], fixed: tuple[str, ...] = ()) -> dict[str, Any]:
    """`defaults` with the JSON object in the variable `name` laid over it, as arroyo's
    `override_params`: the deployer's keys win. Keys in `fixed` are the project's own and are
    refused, as is anything but a JSON object, with one line naming the variable."""
    try:
        options = env.json(name, default={})
    except ValueError as exc:
        raise ImproperlyConfigured(f"{name} is not valid JSON ({exc}); set a JSON object, e.g. '{{\"key\": 1}}'")
    if not isinstance(options, dict):
        raise ImproperlyConfigured(
            f"{name} must be a JSON object, e.g. '{{\"key\": 1}}', not a JSON {type(options).__name__}"
        )
    refused = sorted(key for key in options if key in fixed)
    if refused:
        raise ImproperlyConfigured(
            f"{name} may not set {', '.join(refused)}: the connection comes from KAFKA_BOOTSTRAP_SERVERS, "
            "KAFKA_SECURITY_PROTOCOL, KAFKA_SASL_* and KAFKA_SSL_CAFILE, and the rest is the project's own"
        )
    return {**defaults, **options}
