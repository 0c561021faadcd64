"""The project's WSGI application for the HTTP benchmark under gunicorn.

Exactly `config.wsgi` (DJANGO_SETTINGS_MODULE=config.settings.production), except that one user
may confirm as fast as the benchmark drives it: the API's per-user throttle is a setting of the
project, not of the environment, so the benchmark's server raises it here.
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
