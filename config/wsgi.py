import io
import json
import os

from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings.production")


class ChunkedBodies:
    """Gives Django a chunked request body it can read, within API_MAX_BODY_BYTES.

    Django reads no more of `wsgi.input` than Content-Length says, so a body sent with
    `Transfer-Encoding: chunked` and no length would reach the views empty (a valid order
    refused as "fields required"). When the server marks the input terminated (gunicorn does,
    having de-chunked it), the body is read here up to the limit plus a byte: over it, 413;
    within it, passed on with its length. A server that cannot end the input gets 411.
    """

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        if environ.get("HTTP_TRANSFER_ENCODING", "").lower() == "chunked" and not environ.get("CONTENT_LENGTH"):
            from django.conf import settings

            if not environ.get("wsgi.input_terminated"):
                return _error(
                    start_response,
                    "411 Length Required",
                    "length_required",
                    "A request body needs a Content-Length header.",
                )
            limit = settings.API_MAX_BODY_BYTES
            body = environ["wsgi.input"].read(limit + 1)
            if len(body) > limit:
                return _error(
                    start_response,
                    "413 Request Entity Too Large",
                    "request_too_large",
                    f"Request body larger than {limit} bytes.",
                )
            environ["wsgi.input"] = io.BytesIO(body)
            environ["CONTENT_LENGTH"] = str(len(body))
        return self.app(environ, start_response)


def _error(start_response, status: str, code: str, detail: str):
    body = json.dumps({"detail": detail, "code": code}).encode()
    start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
    return [body]


application = ChunkedBodies(get_wsgi_application())
