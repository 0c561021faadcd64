"""Test settings: the production settings with the slow parts made fast."""

import os
import tempfile

# Set in the environment, so the consumers and relays the tests start as processes get them too:
# no `.env` (`make run` writes one for development: DEBUG on, a key of its own), a key that is not
# the development default (DEBUG is off, as in production), and the fake platform asked for
# explicitly.
os.environ["DJANGO_READ_DOT_ENV_FILE"] = "false"
os.environ.setdefault("DJANGO_SECRET_KEY", "orderflow-tests-only-not-a-secret")
os.environ.setdefault("EXPORT_PLATFORM", "fake")

from config.settings import *  # noqa: F403
from config.settings import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not SQLite's in-memory default: the export consumer runs in a thread or a
    # subprocess in the integration tests and must see what the test committed. One file per
    # test process, so parallel runs do not collide.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"orderflow-test-{os.getpid()}.sqlite3")
    }
