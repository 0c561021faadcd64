"""Text as logs, headers and probes want it."""

MAX_LINE_LENGTH = 1000


def one_line(text: str, *, limit: int = MAX_LINE_LENGTH) -> str:
    """`text` with its whitespace runs (line breaks included) as single spaces, cut at `limit`:
    an error as one readable line of a log, a header or a probe's answer."""
    return " ".join(text.split())[:limit]
