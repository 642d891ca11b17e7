"""OTLP/JSON (ExportLogsServiceRequest): its shape as msgspec Structs, and
the encoder that writes it from pre-encoded parts.

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
from .parts import EncodedParts
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


_enc = msgspec.json.Encoder()
_key_cache: dict[str, bytes] = {}


def attribute_items(attrs: dict[str, Any]) -> bytes:
    """Attributes as the comma-separated KeyValue objects of a JSON array
    (b"" for none). A string, the usual case, is written without a Struct."""
    out = []
    for k, v in attrs.items():
        kb = _key_cache.get(k)
        if kb is None:
            kb = _key_cache[k] = b'{"key":' + _enc.encode(k) + b',"value":'
        if type(v) is str:
            out.append(b'%s{"stringValue":%s}}' % (kb, _enc.encode(v)))
        else:
            out.append(kb + _enc.encode(any_value(v)) + b"}")
    return b",".join(out)


class JsonEncoder:
    """Encode batches of LogEntry as one OTLP/JSON request body, written
    from pre-encoded parts (the same document the Structs above describe)."""

    def __init__(self, resource: dict[str, Any], include_command_line: bool = False):
        self._resource = PerContainer(resource, lambda attrs: _enc.encode(Resource(key_values(attrs))))
        self._scope = _enc.encode(Scope(SCOPE_NAME, __version__))
        self._include_cmd = include_command_line
        self._attributes = EncodedParts(attribute_items)

    def record(self, e: LogEntry) -> bytes:
        """One LogRecord object."""
        ev = e.event
        num, text = mapping.severity(ev)
        attrs = b",".join([p for p in self._attributes(ev, e.uid, e.command_line, self._include_cmd) if p])
        return (b'{"timeUnixNano":"%d","observedTimeUnixNano":"%d","severityNumber":%d,'
                b'"severityText":%s,"eventName":%s,"body":{"stringValue":%s},"attributes":[%s]}'
                % (ev.timestamp, e.observed, num, _enc.encode(text),
                   _enc.encode(mapping.event_name(ev)), _enc.encode(mapping.body(ev)), attrs))

    def encode(self, entries: Iterable[LogEntry]) -> bytes:
        """One ResourceLogs per container (mapping.resource_of), in order of
        first appearance."""
        groups: dict[tuple, list[bytes]] = {}
        for e in entries:
            groups.setdefault(mapping.resource_of(e.event), []).append(self.record(e))
        return b'{"resourceLogs":[%s]}' % b",".join(
            b'{"resource":%s,"scopeLogs":[{"scope":%s,"logRecords":[%s]}]}'
            % (self._resource(extra), self._scope, b",".join(records))
            for extra, records in groups.items())
