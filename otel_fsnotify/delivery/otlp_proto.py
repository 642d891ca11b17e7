"""OTLP/protobuf ExportLogsServiceRequest built straight from spool entries.

The same record as the SDK's encoder (opentelemetry-exporter-otlp-proto-common
`encode_logs`) would produce from a ReadableLogRecord with otel_map's fields,
without building SDK LogRecord objects first; tests compare the two. Used by
both the http/protobuf and the grpc exporter.
"""

from __future__ import annotations

from typing import Any, Iterable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import (AnyValue, ArrayValue, InstrumentationScope,
                                                      KeyValue)
from opentelemetry.proto.logs.v1.logs_pb2 import LogRecord, ResourceLogs, ScopeLogs
from opentelemetry.proto.resource.v1.resource_pb2 import Resource

from .. import __version__
from .. import otel_map
from .spool import SpoolEntry


def any_value(v: Any) -> AnyValue:
    if isinstance(v, str):
        return AnyValue(string_value=v)
    if isinstance(v, bool):
        return AnyValue(bool_value=v)
    if isinstance(v, int):
        return AnyValue(int_value=v)
    if isinstance(v, float):
        return AnyValue(double_value=v)
    if isinstance(v, (list, tuple)):
        return AnyValue(array_value=ArrayValue(values=[any_value(x) for x in v]))
    return AnyValue(string_value=str(v))


def key_values(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(key=k, value=any_value(v)) for k, v in attrs.items()]


class ProtoEncoder:
    """Encode batches of SpoolEntry as one ExportLogsServiceRequest."""

    def __init__(self, resource: dict[str, Any], include_command_line: bool = False):
        self._resource = Resource(attributes=key_values(resource))
        self._scope = InstrumentationScope(name=otel_map.SCOPE_NAME, version=__version__)
        self._include_cmd = include_command_line

    def record(self, e: SpoolEntry) -> LogRecord:
        ev = e.event
        num, text = otel_map.severity(ev)
        return LogRecord(
            time_unix_nano=ev.timestamp,
            observed_time_unix_nano=e.observed,
            severity_number=num,
            severity_text=text,
            event_name=otel_map.event_name(ev),
            body=AnyValue(string_value=otel_map.body(ev)),
            attributes=key_values(otel_map.attributes(ev, e.uid, e.command_line, self._include_cmd)),
        )

    def request(self, entries: Iterable[SpoolEntry]) -> ExportLogsServiceRequest:
        return ExportLogsServiceRequest(resource_logs=[ResourceLogs(
            resource=self._resource,
            scope_logs=[ScopeLogs(scope=self._scope, log_records=[self.record(e) for e in entries])])])

    def encode(self, entries: Iterable[SpoolEntry]) -> bytes:
        return self.request(entries).SerializeToString()
