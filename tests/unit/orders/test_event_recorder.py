"""Where the orders' events go: `orders` knows nothing of Kafka, the exports app registers the
outbox as their recorder from its `AppConfig.ready`, and nothing else can take its place."""

import pytest
from django.core.exceptions import ImproperlyConfigured

from kafka_bridge.outbox.recorder import outbox_record
from orders import events


def test_the_orders_events_go_to_the_outbox_as_the_exports_app_registered():
    assert events._recorder is outbox_record
    # Registering the same recorder again (a second `ready`) changes nothing.
    events.event_recorder_register(recorder=outbox_record)
    assert events._recorder is outbox_record


def test_another_recorder_is_refused():
    with pytest.raises(ImproperlyConfigured, match="already go to"):
        events.event_recorder_register(recorder=lambda *, event: None)

    assert events._recorder is outbox_record


def test_without_a_recorder_an_event_is_refused_not_lost(monkeypatch):
    monkeypatch.setattr(events, "_recorder", None)

    with pytest.raises(ImproperlyConfigured, match="no recorder"):
        events.event_record(object())
