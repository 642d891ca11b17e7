"""OTLP over gRPC: LogsService/Export (as the generated LogsServiceStub calls
it, fed with otel/otlp_proto's serialized request) on our own channel
(TLS/mTLS, metadata, gzip, per-call deadline), so the status code is seen:
CANCELLED, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, ABORTED, OUT_OF_RANGE,
UNAVAILABLE, DATA_LOSS retry (a RetryInfo delay in the status details is
honoured); any other code is a permanent refusal; partial_success counts
rejected records.
"""

from __future__ import annotations

import urllib.parse
from typing import Any, Sequence

from .. import __version__
from ..otel.entry import LogEntry
from ..otel.otlp_proto import ProtoEncoder
from .http import tls_context
from .outcome import Exporter, Outcome
from .settings import OtlpSettings

# OTLP/gRPC: these codes are transient; any other is a refusal for good...
_GRPC_RETRYABLE = ("CANCELLED", "DEADLINE_EXCEEDED", "RESOURCE_EXHAUSTED", "ABORTED",
                   "OUT_OF_RANGE", "UNAVAILABLE", "DATA_LOSS")
# ...but these say the agent is pointed or configured wrongly: pause, keep the data
_GRPC_MISCONFIGURED = {
    "UNAUTHENTICATED": "the collector wants credentials: set headers (--header, OTEL_EXPORTER_OTLP_HEADERS)",
    "PERMISSION_DENIED": "the collector refuses these credentials: check headers",
    "UNIMPLEMENTED": "no OTLP logs service there: check the endpoint's port and protocol "
                     "(an HTTP port given for grpc?)",
}
# RESOURCE_EXHAUSTED for a message over the receiver's limit (grpc's own wording)
_TOO_LARGE = ("larger than max", "message too large", "exceeds maximum")


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
            # a collector that comes back is connected to again within half a
            # second (the shipper probes it and retries as soon as it answers)
            ("grpc.initial_reconnect_backoff_ms", 100),
            ("grpc.min_reconnect_backoff_ms", 100),
            ("grpc.max_reconnect_backoff_ms", 500),
        ]
        compression = grpc.Compression.Gzip if settings.compression == "gzip" else None
        self.address = (u.hostname or "localhost", u.port or (443 if u.scheme == "https" else 4317))
        self.max_request_bytes = settings.max_request_bytes
        if u.scheme == "https":
            tls_context(settings)  # a bad certificate or key: one line now, not at each send
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

    def encode(self, entries: Sequence[LogEntry]) -> bytes:
        return self._encoder.encode(entries)

    def send(self, request: bytes) -> Outcome:
        grpc = self._grpc
        try:
            resp = self._export(request, timeout=self.settings.timeout, metadata=self._metadata)
        except grpc.RpcError as exc:
            code = exc.code() if hasattr(exc, "code") else grpc.StatusCode.UNKNOWN
            details = exc.details() if hasattr(exc, "details") else str(exc)
            name = code.name if code is not None else "UNKNOWN"
            return _outcome(name, f"{self.url}: gRPC {name}: {details}", details or "",
                            exc.trailing_metadata() if hasattr(exc, "trailing_metadata") else None)
        rejected = resp.partial_success.rejected_log_records
        return Outcome(True, rejected=rejected, detail="partial success" if rejected else "")

    def shutdown(self) -> None:
        self._channel.close()


def _outcome(name: str, detail: str, details: str, trailer) -> Outcome:
    """What a gRPC status code means for the batch."""
    if name in _GRPC_MISCONFIGURED:
        return Outcome(False, pause=True, detail=f"{detail}: {_GRPC_MISCONFIGURED[name]}")
    if name == "RESOURCE_EXHAUSTED" and any(s in details.lower() for s in _TOO_LARGE):
        return Outcome(False, too_large=True, detail=detail)
    if name in _GRPC_RETRYABLE:
        delay = grpc_retry_delay(trailer)
        return Outcome(False, True, delay, 0, detail,
                       unreachable=name == "UNAVAILABLE" and delay is None)
    return Outcome(False, False, None, 0, detail)  # permanent: the data was refused
