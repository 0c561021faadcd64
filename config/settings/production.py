"""The settings every orderflow process runs with (DJANGO_SETTINGS_MODULE=config.settings.production,
the default of manage.py, WSGI and ASGI). Every value a deployment decides is read from the
environment through `config.env.env` in the part for its concern, and documented in
`.env.example` and docs/configuration.md; a variable the project no longer reads stops start-up
with its replacement named (`config.settings.removed`)."""

from config.settings.base import *  # noqa: F403
from config.settings.exports import *  # noqa: F403
from config.settings.kafka import *  # noqa: F403
from config.settings.observability import *  # noqa: F403
from config.settings.removed import removed_variables_refuse
from config.settings.web import *  # noqa: F403

removed_variables_refuse()
