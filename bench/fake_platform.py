"""The platform clients of the consume and end-to-end measurements, each noting the wall-clock
time each order arrived: the project's FakeExternalPlatformClient, or any real client (the HTTP
one, against the platform stub) wrapped."""

from __future__ import annotations

import time
from typing import Any

from exports.clients import ExternalPlatformClient, FakeExternalPlatformClient


class TimingPlatformClient(FakeExternalPlatformClient):
    def __init__(self) -> None:
        super().__init__()
        # (time.time(), order id): wall clock, comparable with other processes' commit times.
        self.receipts: list[tuple[float, int]] = []

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        super().send(order=order, idempotency_key=idempotency_key)
        self.receipts.append((time.time(), order["id"]))


class TimingClient(ExternalPlatformClient):
    """`client`, noting when each send returned: for a real platform, the moment its answer
    arrived. A failed send is not a receipt."""

    def __init__(self, client: ExternalPlatformClient) -> None:
        self.client = client
        # Appended from the consumer's worker threads; list.append is atomic under the GIL.
        self.receipts: list[tuple[float, int]] = []

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        self.client.send(order=order, idempotency_key=idempotency_key)
        self.receipts.append((time.time(), order["id"]))
