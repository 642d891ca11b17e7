"""OTLP over HTTP (http/json and http/protobuf): one keep-alive client
(http.client: TLS with CA and client certificate, headers, gzip, timeout).

2xx: accepted (partialSuccess.rejectedLogRecords counted); 429/502/503/504:
retry, Retry-After honoured; any other status: permanent refusal. Bodies come
from otel/otlp_json (msgspec) or otel/otlp_proto (hand-written protobuf).
"""

from __future__ import annotations

import gzip
import http.client
import ssl
import urllib.parse
from typing import Any, Sequence

import msgspec

from .. import __version__
from ..otel.entry import LogEntry
from ..otel.otlp_json import JsonEncoder
from ..otel.otlp_proto import ProtoEncoder
from .outcome import Exporter, Outcome, parse_retry_after
from .settings import OtlpSettings

RETRYABLE_HTTP = (408, 429, 502, 503, 504)
# statuses that say the agent is pointed or configured wrongly, not that the
# data is bad: delivery pauses and keeps everything until it is fixed
MISCONFIGURED_HTTP = {
    401: "the collector wants credentials: set headers (--header, OTEL_EXPORTER_OTLP_HEADERS)",
    403: "the collector refuses these credentials: check headers (--header, OTEL_EXPORTER_OTLP_HEADERS)",
    404: "nothing at this URL: check the endpoint's host, port and path (OTLP/HTTP logs: /v1/logs)",
    405: "this URL does not take POST: check the endpoint's path and port (a gRPC port given for HTTP?)",
    407: "a proxy wants credentials",
    415: "the collector does not take this encoding: check protocol (http/protobuf, http/json)",
}


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
        self._ssl = tls_context(settings) if self._https else None
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
        self.address = (self._host, self._port)
        self.max_request_bytes = settings.max_request_bytes

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

    def encode(self, entries: Sequence[LogEntry]) -> bytes:
        body = self._encoder.encode(entries)
        return gzip.compress(body, compresslevel=5) if self._gzip else body

    def send(self, body: bytes) -> Outcome:
        for attempt in (0, 1):  # a kept-alive connection the server closed: retry once at once
            try:
                conn = self._connection()
                conn.request("POST", self._path, body=body, headers=self._headers)
                resp = conn.getresponse()
                data = resp.read()
                status = resp.status
                retry_after = resp.getheader("Retry-After")
                location = resp.getheader("Location")
                if resp.getheader("Connection", "").lower() == "close":
                    self._drop_connection()
                break
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError) as exc:
                self._drop_connection()
                if attempt:
                    return Outcome(False, True, None, 0, f"{self.url}: {exc}")
            except ssl.SSLError as exc:
                self._drop_connection()
                return Outcome(False, pause=True, detail=f"{self.url}: TLS: {exc.reason or exc} "
                               "(check certificate, client_certificate, client_key)")
            except (OSError, http.client.HTTPException) as exc:
                self._drop_connection()
                return Outcome(False, True, None, 0, f"{self.url}: {exc}",
                               unreachable=isinstance(exc, OSError))
        return self._outcome(status, data, retry_after, location)

    def _outcome(self, status: int, data: bytes, retry_after: str | None,
                 location: str | None) -> Outcome:
        if 200 <= status < 300:
            rejected = self._rejected(data) if data else 0
            return Outcome(True, rejected=rejected,
                           detail="partial success" if rejected else "")
        text = data[:200].decode("utf-8", "replace").strip().replace("\n", " ")
        detail = f"{self.url}: HTTP {status} {text}".rstrip()
        if status in RETRYABLE_HTTP:
            return Outcome(False, True, parse_retry_after(retry_after), 0, detail)
        if status == 413:
            return Outcome(False, too_large=True, detail=detail)
        if 300 <= status < 400:
            return Outcome(False, pause=True, detail=f"{detail}: the collector redirects to "
                           f"{location or '(no Location)'}: set the endpoint to it")
        if status in MISCONFIGURED_HTTP:
            return Outcome(False, pause=True, detail=f"{detail}: {MISCONFIGURED_HTTP[status]}")
        return Outcome(False, False, None, 0, detail)  # permanent: the data was refused

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


class TlsSettingsError(ValueError):
    """A certificate or key that cannot be used (bad input, exit 2)."""


def tls_context(s: OtlpSettings) -> ssl.SSLContext:
    """The TLS context of the settings; TlsSettingsError naming the file."""
    try:
        ctx = ssl.create_default_context(cafile=s.certificate or None)
    except (ssl.SSLError, OSError) as exc:
        raise TlsSettingsError(f"otlp.certificate {s.certificate}: not usable as CA "
                               f"certificates ({getattr(exc, 'reason', None) or exc})") from None
    if s.client_certificate:
        try:
            ctx.load_cert_chain(s.client_certificate, s.client_key or None)
        except (ssl.SSLError, OSError) as exc:
            raise TlsSettingsError(
                f"otlp.client_certificate {s.client_certificate} / client_key {s.client_key}: "
                f"not a usable certificate and key pair "
                f"({getattr(exc, 'reason', None) or exc})") from None
    return ctx
