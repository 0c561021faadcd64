"""What a read of a topic gives back (`kafka_bridge.console.browser.reading`): the records as the broker holds
them, what was read of each partition and why it stopped, and a topic's summary.
"""

from __future__ import annotations

import codecs
import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from kafka_bridge.connection import KafkaBridgeError


class TopicNotFound(KafkaBridgeError):
    """The broker does not know the topic (or the partition asked for)."""


# How stopping a partition's read is reported.
STOPPED_AT_END = "end"  # every record up to the end offset read when the page started
STOPPED_AT_LIMIT = "limit"  # enough matching records found
STOPPED_AT_SCAN_BOUND = "scan_bound"  # max_scanned records read in all
STOPPED_AT_TIME_BOUND = "time_bound"  # timeout_ms ran out


# What a record keeps of its bytes: a page shows a bounded part of each, whatever the record
# holds (a hostile or broken producer may write megabytes in a key, a value or a header, and
# gzip makes 10 MB of JSON a 10 KB record). The first VALUE_HEAD_BYTES of a value: an order's
# event is under 2 KB, so it is kept whole and pretty-printed, and the list cuts its text at
# 2,000 characters anyway.
VALUE_HEAD_BYTES = 4_096
# Of a key: MAX_SEARCH_LENGTH (1,000) characters of UTF-8, so the key a search names is shown
# whole; the project's keys are order ids.
KEY_HEAD_BYTES = 4_096
# Of a header value (the dead-letter headers' `dlt.error` is at most 1,000 characters) and of a
# header name, and how many headers: the project writes six.
HEADER_HEAD_BYTES = 4_096
MAX_HEADERS = 64


@dataclass(frozen=True)
class RecordView:
    """One record as a page shows it: the first bytes of its key (KEY_HEAD_BYTES), value
    (`value_head`) and header values (HEADER_HEAD_BYTES), exact as the broker holds them, None
    for a null one, with the size of each whole. A value longer than its head was read, sized
    and hashed (`value_sha256`) as it was fetched, and dropped."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value_head: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)
    # Bytes of the whole key, value, and each header value (-1 for null); None: the head is all.
    key_size: int | None = None
    value_size: int | None = None
    header_sizes: list[int] | None = None
    # Of the whole value, so that two records' values compare without either being kept.
    value_sha256: str = ""

    @property
    def timestamp(self) -> datetime | None:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC) if self.timestamp_ms >= 0 else None

    @property
    def key_text(self) -> str | None:
        """The key as text (bytes that are not UTF-8 escaped as \\xNN); None for a null key."""
        return bytes_text(self.key) if self.key_complete else head_text(self.key)

    @property
    def key_complete(self) -> bool:
        return self.key is None or self.key_size is None or len(self.key) == self.key_size

    @property
    def value_length(self) -> int:
        """Bytes of the whole value; 0 for a null value."""
        if self.value_head is None:
            return 0
        return self.value_size if self.value_size is not None else len(self.value_head)

    @property
    def value_complete(self) -> bool:
        """The head is the whole value (or the value is null)."""
        return self.value_head is None or len(self.value_head) == self.value_length

    @cached_property
    def value_json(self) -> str | None:
        """The value pretty-printed, when it is JSON and kept whole; else None. A value's head
        is never parsed: it is not JSON, and the whole could cost seconds and hundreds of MB."""
        if self.value_head is None or not self.value_complete:
            return None
        try:
            return json.dumps(json.loads(self.value_head), indent=2, ensure_ascii=False)
        # Not UTF-8 (UnicodeDecodeError is a ValueError), not JSON, or nested too deep to parse.
        except (ValueError, RecursionError):
            return None

    @property
    def value_text(self) -> str | None:
        """The value pretty-printed when it is JSON, else as text (see `bytes_text`); of a value
        longer than its head, the head as text. None for a null value."""
        if self.value_head is None:
            return None
        if self.value_json is not None:
            return self.value_json
        return bytes_text(self.value_head) if self.value_complete else head_text(self.value_head)

    @property
    def value_is_json(self) -> bool:
        return self.value_json is not None

    @property
    def header_texts(self) -> list[tuple[str, str | None]]:
        """Each header's name and value as text, a value cut to its head saying its size."""
        sizes = self.header_sizes or [-1 if value is None else len(value) for _, value in self.headers]
        return [
            (name, bytes_text(value) if value is None or len(value) == size else f"{head_text(value)}… ({size} bytes)")
            for (name, value), size in zip(self.headers, sizes)
        ]


# Control characters other than tab and line breaks: valid UTF-8, but invisible (or worse) on a
# page, so a binary value shows them as escapes as well.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def bytes_text(data: bytes | None) -> str | None:
    """UTF-8 text, with bytes that are not valid UTF-8, and control characters, shown as \\xNN."""
    if data is None:
        return None
    text = data.decode("utf-8", errors="backslashreplace")
    return _CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


def head_text(data: bytes | None) -> str | None:
    """`bytes_text` of the first bytes of something longer: a character the cut split in two is
    left out rather than shown as escapes."""
    if data is None:
        return None
    text = codecs.getincrementaldecoder("utf-8")("backslashreplace").decode(data, final=False)
    return _CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


@dataclass(frozen=True)
class PartitionRead:
    """What was read of one partition: its offsets when the read started, where the read began
    and the first offset it did not scan, and why it stopped (one of the STOPPED_AT_ values)."""

    partition: int
    earliest: int
    latest: int
    start: int
    next_offset: int
    stopped: str

    @property
    def unsearched_before(self) -> bool:
        """Older records exist that this read did not look at."""
        return self.start > self.earliest

    @property
    def older_search_offset(self) -> int:
        """Where a forward search of as many records again, just before `start`, would begin."""
        return max(self.earliest, self.start - (self.latest - self.start))


@dataclass(frozen=True)
class BrowseResult:
    topic: str
    records: list[RecordView]
    partitions: list[PartitionRead]
    scanned: int
    # True: the records are the newest (newest first); False: from a start point, oldest first.
    newest_first: bool
    # True when a bound, not the data, decided what was searched: the newest records of a
    # partition were looked at only back to `start` (newest mode), or a read stopped at
    # `next_offset` (forward mode).
    scan_bound_reached: bool
    timed_out: bool

    @property
    def resume_points(self) -> list[PartitionRead]:
        """Partitions whose search a bound cut short, for the caller to offer a continuation."""
        if self.newest_first:
            return [p for p in self.partitions if p.unsearched_before] if self.scan_bound_reached else []
        return [p for p in self.partitions if p.stopped in (STOPPED_AT_SCAN_BOUND, STOPPED_AT_TIME_BOUND)]


@dataclass(frozen=True)
class TopicSummary:
    name: str
    partitions: int
    records: int  # latest minus earliest offset, summed over the partitions
