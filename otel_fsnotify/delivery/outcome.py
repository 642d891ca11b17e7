"""What one delivery attempt tells the shipper, whatever the protocol: accepted
(maybe partly), retry (maybe after a delay the collector asked for), or
refused for good. Every exporter speaks through `Exporter.export`."""

from __future__ import annotations

import email.utils
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

    def export(self, entries: Sequence[LogEntry]) -> Outcome:
        raise NotImplementedError

    def shutdown(self) -> None:
        pass
