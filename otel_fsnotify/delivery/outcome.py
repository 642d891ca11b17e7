"""What one delivery attempt tells the shipper, whatever the protocol: accepted
(maybe partly), retry (maybe after a delay the collector asked for), too
large (split the batch), the collector misconfigured for us (pause, keep the
data), or refused for good. Every exporter speaks through `Exporter.export`."""

from __future__ import annotations

import email.utils
import socket
import time
from typing import Sequence

import msgspec

from ..otel.entry import LogEntry


class Outcome(msgspec.Struct):
    ok: bool
    retryable: bool = False
    retry_after: float | None = None  # seconds, from the collector
    rejected: int = 0  # records the collector refused for good
    detail: str = ""
    # the collector refuses requests from this agent as configured (credentials,
    # path, port, protocol): deliver nothing, keep everything, say what to fix
    pause: bool = False
    too_large: bool = False  # the request is too big for the collector: split it
    unreachable: bool = False  # no connection at all (refused, no route)


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
    """encode() a batch into one request, send() it. A request larger than
    max_request_bytes is not sent: it comes back as too large, to be split."""

    protocol = ""
    max_request_bytes = 4 << 20
    address: tuple[str, int] | None = None  # the collector's, to probe while it is away

    def encode(self, entries: Sequence[LogEntry]) -> bytes:
        raise NotImplementedError

    def send(self, body: bytes) -> Outcome:
        raise NotImplementedError

    def export(self, entries: Sequence[LogEntry]) -> Outcome:
        body = self.encode(entries)
        if len(body) > self.max_request_bytes:
            return Outcome(False, too_large=True,
                           detail=f"request of {len(body)} bytes > max_request_bytes "
                                  f"{self.max_request_bytes}")
        return self.send(body)

    def reachable(self, timeout: float = 0.5) -> bool:
        """Whether a connection to the collector opens now (a cheap probe)."""
        if self.address is None:
            return True
        try:
            socket.create_connection(self.address, timeout=timeout).close()
            return True
        except OSError:
            return False

    def shutdown(self) -> None:
        pass
