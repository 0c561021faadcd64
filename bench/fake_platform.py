"""The fake platform of the consume and end-to-end measurements: the project's
FakeExternalPlatformClient, also noting the wall-clock time each order arrived."""
from __future__ import annotations

import time
from typing import Any

from exports.clients import FakeExternalPlatformClient


class TimingPlatformClient(FakeExternalPlatformClient):
    def __init__(self) -> None:
        super().__init__()
        # (time.time(), order id): wall clock, comparable with other processes' commit times.
        self.receipts: list[tuple[float, int]] = []

    def send(self, *, order: dict[str, Any], idempotency_key: str) -> None:
        super().send(order=order, idempotency_key=idempotency_key)
        self.receipts.append((time.time(), order["id"]))
