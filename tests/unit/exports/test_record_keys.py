"""The order id a record's key names, for the topic browser's links, the dead letters page and
the consumer's log lines: the contract's key is the order id as ASCII digits."""

import pytest

from exports.consumer import export_log_fields
from exports.record_keys import ORDER_ID_MAX, order_id_from_key
from tests.support.factories import consumer_record_factory


@pytest.mark.parametrize(
    ("key", "order_id"),
    [
        (b"4711", 4711),
        ("4711", 4711),
        (b"007", 7),
        (str(ORDER_ID_MAX).encode(), ORDER_ID_MAX),
        (str(ORDER_ID_MAX + 1).encode(), None),
        (b"1" * 30, None),
        (None, None),
        (b"", None),
        (b"-1", None),
        (b" 1", None),
        (b"1.0", None),
        ("²".encode(), None),
        ("١٢".encode(), None),
        (b"\xff\xfe", None),
    ],
)
def test_a_key_names_an_order_only_as_ascii_digits_a_bigint_holds(key, order_id):
    assert order_id_from_key(key) == order_id


@pytest.mark.parametrize(
    ("key", "logged"),
    [
        (b"4711", 4711),
        (b"not-an-id", "not-an-id"),
        (str(ORDER_ID_MAX + 1).encode(), str(ORDER_ID_MAX + 1)),
        (None, None),
    ],
)
def test_the_consumers_log_lines_carry_the_order_id_or_the_key_as_text(key, logged):
    assert export_log_fields(consumer_record_factory(key=key, value=b"{}")) == {"order_id": logged}
