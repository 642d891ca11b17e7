"""The SDK's own OTLP exporters (opentelemetry-exporter-otlp): they only say
success or failure. Used for metrics (`sdk_exporter`), and for logs only as
the reference the tests and benchmarks compare our encoders and senders with.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

from .. import __version__
from ..otel import mapping
from ..otel.entry import LogEntry
from ..otel.resource import PerContainer
from .outcome import Exporter, Outcome
from .settings import OtlpSettings


class SdkExporter(Exporter):
    """grpc or http/protobuf through opentelemetry-exporter-otlp: success or
    failure only (every failure is taken as retryable). Not used for logs any
    more; the reference for tests and for comparison."""

    def __init__(self, settings: OtlpSettings, resource: dict[str, Any]):
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.protocol = settings.protocol
        self.settings = settings
        from opentelemetry.sdk.resources import Resource

        self._resource = PerContainer(resource, Resource)  # the SDK's, one per container
        self._scope = InstrumentationScope(mapping.SCOPE_NAME, __version__)
        self._include_cmd = settings.include_command_line
        self._exporter = self._make(settings)

    @staticmethod
    def _make(s: OtlpSettings):
        return sdk_exporter(s, "logs")

    def to_sdk(self, e: LogEntry):
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord

        ev = e.event
        num, text = mapping.severity(ev)
        rec = LogRecord(
            timestamp=ev.timestamp, observed_timestamp=e.observed,
            severity_number=SeverityNumber(num), severity_text=text,
            body=mapping.body(ev),
            attributes=mapping.attributes(ev, e.uid, e.command_line, self._include_cmd),
            event_name=mapping.event_name(ev))
        return ReadableLogRecord(log_record=rec, resource=self._resource(mapping.resource_of(ev)),
                                 instrumentation_scope=self._scope)

    def export(self, entries: Sequence[LogEntry]) -> Outcome:
        from opentelemetry.sdk._logs.export import LogRecordExportResult

        batch = [self.to_sdk(e) for e in entries]
        try:
            result = self._exporter.export(batch)
        except Exception as exc:  # the SDK exporters should not raise; never lose a batch if they do
            return Outcome(False, True, None, 0, f"{self.settings.logs_url()}: {type(exc).__name__}: {exc}")
        if result == LogRecordExportResult.SUCCESS:
            return Outcome(True)
        return Outcome(False, True, None, 0,
                       f"{self.settings.logs_url()}: {self.protocol} export failed "
                       f"(collector unreachable or refusing)")

    def shutdown(self) -> None:
        try:
            self._exporter.shutdown()
        except Exception:  # noqa: BLE001 - shutting down anyway
            pass


def sdk_exporter(s: OtlpSettings, signal: str):
    """The SDK's OTLP exporter for `signal` ("logs" or "metrics") over s.protocol
    (grpc or http/protobuf), with the settings' TLS, headers, timeout, gzip."""
    url = s.logs_url() if signal == "logs" else s.metrics_url()
    headers = dict(s.headers) or None
    gzip_on = s.compression == "gzip"
    if s.protocol == "grpc":
        import grpc

        if signal == "logs":
            from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter as cls
        else:
            from opentelemetry.exporter.otlp.proto.grpc.metric_exporter import OTLPMetricExporter as cls
        kw: dict[str, Any] = {}
        if url.startswith("https://"):
            def read(path):
                if not path:
                    return None
                with open(path, "rb") as fh:
                    return fh.read()
            kw["credentials"] = grpc.ssl_channel_credentials(
                read(s.certificate), read(s.client_key), read(s.client_certificate))
        return cls(endpoint=url, insecure=url.startswith("http://"), headers=headers, timeout=s.timeout,
                   compression=grpc.Compression.Gzip if gzip_on else grpc.Compression.NoCompression, **kw)
    from opentelemetry.exporter.otlp.proto.http import Compression

    if signal == "logs":
        from opentelemetry.exporter.otlp.proto.http._log_exporter import OTLPLogExporter as cls
    else:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter as cls
    return cls(endpoint=url, headers=headers, timeout=s.timeout,
               certificate_file=s.certificate or None,
               client_key_file=s.client_key or None,
               client_certificate_file=s.client_certificate or None,
               compression=Compression.Gzip if gzip_on else Compression.NoCompression)


# quiet the SDK exporters' own per-attempt warnings: the shipper logs (rate-limited)
for _name in ("opentelemetry.exporter.otlp.proto.grpc.exporter",
              "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
              "opentelemetry.exporter.otlp.proto.http._log_exporter",
              "opentelemetry.exporter.otlp.common.http"):
    logging.getLogger(_name).setLevel(logging.ERROR)
