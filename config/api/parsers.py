"""The API's request parser: JSON only, within API_MAX_BODY_BYTES, and a 4xx for anything it
cannot read, never a 500."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from rest_framework import renderers, status
from rest_framework.exceptions import APIException, ParseError
from rest_framework.parsers import BaseParser, get_encoding
from rest_framework.settings import api_settings
from rest_framework.utils import json


class RequestTooLarge(APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = "Request body too large."
    default_code = "request_too_large"


def _too_large() -> RequestTooLarge:
    return RequestTooLarge(f"Request body larger than {settings.API_MAX_BODY_BYTES} bytes.")


def _declared_length(parser_context: dict[str, Any]) -> int | None:
    request = parser_context.get("request")
    try:
        return int(request.META["CONTENT_LENGTH"])
    except (AttributeError, KeyError, TypeError, ValueError):
        return None


class BoundedJSONParser(BaseParser):
    """JSON request bodies of at most `API_MAX_BODY_BYTES` bytes: a larger body is a 413
    (`request_too_large`), refused on its Content-Length before anything is read, and otherwise
    never read past the limit. Bodies that are not JSON, not in their charset (UTF-8 unless the
    Content-Type names another), or nested deeper than the decoder's recursion limit are a 400
    `parse_error`.

    Not a subclass of DRF's JSONParser on purpose: DRF 3.18 hands a JSONParser
    `BytesIO(request.body)`, and Django's own size check in `request.body` raises
    RequestDataTooBig, which Django answers with an HTML 400. Given the request's stream
    instead, this parser bounds the read itself and answers with the API's JSON error.
    """

    media_type = "application/json"
    renderer_class = renderers.JSONRenderer

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        limit = settings.API_MAX_BODY_BYTES
        declared = _declared_length(parser_context)
        if declared is not None and declared > limit:
            raise _too_large()
        # One byte past the limit tells an oversized body from one of exactly the limit, even
        # when the stream holds more than Content-Length said.
        body = stream.read(limit + 1)
        if len(body) > limit:
            raise _too_large()
        encoding = get_encoding(parser_context)
        try:
            text = body.decode(encoding)
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        parse_constant = json.strict_constant if api_settings.STRICT_JSON else None
        try:
            return json.loads(text, parse_constant=parse_constant)
        except RecursionError:
            # json's decoder recurses once per level of nesting: "[[[[...]]]]" a few thousand
            # deep exhausts the stack long before the size limit.
            raise ParseError("JSON parse error - nested too deeply") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
