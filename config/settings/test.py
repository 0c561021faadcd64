"""Test settings: the production settings with the slow parts made fast, and the knobs that
exist for tests."""

import os
import tempfile

# Set in the environment, so the consumers and relays the tests start as processes get them too:
# no `.env` (`make run` writes one for development: DEBUG on, a key of its own), and a key that is
# not the development default (DEBUG is off, as in production).
os.environ["DJANGO_READ_DOT_ENV_FILE"] = "false"
os.environ.setdefault("DJANGO_SECRET_KEY", "orderflow-tests-only-not-a-secret")

from config.env import env
from config.settings.production import *  # noqa: F403
from config.settings.production import DATABASES

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

# The fake platform, said explicitly: DEBUG is off, as in production, where the consumer refuses
# to run on the fake without it.
EXPORT_PLATFORM = "fake"

if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # A file, not SQLite's in-memory default: the export consumer runs in a thread or a
    # subprocess in the integration tests and must see what the test committed. One file per
    # test process, so parallel runs do not collide.
    DATABASES["default"]["TEST"] = {
        "NAME": os.path.join(tempfile.gettempdir(), f"orderflow-test-{os.getpid()}.sqlite3")
    }

# What a test turns for the processes it starts (a relay that sends at once, a consumer with
# another client id, ...): a JSON object of settings, e.g. TEST_SETTINGS='{"OUTBOX_RELAY_GRACE_SECONDS": 0}'.
# Only settings that exist may be named.
_overrides = env.json("TEST_SETTINGS", default={})
for _name, _value in _overrides.items():
    if _name not in globals() or not _name.isupper():
        raise ValueError(f"TEST_SETTINGS names {_name!r}, which is not a setting")
    globals()[_name] = _value
