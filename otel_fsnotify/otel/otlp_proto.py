"""OTLP/protobuf ExportLogsServiceRequest bytes, written straight from spool
entries.

Building the generated message objects costs ~0.1 ms per record (one Python
object per attribute and value); writing the few wire-format fields by hand
is several times faster. The bytes parse to the same message the SDK's
encoder (opentelemetry-exporter-otlp-proto-common `encode_logs`) makes from
a ReadableLogRecord with mapping's fields; tests compare the two. Used by
both the http/protobuf and the grpc exporter.

Wire format used (opentelemetry/proto, logs v1): a field is a tag byte
``(number << 3) | wire_type`` then its value; wire type 0 = varint, 1 = 8
bytes little endian, 2 = varint length + bytes (strings and sub-messages).
Scalars equal to their default are left out (proto3), but a member of the
AnyValue `value` oneof is always written: it has presence.
"""

from __future__ import annotations

import struct
from typing import Any, Iterable

from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import InstrumentationScope

from .. import __version__
from . import mapping
from .entry import LogEntry
from .parts import EncodedParts
from .resource import PerContainer

_U64 = (1 << 64) - 1
_F64 = struct.Struct("<Q").pack
_DOUBLE = struct.Struct("<d").pack


def _varint(n: int) -> bytes:
    if n < 0x80:
        return bytes((n,))
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(tag: bytes, payload: bytes) -> bytes:
    """A length-delimited field (wire type 2)."""
    return tag + _varint(len(payload)) + payload


# AnyValue: 1 string_value, 2 bool_value, 3 int_value (int64), 4 double_value, 5 array_value
# ArrayValue: 1 values; KeyValue: 1 key, 2 value
def any_value(v: Any) -> bytes:
    """Serialized AnyValue."""
    if isinstance(v, str):
        return _ld(b"\x0a", v.encode("utf-8", "surrogateescape"))
    if isinstance(v, bool):
        return b"\x10\x01" if v else b"\x10\x00"
    if isinstance(v, int):
        return b"\x18" + _varint(v & _U64)  # int64: two's complement as unsigned varint
    if isinstance(v, float):
        return b"\x21" + _DOUBLE(v)
    if isinstance(v, (list, tuple)):
        return _ld(b"\x2a", b"".join(_ld(b"\x0a", any_value(x)) for x in v))
    return any_value(str(v))


_key_cache: dict[str, bytes] = {}


def _key(k: str) -> bytes:
    kb = _key_cache.get(k)
    if kb is None:
        kb = _key_cache[k] = _ld(b"\x0a", k.encode())
    return kb


def key_value(k: str, v: Any) -> bytes:
    """Serialized KeyValue (the key part is memoised: attribute keys repeat)."""
    return _key(k) + _ld(b"\x12", any_value(v))


def attribute_fields(attrs: dict[str, Any]) -> bytes:
    """LogRecord.attributes fields (6), one per attribute. A short string,
    the usual case, is written with its one-byte lengths in one step."""
    out = []
    for k, v in attrs.items():
        kb = _key(k)
        if type(v) is str:
            b = v.encode("utf-8", "surrogateescape")
            n = len(b)
            size = len(kb) + n + 4  # KeyValue: key, 0x12 len, AnyValue (0x0a n bytes)
            if size < 0x80:
                out.append(b"\x32%c%s\x12%c\x0a%c%s" % (size, kb, n + 2, n, b))
                continue
        out.append(_ld(b"\x32", kb + _ld(b"\x12", any_value(v))))
    return b"".join(out)


class ProtoEncoder:
    """Encode batches of LogEntry as one serialized ExportLogsServiceRequest."""

    def __init__(self, resource: dict[str, Any], include_command_line: bool = False):
        # Resource: 1 attributes; ResourceLogs: 1 resource, 2 scope_logs; ScopeLogs: 1 scope, 2 log_records
        self._resource = PerContainer(resource, self._resource_bytes)
        scope = InstrumentationScope(name=mapping.SCOPE_NAME, version=__version__).SerializeToString()
        self._scope = _ld(b"\x0a", scope)
        self._include_cmd = include_command_line
        self._attributes = EncodedParts(attribute_fields)
        self._names: dict[str, bytes] = {}  # event type -> field 12
        self._severities: dict[tuple, bytes] = {}

    def record(self, e: LogEntry) -> bytes:
        """Serialized LogRecord: 1 time_unix_nano (fixed64), 2 severity_number,
        3 severity_text, 5 body, 6 attributes, 11 observed_time_unix_nano
        (fixed64), 12 event_name."""
        ev = e.event
        parts = [b"\x09" + _F64(ev.timestamp & _U64)] if ev.timestamp else []
        parts.append(self._severity(ev))
        parts.append(_ld(b"\x2a", any_value(mapping.body(ev))))
        parts += self._attributes(ev, e.uid, e.command_line, self._include_cmd)
        if e.observed:
            parts.append(b"\x59" + _F64(e.observed & _U64))
        name = self._names.get(ev.type)
        if name is None:
            if len(self._names) > 64:  # a capture's made-up types: keep it small
                self._names.clear()
            name = self._names[ev.type] = _ld(b"\x62", mapping.event_name(ev).encode())
        parts.append(name)
        return b"".join(parts)

    def _severity(self, ev) -> bytes:
        """Fields 2 and 3, by what decides them."""
        key = (ev.severity, ev.fa_response)
        got = self._severities.get(key)
        if got is None:
            if len(self._severities) > 64:
                self._severities.clear()
            num, text = mapping.severity(ev)
            got = self._severities[key] = (b"\x10" + _varint(num) if num else b"") + \
                (_ld(b"\x1a", text.encode()) if text else b"")
        return got

    @staticmethod
    def _resource_bytes(attrs: dict[str, Any]) -> bytes:
        return _ld(b"\x0a", b"".join(_ld(b"\x0a", key_value(k, v)) for k, v in attrs.items()))

    def encode(self, entries: Iterable[LogEntry]) -> bytes:
        """One ResourceLogs per container (mapping.resource_of), in order of
        first appearance."""
        groups: dict[tuple, list[bytes]] = {}
        for e in entries:
            groups.setdefault(mapping.resource_of(e.event), []).append(_ld(b"\x12", self.record(e)))
        return b"".join(
            _ld(b"\x0a", self._resource(extra) + _ld(b"\x12", self._scope + b"".join(records)))
            for extra, records in groups.items())

    def request(self, entries: Iterable[LogEntry]) -> ExportLogsServiceRequest:
        """The same request as a message object (for tests and debugging)."""
        return ExportLogsServiceRequest.FromString(self.encode(entries))
