from django.apps import AppConfig


class ObservabilityConfig(AppConfig):
    """The project's own wiring that every process needs once Django is set up: tracing
    (`config.tracing`), before the first request builds the middleware chain."""

    name = "config"
    label = "observability"
    verbose_name = "Observability"

    def ready(self) -> None:
        from config.tracing import tracing_configure

        tracing_configure()
