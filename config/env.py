"""The one place environment variables are read.

Values come from the process environment first, then from a `.env` file at the project root
(django-environ never overrides a variable that is already set). `make run` writes a `.env` for
development when there is none (DJANGO_DEBUG=true, a secret key of its own), so that every
`manage.py` command run in the checkout gets the same development settings.

DJANGO_READ_DOT_ENV_FILE=false (from the environment only) ignores the file: the test settings
set it, so that no test depends on a developer's `.env`, and so does docs/production.env, so that
a `.env` left in a deployed tree cannot turn DEBUG on.
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
if env.bool("DJANGO_READ_DOT_ENV_FILE", default=True):
    environ.Env.read_env(BASE_DIR / ".env")
