"""The wiring no deployment changes (the apps, the middleware, the URL, WSGI and template wiring,
password validators, language and time zone, static files, the API schema's description, where
`orders` hands its domain events), and what every process needs first: DEBUG, the secret key and
the database."""

from django.core.exceptions import ImproperlyConfigured

from config.env import BASE_DIR, env

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "rest_framework.authtoken",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_prometheus",
    "kafka_bridge",
    "orders",
    "exports",
    # Tracing, set up once Django is (kafka_bridge/tracing.py)
    "config.apps.ObservabilityConfig",
]

MIDDLEWARE = [
    # First and last: django-prometheus times the whole stack and counts requests by view.
    "django_prometheus.middleware.PrometheusBeforeMiddleware",
    # The request's trace (kafka_bridge/tracing.py): around the rest, so the span is the whole request.
    "kafka_bridge.tracing.RequestSpanMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_prometheus.middleware.PrometheusAfterMiddleware",
]

ROOT_URLCONF = "config.urls"
WSGI_APPLICATION = "config.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "config" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"

SPECTACULAR_SETTINGS = {
    "TITLE": "orderflow API",
    "DESCRIPTION": "Orders, their confirmation, and the export status of confirmed orders.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # Swagger UI's assets from drf-spectacular-sidecar, served locally: no CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
}

DEBUG = env.bool("DJANGO_DEBUG", default=False)
# Good for development only: with DJANGO_DEBUG=false the process refuses to start with it, since
# whoever knows it can forge sessions and password-reset links.
DEVELOPMENT_SECRET_KEY = "insecure-development-key-change-me"
# An empty value counts as unset.
SECRET_KEY = env("DJANGO_SECRET_KEY", default="") or DEVELOPMENT_SECRET_KEY
if not DEBUG and SECRET_KEY == DEVELOPMENT_SECRET_KEY:
    raise ImproperlyConfigured(
        "DJANGO_SECRET_KEY is the development default; set a secret of your own (or DJANGO_DEBUG=true for development)"
    )

DATABASES = {"default": env.db("DATABASE_URL", default=f"sqlite:///{BASE_DIR / 'db.sqlite3'}")}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # The web server, the consumer and the relay write to the same file. WAL lets readers run
    # beside the writer; IMMEDIATE transactions take the write lock up front, so a busy
    # database makes a writer wait (up to `timeout` seconds) instead of failing with
    # "database is locked" when a read transaction tries to upgrade.
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        {
            "transaction_mode": "IMMEDIATE",
            "timeout": 20,
            "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        }
    )
