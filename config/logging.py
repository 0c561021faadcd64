"""The JSON log format (LOG_FORMAT=json): one object per line, for log shippers that index
fields instead of parsing text; and the filter that keeps secrets out of every log line."""

from __future__ import annotations

import json
import logging
import re
from datetime import UTC, datetime
from urllib.parse import quote, unquote, urlsplit

from django.conf import settings

# What every LogRecord has; anything else on a record came from `extra={...}` and is a field.
_RECORD_ATTRIBUTES = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """`{"time", "level", "logger", "message", ...extra fields, "exception"?}` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        entry.update((name, value) for name, value in vars(record).items() if name not in _RECORD_ATTRIBUTES)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = self.formatStack(record.stack_info)
        # default=str: an extra field that is not JSON (a UUID, a datetime) is still logged.
        return json.dumps(entry, default=str, ensure_ascii=False)


class SecretsFilter(logging.Filter):
    """Rewrites every record it sees so that it carries no secret of the settings: the Kafka SASL
    password, the database password, and the userinfo and query string of EXPORT_PLATFORM_URL,
    each also as it looks inside a repr or a URL. The userinfo and query string of any other
    URL in a record go as well.

    kafka-python logs its whole configuration (sasl_plain_password included) and every request
    (a SASL PLAIN login carries the password) at DEBUG, so KAFKA_CLIENT_LOG_LEVEL=DEBUG would
    otherwise print the password. The record is changed in place, so that the handlers after
    this one (pytest's capture, a log shipper's) see it redacted too; it always passes.
    """

    REDACTED = "***"
    # scheme://userinfo@ and ?query of URLs, up to the next space or quote.
    _URL_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/\s@'\"]+@")
    _URL_QUERY = re.compile(r"(?P<url>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^\s?#'\"]*)\?[^\s#'\"]+")

    def __init__(self, name: str = "") -> None:
        super().__init__(name)
        self._spellings_of: tuple[tuple, list[str]] = ((), [])

    def filter(self, record: logging.LogRecord) -> bool:
        secrets = self._secrets()
        try:
            message = record.getMessage()
        except Exception:
            return True
        redacted = self.redact(message, secrets)
        if redacted != message:
            record.msg, record.args = redacted, ()
        if record.exc_info and record.exc_info[1] is not None:
            text = record.exc_text or logging.Formatter().formatException(record.exc_info)
            redacted = self.redact(text, secrets)
            if redacted != text:
                # The formatters print exc_text when there is no exc_info; the exception itself
                # would be formatted again, secret included.
                record.exc_info, record.exc_text = None, redacted
        if record.stack_info:
            record.stack_info = self.redact(record.stack_info, secrets)
        for name in vars(record).keys() - _RECORD_ATTRIBUTES:
            value = getattr(record, name)
            if isinstance(value, str):
                setattr(record, name, self.redact(value, secrets))
        return True

    def redact(self, text: str, secrets: list[str]) -> str:
        for secret in secrets:
            text = text.replace(secret, self.REDACTED)
        if "://" in text:
            text = self._URL_USERINFO.sub(rf"\g<scheme>{self.REDACTED}@", text)
            text = self._URL_QUERY.sub(rf"\g<url>?{self.REDACTED}", text)
        return text

    def _secrets(self) -> list[str]:
        """The secrets of the settings as they are now (tests change them), spelled out again
        only when they change."""
        try:
            configured = (
                settings.KAFKA_SASL_PASSWORD,
                settings.DATABASES["default"].get("PASSWORD"),
                settings.EXPORT_PLATFORM_URL,
            )
        except Exception:
            return []
        if configured != self._spellings_of[0]:
            self._spellings_of = (configured, _spellings(*configured))
        return self._spellings_of[1]


def _spellings(sasl_password: str | None, database_password: str | None, platform_url: str | None) -> list[str]:
    """The secrets (the passwords, and the userinfo, password and query string of the platform
    URL), each as text, as repr() shows it inside a str or a bytes object (kafka-python logs
    configuration dicts and request objects), and percent-encoded and decoded as in a URL;
    longest first, so that no shorter spelling breaks up a longer one."""
    secrets = [sasl_password, database_password]
    if platform_url:
        parts = urlsplit(platform_url)
        if "@" in parts.netloc:
            secrets.append(parts.netloc.rpartition("@")[0])
        secrets += [parts.password, parts.query]
    spellings = set()
    for secret in filter(None, secrets):
        spellings |= {
            secret,
            repr(secret)[1:-1],
            repr(secret.encode())[2:-1],
            quote(secret, safe=""),
            unquote(secret),
        }
    return sorted(filter(None, spellings), key=len, reverse=True)
