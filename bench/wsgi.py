"""The project's WSGI application for the HTTP benchmark under gunicorn.

Exactly `config.wsgi` (DJANGO_SETTINGS_MODULE=config.settings.production), except that BENCH_EVENT_RECORDER,
when set, replaces the DOMAIN_EVENT_RECORDER setting: the recorder is looked up at call time,
so a worker that set it before serving its first request never publishes.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")

from django.conf import settings
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

# One user confirms thousands of orders a minute here; the default rate would throttle it. (Set
# before the first request imports DRF's throttles, which read the rates once.)
settings.REST_FRAMEWORK = {
    **settings.REST_FRAMEWORK,
    "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], "user": "1000000/min"},
}

if os.environ.get("BENCH_EVENT_RECORDER"):
    settings.DOMAIN_EVENT_RECORDER = os.environ["BENCH_EVENT_RECORDER"]
