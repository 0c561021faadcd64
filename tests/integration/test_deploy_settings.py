"""The production settings, as a process started with docs/production.env sees them: Django's
deployment checks pass, the HTTPS settings come from the environment, and what the settings
refuse is said in one line rather than a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from config.env import BASE_DIR

PRODUCTION_ENV = BASE_DIR / "docs" / "production.env"
# What a process needs from the machine rather than from the deployment.
MACHINE_VARIABLES = ("PATH", "HOME", "LANG", "LC_ALL", "TMPDIR")


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=VALUE lines; blank lines and comments skipped."""
    variables = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, value = line.partition("=")
            variables[name.strip()] = value.strip()
    return variables


def production_env(**overrides: str) -> dict[str, str]:
    """docs/production.env and nothing else of the test's own environment (which asks for the
    fake platform and a test key), with the real settings module. production.env says not to
    read a `.env` at the project root."""
    env = {name: os.environ[name] for name in MACHINE_VARIABLES if name in os.environ}
    return {**env, **read_env_file(PRODUCTION_ENV), "DJANGO_SETTINGS_MODULE": "config.settings.production", **overrides}


def manage(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, str(BASE_DIR / "manage.py"), *args],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


SETTINGS_PRINTER = """
import json
import django
from django.conf import settings
django.setup()
names = ["SECURE_PROXY_SSL_HEADER", "SECURE_SSL_REDIRECT", "SECURE_HSTS_SECONDS", "SECURE_HSTS_INCLUDE_SUBDOMAINS",
         "SECURE_HSTS_PRELOAD", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE", "CSRF_TRUSTED_ORIGINS", "DEBUG"]
print(json.dumps({name: [type(getattr(settings, name)).__name__, getattr(settings, name)] for name in names}))
"""


def settings_of(env: dict[str, str]) -> dict[str, list]:
    """{setting: [its type's name, its value as JSON]} in a process started with `env`."""
    result = subprocess.run(
        [sys.executable, "-c", SETTINGS_PRINTER],
        cwd=BASE_DIR,
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_the_documented_production_environment_passes_the_deployment_checks():
    result = manage("check", "--deploy", "--fail-level", "WARNING", env=production_env())

    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues" in result.stdout


def test_the_https_settings_come_from_the_environment():
    printed = settings_of(production_env())

    assert printed == {
        "SECURE_PROXY_SSL_HEADER": ["tuple", ["HTTP_X_FORWARDED_PROTO", "https"]],
        "SECURE_SSL_REDIRECT": ["bool", True],
        "SECURE_HSTS_SECONDS": ["int", 31536000],
        "SECURE_HSTS_INCLUDE_SUBDOMAINS": ["bool", True],
        "SECURE_HSTS_PRELOAD": ["bool", True],
        "SESSION_COOKIE_SECURE": ["bool", True],
        "CSRF_COOKIE_SECURE": ["bool", True],
        "CSRF_TRUSTED_ORIGINS": ["list", ["https://orders.example.com"]],
        "DEBUG": ["bool", False],
    }


def test_other_https_values_in_the_environment_are_taken_as_given():
    printed = settings_of(
        production_env(
            DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_SCHEME,https",
            DJANGO_SECURE_HSTS="max-age=3600",
            DJANGO_CSRF_TRUSTED_ORIGINS="https://orders.example.com,https://admin.example.com",
        )
    )

    assert printed["SECURE_PROXY_SSL_HEADER"] == ["tuple", ["HTTP_X_FORWARDED_SCHEME", "https"]]
    assert printed["SECURE_HSTS_SECONDS"] == ["int", 3600]
    assert printed["SECURE_HSTS_INCLUDE_SUBDOMAINS"] == ["bool", False]
    assert printed["CSRF_TRUSTED_ORIGINS"] == ["list", ["https://orders.example.com", "https://admin.example.com"]]


def test_with_debug_off_the_development_key_is_refused_in_one_line():
    # The test settings' environment says not to read a `.env`, which may hold a key.
    env = {name: value for name, value in os.environ.items() if name != "DJANGO_SECRET_KEY"}
    env.update(DJANGO_SETTINGS_MODULE="config.settings.production", DJANGO_DEBUG="false")

    result = manage("check", env=env)

    assert result.returncode != 0
    [line] = result.stderr.splitlines()
    assert line.startswith("ImproperlyConfigured: DJANGO_SECRET_KEY is the development default")


def test_a_malformed_proxy_ssl_header_is_refused_in_one_line():
    result = manage("check", env=production_env(DJANGO_SECURE_PROXY_SSL_HEADER="HTTP_X_FORWARDED_PROTO"))

    assert result.returncode == 1
    assert result.stderr.splitlines() == [
        (
            'ImproperlyConfigured: DJANGO_SECURE_PROXY_SSL_HEADER must be "<header>,<value>", '
            'e.g. "HTTP_X_FORWARDED_PROTO,https"'
        )
    ]


def test_an_error_that_is_not_the_settings_refusing_keeps_its_traceback():
    result = manage("check", env=production_env(ORDER_EXPORT_PARTITIONS="many"))

    assert result.returncode == 1
    assert result.stderr.startswith("Traceback (most recent call last):")
    assert "ValueError" in result.stderr
