"""The project's WSGI application for the HTTP benchmark under gunicorn.

Exactly `config.wsgi` (DJANGO_SETTINGS_MODULE=config.settings), except that BENCH_EVENT_RECORDER,
when set, replaces the DOMAIN_EVENT_RECORDER setting: the recorder is looked up at call time,
so a worker that set it before serving its first request never publishes.
"""

import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

from django.conf import settings
from django.core.wsgi import get_wsgi_application

application = get_wsgi_application()

if os.environ.get("BENCH_EVENT_RECORDER"):
    settings.DOMAIN_EVENT_RECORDER = os.environ["BENCH_EVENT_RECORDER"]
