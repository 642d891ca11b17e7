"""The agent's own counters as OTLP metrics, next to its logs.

`start_metrics(settings, resource, stats)` exports, every `metrics_interval`
seconds and once at shutdown, what `stats()` returns (the Shipper's counters
plus the backend's loss counters: every place an event can be lost) through
the SDK's MeterProvider to the same collector:

- ``otel_fsnotify.events`` (counter, attribute ``counter``): cumulative counts
  such as delivered, dropped_spool_full, rejected, ringbuf_lost...;
- ``otel_fsnotify.spool.pending`` and ``otel_fsnotify.spool.bytes`` (gauges).

With protocol http/json, metrics go as http/protobuf to /v1/metrics (the SDK
has no JSON metric exporter). Metrics are best effort: if the collector is
away they are not spooled (the next export carries the cumulative values).
"""

from __future__ import annotations

import logging
from typing import Any, Callable

from .sdk import sdk_exporter
from .settings import OtlpSettings

GAUGES = {"spool_pending": "otel_fsnotify.spool.pending", "spool_bytes": "otel_fsnotify.spool.bytes"}


class AgentMetrics:
    def __init__(self, settings: OtlpSettings, resource: dict[str, Any],
                 stats: Callable[[], dict[str, Any]], log: logging.Logger | None = None):
        from opentelemetry.metrics import CallbackOptions, Observation
        from opentelemetry.sdk.metrics import MeterProvider
        from opentelemetry.sdk.metrics.export import PeriodicExportingMetricReader
        from opentelemetry.sdk.resources import Resource

        self.log = log or logging.getLogger("otel_fsnotify.metrics")
        self._stats = stats
        reader = PeriodicExportingMetricReader(
            sdk_exporter(settings, "metrics"),
            export_interval_millis=max(1.0, settings.metrics_interval * 1000.0))
        self.provider = MeterProvider(resource=Resource(resource), metric_readers=[reader])
        meter = self.provider.get_meter("otel_fsnotify")

        def snapshot() -> dict[str, int]:
            try:
                raw = self._stats()
            except Exception as exc:  # noqa: BLE001 - never break the export thread
                self.log.warning("metrics: cannot read counters: %s", exc)
                return {}
            return {k: v for k, v in raw.items() if isinstance(v, int) and not isinstance(v, bool)}

        def counters(_opts: CallbackOptions):
            return [Observation(v, {"counter": k}) for k, v in snapshot().items() if k not in GAUGES]

        def gauge(key: str):
            def cb(_opts: CallbackOptions):
                v = snapshot().get(key)
                return [] if v is None else [Observation(v)]
            return cb

        meter.create_observable_counter(
            "otel_fsnotify.events", [counters], unit="{event}",
            description="events by outcome: delivered, lost (and why), retried...")
        for key, name in GAUGES.items():
            meter.create_observable_gauge(name, [gauge(key)],
                                          unit="By" if key.endswith("bytes") else "{event}")

    def shutdown(self) -> None:
        """Export the final values and stop."""
        try:
            self.provider.shutdown()
        except Exception as exc:  # noqa: BLE001
            self.log.warning("metrics: shutdown: %s", exc)


def start_metrics(settings: OtlpSettings, resource: dict[str, Any],
                  stats: Callable[[], dict[str, Any]],
                  log: logging.Logger | None = None) -> AgentMetrics | None:
    """Start exporting; None when metrics_interval is 0 (disabled)."""
    if settings.metrics_interval <= 0:
        return None
    return AgentMetrics(settings, resource, stats, log)
