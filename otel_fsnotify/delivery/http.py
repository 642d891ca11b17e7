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

RETRYABLE_HTTP = (429, 502, 503, 504)


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

    def encode(self, entries: Sequence[LogEntry]) -> bytes:
        body = self._encoder.encode(entries)
        return gzip.compress(body, compresslevel=5) if self._gzip else body

    def export(self, entries: Sequence[LogEntry]) -> Outcome:
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
