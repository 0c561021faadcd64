"""orderflow's settings, split by concern. `production` is what every process runs with
(manage.py, WSGI and ASGI default to it; development is the same settings with the `.env` that
`make run` writes); `test` is the suite's. The others are its parts: `base` (the wiring no
deployment changes, DEBUG, the secret key, the database), `web`, `kafka`, `exports`,
`observability`, and `removed` (variables no longer read, refused at start-up)."""

import os

from django.core.exceptions import ImproperlyConfigured

# `config.settings` was the settings module before it became this package; a deployment that
# still names it would start on no settings at all.
if os.environ.get("DJANGO_SETTINGS_MODULE") == "config.settings":
    raise ImproperlyConfigured(
        "DJANGO_SETTINGS_MODULE=config.settings is no longer a settings module: set it to config.settings.production"
    )
