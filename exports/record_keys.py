"""The key of the event topic's records and of its DLT's: by the contract, the order id as text."""

from __future__ import annotations

# The largest id a 64-bit signed integer column (every database's BigAutoField) holds: a larger
# number names no order and could not even be looked up.
ORDER_ID_MAX = 2**63 - 1


def order_id_from_key(key: bytes | str | None) -> int | None:
    """The order id `key` names: ASCII digits only (str.isdigit is also true for "²", which
    int() refuses), at most ORDER_ID_MAX. None for a null key or any other."""
    if isinstance(key, bytes):
        key = key.decode("utf-8", "replace")
    if not key or not key.isascii() or not key.isdigit() or len(key) > len(str(ORDER_ID_MAX)):
        return None
    order_id = int(key)
    return order_id if order_id <= ORDER_ID_MAX else None
