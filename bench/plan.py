"""How big each measurement is (full and --quick), and what every measurement is handed."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

from bench.harness import BenchDatabase, Harness
from bench.progress import Progress

if TYPE_CHECKING:
    from bench.debezium import ConnectWorker


@dataclass(frozen=True)
class Sizes:
    repeats: int
    ceiling_records: int  # records per ceiling run (produce, then consume the same backlog)
    confirms: int  # service-layer confirms per run and variant
    http_requests: int  # confirm requests per HTTP run and variant
    backlog: int  # events pre-produced for the consume path
    e2e_seconds: float  # how long the paced load lasts
    saturation_orders: int  # confirms of the flat-out run
    e2e_rate: float = 200.0  # the offered load, confirms/s
    consumers: tuple[int, ...] = (1, 2, 3)
    http_concurrency: int = 8  # the load generator's connections
    # The load comes from several processes (one Python process cannot confirm 200/s on its
    # own: the GIL), each with threads that only absorb slow confirms (the load is open loop).
    e2e_processes: int = 2
    e2e_threads: int = 8
    saturation_threads: int = 4  # threads per process confirming flat out
    warmup: int = 20  # confirms before each timed run (connections, the producer's first metadata)
    # The platform group: the stub alone is driven by `platform_threads` threads making
    # `platform_calls` calls each; the export consumer drains `platform_serial_backlog` events
    # one call at a time (about 45/s against 20 ms) and `platform_backlog` with calls in flight.
    # The backlog stays under EXPORT_MAX_UNCOMMITTED (2,000) per partition: past it the loop
    # pauses a partition, and kafka-python 3.0.12 may never fetch a resumed partition again.
    platform_threads: int = 64
    platform_calls: int = 200
    platform_serial_backlog: int = 600
    platform_backlog: int = 5000
    platform_processes: int = 3

    def as_dict(self) -> dict:
        return asdict(self)


FULL = Sizes(
    repeats=3,
    ceiling_records=100_000,
    confirms=2000,
    http_requests=1000,
    backlog=20_000,
    e2e_seconds=15,
    saturation_orders=2000,
)
QUICK = Sizes(
    repeats=1,
    ceiling_records=5000,
    confirms=300,
    http_requests=300,
    backlog=600,
    e2e_seconds=5,
    saturation_orders=600,
    platform_calls=50,
    platform_serial_backlog=150,
    platform_backlog=1500,
)

# Measurement groups, in the order they run. Ceilings are the same for every database.
GROUPS = ("ceilings", "publish", "http", "consume", "platform", "e2e")
CEILING_PARTS = ("kafka-python", "confluent", "java")


@dataclass
class Context:
    harness: Harness
    sizes: Sizes
    progress: Progress
    notes: list[str] = field(default_factory=list)
    # A failure that cost some figures but not the measurement's others (Debezium's beside the
    # relay's): reported as an error of the run.
    errors: list[str] = field(default_factory=list)
    # Whether the e2e group measures Debezium beside the relay on PostgreSQL, and its Connect
    # worker (bench.debezium.ConnectWorker), started by the first Debezium run, stopped at the end.
    debezium: bool = False
    connect: ConnectWorker | None = None

    def note(self, text: str) -> None:
        self.notes.append(text)
        self.progress.note(f"bench: {text}")

    def error(self, text: str) -> None:
        self.errors.append(text)
        self.progress.note(f"bench: {text.splitlines()[0]}")


@dataclass
class DatabaseRun:
    """A bench database and the environment its Django processes get."""

    db: BenchDatabase
    context: Context

    @property
    def vendor(self) -> str:
        return self.db.vendor

    def env(self, **overrides) -> dict[str, str]:
        return self.context.harness.env(DATABASE_URL=self.db.url, **overrides)
