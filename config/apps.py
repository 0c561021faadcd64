from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """The project's own wiring that every process needs once Django is set up: tracing
    (`kafka_bridge.tracing`), before the first request builds the middleware chain."""

    name = "config"
    label = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from kafka_bridge.tracing import tracing_configure

        tracing_configure()
