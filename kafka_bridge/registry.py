"""What the apps that use Kafka tell kafka_bridge, from their `AppConfig.ready()`, so that it
knows none of them: the topic each event type goes to, the topics `ensure_topics` manages, the
consumer groups (with their dead-letter topics) the status page puts first, and the panels
apps add to that page.

Names are given as callables, read when used: a setting overridden later (in a test, say) applies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kafka_bridge.cluster.topics import TopicSpec

TopicSpecs = Callable[..., "list[TopicSpec]"]  # (partitions: int | None) -> specs
# (user=the user looking) -> the panel's HTML, below the outbox
StatusPanel = Callable[..., str]


@dataclass(frozen=True)
class WatchedGroup:
    """A consumer group the status page shows first, with its lag per partition, and the size
    of the dead-letter topic its consumers write to."""

    # Names the page's elements for it: "<name>-lag", "<name>-dlt-size".
    name: str
    group: Callable[[], str]
    dead_letter_topic: Callable[[], str] | None = None


_event_topics: dict[str, Callable[[], str]] = {}
_topic_specs: list[TopicSpecs] = []
_watched_groups: list[WatchedGroup] = []
_status_panels: list[StatusPanel] = []


def event_topic_register(*, event_type: str, topic: Callable[[], str]) -> None:
    _event_topics[event_type] = topic


def event_topic(*, event_type: str) -> str:
    """The topic of `event_type`; LookupError when no app registered one."""
    try:
        return _event_topics[event_type]()
    except KeyError:
        raise LookupError(f"no topic registered for event type {event_type!r}") from None


def event_topics() -> list[str]:
    """Every event topic the apps registered, by name."""
    return [topic() for topic in _event_topics.values()]


def topic_specs_register(*, specs: TopicSpecs) -> None:
    if specs not in _topic_specs:
        _topic_specs.append(specs)


def managed_topic_specs(*, partitions: int | None = None) -> list[TopicSpec]:
    """Every topic the apps want `ensure_topics` to create or grow."""
    return [spec for specs in _topic_specs for spec in specs(partitions)]


def registered_topics() -> set[str]:
    """Every topic the apps named: their event types' topics, the topics `ensure_topics` manages
    for them and their watched groups' dead-letter topics."""
    names = set(event_topics())
    names.update(spec.name for spec in managed_topic_specs())
    names.update(watched.dead_letter_topic() for watched in _watched_groups if watched.dead_letter_topic)
    return names


def watched_group_register(*, watched: WatchedGroup) -> None:
    if watched not in _watched_groups:
        _watched_groups.append(watched)


def watched_groups() -> list[WatchedGroup]:
    return list(_watched_groups)


def status_panel_register(*, panel: StatusPanel) -> None:
    if panel not in _status_panels:
        _status_panels.append(panel)


def status_panels() -> list[StatusPanel]:
    return list(_status_panels)
