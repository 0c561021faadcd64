"""What a read of a topic gives back (`kafka_bridge.browse`): the records as the broker holds
them, what was read of each partition and why it stopped, and a topic's summary.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import cached_property

from kafka_bridge.client import KafkaBridgeError


class TopicNotFound(KafkaBridgeError):
    """The broker does not know the topic (or the partition asked for)."""


# How stopping a partition's read is reported.
STOPPED_AT_END = "end"  # every record up to the end offset read when the page started
STOPPED_AT_LIMIT = "limit"  # enough matching records found
STOPPED_AT_SCAN_BOUND = "scan_bound"  # max_scanned records read in all
STOPPED_AT_TIME_BOUND = "time_bound"  # timeout_ms ran out


@dataclass(frozen=True)
class RecordView:
    """One record as the broker holds it: key, value and header values are the exact bytes
    (None for a null key, value or header value)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]] = field(default_factory=list)

    @property
    def timestamp(self) -> datetime | None:
        return datetime.fromtimestamp(self.timestamp_ms / 1000, tz=UTC) if self.timestamp_ms >= 0 else None

    @property
    def key_text(self) -> str | None:
        """The key as text (bytes that are not UTF-8 escaped as \\xNN); None for a null key."""
        return bytes_text(self.key)

    @cached_property
    def value_json(self) -> str | None:
        """The value pretty-printed, when it is JSON; else None."""
        if self.value is None:
            return None
        try:
            return json.dumps(json.loads(self.value), indent=2, ensure_ascii=False)
        # Not UTF-8 (UnicodeDecodeError is a ValueError), not JSON, or nested too deep to parse.
        except (ValueError, RecursionError):
            return None

    @property
    def value_text(self) -> str | None:
        """The value pretty-printed when it is JSON, else as text (see `bytes_text`); None for a
        null value."""
        if self.value is None:
            return None
        return self.value_json if self.value_json is not None else bytes_text(self.value)

    @property
    def value_is_json(self) -> bool:
        return self.value_json is not None

    @property
    def header_texts(self) -> list[tuple[str, str | None]]:
        return [(name, bytes_text(value)) for name, value in self.headers]


# Control characters other than tab and line breaks: valid UTF-8, but invisible (or worse) on a
# page, so a binary value shows them as escapes as well.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")


def bytes_text(data: bytes | None) -> str | None:
    """UTF-8 text, with bytes that are not valid UTF-8, and control characters, shown as \\xNN."""
    if data is None:
        return None
    text = data.decode("utf-8", errors="backslashreplace")
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
