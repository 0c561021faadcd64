"""The one place environment variables are read.

Values come from the process environment first, then from a `.env` file at the project root
(django-environ never overrides a variable that is already set).
"""

from pathlib import Path

import environ

BASE_DIR = Path(__file__).resolve().parent.parent

env = environ.Env()
environ.Env.read_env(BASE_DIR / ".env")
