"""The topic browser's header filter, as the scan applies it to each record's headers."""

import pytest

from kafka_bridge.console.browser.scan import HeaderSearch

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
HEADERS = [
    ("event_type", b"OrderExportRequested"),
    ("event_id", b"5b7f1d0e-3c2a-4f6e-9a1b-2c3d4e5f6a7b"),
    ("traceparent", f"00-{TRACE_ID}-00f067aa0ba902b7-01".encode()),
    ("nothing", None),
]


@pytest.mark.parametrize(
    ("search", "found"),
    [
        (HeaderSearch("traceparent", TRACE_ID.encode()), True),
        (HeaderSearch(None, TRACE_ID.encode()), True),
        (HeaderSearch("tracestate", TRACE_ID.encode()), False),
        (HeaderSearch("event_id", TRACE_ID.encode()), False),
        (HeaderSearch("event_id", b"5b7f1d0e-3c2a-4f6e-9a1b-2c3d4e5f6a7b"), True),
        (HeaderSearch("traceparent", None), True),
        (HeaderSearch("nothing", None), True),
        (HeaderSearch("nothing", b"x"), False),
        (HeaderSearch("missing", None), False),
    ],
)
def test_a_header_search_finds_a_named_header_whose_value_holds_the_text(search, found):
    assert search.found_in(HEADERS) is found


def test_a_record_without_headers_has_none_to_find():
    assert HeaderSearch(None, b"x").found_in(None) is False
    assert HeaderSearch("traceparent", None).found_in([]) is False
