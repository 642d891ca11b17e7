"""OTLP/JSON (ExportLogsServiceRequest) as msgspec Structs: the fast encoder.

Field names follow the OTLP JSON mapping (lowerCamelCase, 64-bit integers as
decimal strings, enum as number). Attribute values come from
mapping.attributes(), the same set the protobuf path sends.
"""

from __future__ import annotations

from typing import Any, Iterable

import msgspec

from .. import __version__
from . import mapping
from .entry import LogEntry
from .mapping import SCOPE_NAME
from .resource import PerContainer


class StrV(msgspec.Struct):
    stringValue: str


class IntV(msgspec.Struct):
    intValue: str


class BoolV(msgspec.Struct):
    boolValue: bool


class DoubleV(msgspec.Struct):
    doubleValue: float


class ArrayValue(msgspec.Struct):
    values: list[Any]


class ArrV(msgspec.Struct):
    arrayValue: ArrayValue


class KeyValue(msgspec.Struct):
    key: str
    value: Any


class Scope(msgspec.Struct):
    name: str
    version: str


class Resource(msgspec.Struct):
    attributes: list[KeyValue]


class LogRecord(msgspec.Struct):
    timeUnixNano: str
    observedTimeUnixNano: str
    severityNumber: int
    severityText: str
    eventName: str
    body: StrV
    attributes: list[KeyValue]


class ScopeLogs(msgspec.Struct):
    scope: Scope
    logRecords: list[LogRecord]


class ResourceLogs(msgspec.Struct):
    resource: Resource
    scopeLogs: list[ScopeLogs]


class ExportLogsServiceRequest(msgspec.Struct):
    resourceLogs: list[ResourceLogs]


def any_value(v: Any) -> Any:
    if isinstance(v, str):
        return StrV(v)
    if isinstance(v, bool):
        return BoolV(v)
    if isinstance(v, int):
        return IntV(str(v))
    if isinstance(v, float):
        return DoubleV(v)
    if isinstance(v, (list, tuple)):
        return ArrV(ArrayValue([any_value(x) for x in v]))
    return StrV(str(v))


def key_values(attrs: dict[str, Any]) -> list[KeyValue]:
    return [KeyValue(k, any_value(v)) for k, v in attrs.items()]


class JsonEncoder:
    """Encode batches of LogEntry as one OTLP/JSON request body."""

    def __init__(self, resource: dict[str, Any], include_command_line: bool = False):
        self._resource = PerContainer(resource, lambda attrs: Resource(key_values(attrs)))
        self._scope = Scope(SCOPE_NAME, __version__)
        self._include_cmd = include_command_line
        self._enc = msgspec.json.Encoder()

    def record(self, e: LogEntry) -> LogRecord:
        ev = e.event
        num, text = mapping.severity(ev)
        return LogRecord(
            timeUnixNano=str(ev.timestamp),
            observedTimeUnixNano=str(e.observed),
            severityNumber=num,
            severityText=text,
            eventName=mapping.event_name(ev),
            body=StrV(mapping.body(ev)),
            attributes=key_values(mapping.attributes(
                ev, e.uid, e.command_line, self._include_cmd)),
        )

    def encode(self, entries: Iterable[LogEntry]) -> bytes:
        """One ResourceLogs per container (mapping.resource_of), in order of
        first appearance."""
        groups: dict[tuple, list[LogRecord]] = {}
        for e in entries:
            groups.setdefault(mapping.resource_of(e.event), []).append(self.record(e))
        req = ExportLogsServiceRequest([
            ResourceLogs(self._resource(extra), [ScopeLogs(self._scope, records)])
            for extra, records in groups.items()])
        return self._enc.encode(req)
