#!/usr/bin/env python
"""Django's command-line utility for administrative tasks."""

import os
import sys


def main() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")
    from django.core.exceptions import ImproperlyConfigured
    from django.core.management import execute_from_command_line

    try:
        execute_from_command_line(sys.argv)
    except ImproperlyConfigured as exc:
        # What the settings refuse (the development secret key with DEBUG off, a malformed
        # variable) is for the operator to fix: one line, not the end of a traceback through
        # Django's internals. (After --settings is read, so that option still works.)
        sys.exit(f"ImproperlyConfigured: {' '.join(str(exc).split())}")


if __name__ == "__main__":
    main()
