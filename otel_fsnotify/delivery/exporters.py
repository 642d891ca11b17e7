"""The three OTLP protocols behind one call: export(entries) -> Outcome.

Every protocol tells the shipper what happened, so a permanent refusal is
counted as ``rejected`` instead of being retried forever:

- http/json and http/protobuf: one HTTP client (http.client: keep-alive, TLS
  with CA and client certificate, headers, gzip, timeout). 2xx: accepted
  (partialSuccess.rejectedLogRecords counted); 429/502/503/504: retry,
  Retry-After honoured; any other status: permanent refusal. Bodies come from
  otlp_json (msgspec) or otlp_proto (the OTLP protobuf messages).
- grpc: LogsService/Export (as the generated LogsServiceStub calls it, fed
  with otlp_proto's serialized request) on our own channel (TLS/mTLS,
  metadata, gzip, per-call deadline), so the status code is seen: CANCELLED,
  DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE, UNAVAILABLE,
  DATA_LOSS retry (a RetryInfo delay in the status details is honoured); any
  other code is a permanent refusal; partial_success counts rejected records.

The SDK's own OTLP exporters (SdkExporter) only say success or failure; they
are kept for metrics (sdk_exporter) and as the reference the tests compare
our encoders with.
"""

from __future__ import annotations

import email.utils
import gzip
import http.client
import logging
import ssl
import time
import urllib.parse
from typing import Any, Sequence

import msgspec

from .. import __version__
from .. import otel_map
from .otlp_json import JsonEncoder
from .otlp_proto import ProtoEncoder
from .settings import OtlpSettings
from .spool import SpoolEntry

RETRYABLE_HTTP = (429, 502, 503, 504)


class Outcome(msgspec.Struct):
    ok: bool
    retryable: bool = False
    retry_after: float | None = None  # seconds, from the collector
    rejected: int = 0  # records the collector refused for good
    detail: str = ""


def parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    value = value.strip()
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class Exporter:
    protocol = ""

    def export(self, entries: Sequence[SpoolEntry]) -> Outcome:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass


# ------------------------------------------------------------------ http/json

class HttpExporter(Exporter):
    """OTLP over HTTP: encode() makes the body, send() posts it."""

    protocol = ""
    content_type = ""

    def __init__(self, settings: OtlpSettings, resource: dict[str, Any]):
        self.settings = settings
        self.url = settings.logs_url()
        u = urllib.parse.urlsplit(self.url)
        self._https = u.scheme == "https"
        self._host = u.hostname or "localhost"
        self._port = u.port or (443 if self._https else 80)
        self._path = (u.path or "/v1/logs") + (f"?{u.query}" if u.query else "")
        self._ssl = self._ssl_context(settings) if self._https else None
        self._encoder = self._make_encoder(resource, settings.include_command_line)
        self._gzip = settings.compression == "gzip"
        self._headers = {
            "Content-Type": self.content_type,
            "User-Agent": f"otel-fsnotify/{__version__}",
            **settings.headers,
        }
        if self._gzip:
            self._headers["Content-Encoding"] = "gzip"
        self._conn: http.client.HTTPConnection | None = None

    @staticmethod
    def _ssl_context(s: OtlpSettings) -> ssl.SSLContext:
        ctx = ssl.create_default_context(cafile=s.certificate or None)
        if s.client_certificate:
            ctx.load_cert_chain(s.client_certificate, s.client_key or None)
        return ctx

    def _connection(self) -> http.client.HTTPConnection:
        if self._conn is None:
            if self._https:
                self._conn = http.client.HTTPSConnection(
                    self._host, self._port, timeout=self.settings.timeout, context=self._ssl)
            else:
                self._conn = http.client.HTTPConnection(self._host, self._port,
                                                        timeout=self.settings.timeout)
        return self._conn

    def _drop_connection(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None

    def encode(self, entries: Sequence[SpoolEntry]) -> bytes:
        body = self._encoder.encode(entries)
        return gzip.compress(body, compresslevel=5) if self._gzip else body

    def export(self, entries: Sequence[SpoolEntry]) -> Outcome:
        body = self.encode(entries)
        return self.send(body)

    def send(self, body: bytes) -> Outcome:
        for attempt in (0, 1):  # a kept-alive connection the server closed: retry once at once
            try:
                conn = self._connection()
                conn.request("POST", self._path, body=body, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                retry_after = resp.getheader("Retry-After")
                if resp.getheader("Connection", "").lower() == "close":
                    self._drop_connection()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                if attempt:
                    return Outcome(False, True, None, 0, f"{self.url}: {exc}")
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                return Outcome(False, True, None, 0, f"{self.url}: {exc}")
        if 200 <= status < 300:
            rejected = self._rejected(data) if data else 0
            return Outcome(True, rejected=rejected,
                           detail="partial success" if rejected else "")
        text = data[:200].decode("utf-8", "replace").strip().replace("\n", " ")
        if status in RETRYABLE_HTTP:
            return Outcome(False, True, parse_retry_after(retry_after), 0,
                           f"{self.url}: HTTP {status} {text}")
        return Outcome(False, False, None, 0, f"{self.url}: HTTP {status} {text}")  # permanent

    def shutdown(self) -> None:
        self._drop_connection()

    def _make_encoder(self, resource: dict[str, Any], include_cmd: bool):
        raise NotImplementedError

    def _rejected(self, data: bytes) -> int:
        """rejected log records from a 2xx response body."""
        raise NotImplementedError


class HttpJsonExporter(HttpExporter):
    protocol = "http/json"
    content_type = "application/json"

    def _make_encoder(self, resource, include_cmd):
        return JsonEncoder(resource, include_cmd)

    def _rejected(self, data: bytes) -> int:
        try:
            return int(((msgspec.json.decode(data) or {}).get("partialSuccess") or {})
                       .get("rejectedLogRecords", 0) or 0)
        except (msgspec.DecodeError, AttributeError, ValueError, TypeError):
            return 0


class HttpProtobufExporter(HttpExporter):
    protocol = "http/protobuf"
    content_type = "application/x-protobuf"

    def _make_encoder(self, resource, include_cmd):
        return ProtoEncoder(resource, include_cmd)

    def _rejected(self, data: bytes) -> int:
        from google.protobuf.message import DecodeError
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        try:
            return ExportLogsServiceResponse.FromString(data).partial_success.rejected_log_records
        except DecodeError:
            return 0


# ------------------------------------------------------------------ grpc

# OTLP/gRPC: these codes are transient; any other is a refusal for good
_GRPC_RETRYABLE = ("CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED",
                   "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS")


def grpc_retry_delay(trailing_metadata) -> float | None:
    """Seconds from a google.rpc.RetryInfo in the grpc-status-details-bin trailer."""
    for key, value in trailing_metadata or ():
        if key != "grpc-status-details-bin":
            continue
        try:
            from google.rpc import error_details_pb2, status_pb2

            status = status_pb2.Status.FromString(value)
            for detail in status.details:
                if detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                    info = error_details_pb2.RetryInfo()
                    detail.Unpack(info)
                    return info.retry_delay.seconds + info.retry_delay.nanos / 1e9
        except Exception:  # noqa: BLE001 - a malformed trailer: no delay hint
            return None
    return None


class GrpcExporter(Exporter):
    protocol = "grpc"

    def __init__(self, settings: OtlpSettings, resource: dict[str, Any]):
        import grpc
        from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceResponse

        self._grpc = grpc
        self.settings = settings
        self.url = settings.logs_url()
        u = urllib.parse.urlsplit(self.url)
        target = u.netloc or u.path
        options = [
            ("grpc.primary_user_agent", f"otel-fsnotify/{__version__}"),
            # a collector that comes back is found again within a few seconds
            ("grpc.initial_reconnect_backoff_ms", 250),
            ("grpc.max_reconnect_backoff_ms", int(1000 * max(0.5, min(settings.max_backoff, 5.0)))),
        ]
        compression = grpc.Compression.Gzip if settings.compression == "gzip" else None
        if u.scheme == "https":
            def read(path):
                if not path:
                    return None
                with open(path, "rb") as fh:
                    return fh.read()
            creds = grpc.ssl_channel_credentials(read(settings.certificate), read(settings.client_key),
                                                 read(settings.client_certificate))
            self._channel = grpc.secure_channel(target, creds, options, compression)
        else:
            self._channel = grpc.insecure_channel(target, options, compression)
        # LogsService/Export as the generated LogsServiceStub defines it, but
        # taking the request already serialized by otlp_proto (no message objects)
        self._export = self._channel.unary_unary(
            "/opentelemetry.proto.collector.logs.v1.LogsService/Export",
            request_serializer=None, response_deserializer=ExportLogsServiceResponse.FromString)
        self._metadata = tuple((k.lower(), v) for k, v in settings.headers.items()) or None
        self._encoder = ProtoEncoder(resource, settings.include_command_line)

    def encode(self, entries: Sequence[SpoolEntry]) -> bytes:
        return self._encoder.encode(entries)

    def export(self, entries: Sequence[SpoolEntry]) -> Outcome:
        return self.send(self.encode(entries))

    def send(self, request: bytes) -> Outcome:
        grpc = self._grpc
        try:
            resp = self._export(request, timeout=self.settings.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            detail = f"{self.url}: gRPC {name}: {details}"
            if name in _GRPC_RETRYABLE:
                trailer = exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None
                return Outcome(False, True, grpc_retry_delay(trailer), 0, detail)
            return Outcome(False, False, None, 0, detail)  # permanent
        rejected = resp.partial_success.rejected_log_records
        return Outcome(True, rejected=rejected, detail="partial success" if rejected else "")

    def shutdown(self) -> None:
        self._channel.close()


# ------------------------------------------------------- SDK (grpc, http/protobuf)

class SdkExporter(Exporter):
    """grpc or http/protobuf through opentelemetry-exporter-otlp: success or
    failure only (every failure is taken as retryable). Not used for logs any
    more; the reference for tests and for comparison."""

    def __init__(self, settings: OtlpSettings, resource: dict[str, Any]):
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.util.instrumentation import InstrumentationScope

        self.protocol = settings.protocol
        self.settings = settings
        self._resource = Resource(resource)
        self._scope = InstrumentationScope(otel_map.SCOPE_NAME, __version__)
        self._include_cmd = settings.include_command_line
        self._exporter = self._make(settings)

    @staticmethod
    def _make(s: OtlpSettings):
        return sdk_exporter(s, "logs")

    def to_sdk(self, e: SpoolEntry):
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.sdk._logs import ReadableLogRecord

        ev = e.event
        num, text = otel_map.severity(ev)
        rec = LogRecord(
            timestamp=ev.timestamp, observed_timestamp=e.observed,
            severity_number=SeverityNumber(num), severity_text=text,
            body=otel_map.body(ev),
            attributes=otel_map.attributes(ev, e.uid, e.command_line, self._include_cmd),
            event_name=otel_map.event_name(ev))
        return ReadableLogRecord(log_record=rec, resource=self._resource,
                                 instrumentation_scope=self._scope)

    def export(self, entries: Sequence[SpoolEntry]) -> Outcome:
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


def make_exporter(settings: OtlpSettings, resource: dict[str, Any]) -> Exporter:
    if settings.protocol == "http/json":
        return HttpJsonExporter(settings, resource)
    if settings.protocol == "http/protobuf":
        return HttpProtobufExporter(settings, resource)
    return GrpcExporter(settings, resource)


# quiet the SDK exporters' own per-attempt warnings: the shipper logs (rate-limited)
for _name in ("opentelemetry.exporter.otlp.proto.grpc.exporter",
              "opentelemetry.exporter.otlp.proto.grpc._log_exporter",
              "opentelemetry.exporter.otlp.proto.http._log_exporter",
              "opentelemetry.exporter.otlp.common.http"):
    logging.getLogger(_name).setLevel(logging.ERROR)
