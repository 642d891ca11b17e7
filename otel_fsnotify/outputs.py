"""Where enriched events go: a table for people, JSON lines for files and
replay, or OTLP to a collector (delivery/)."""

from __future__ import annotations

import logging
import sys
from typing import IO, Protocol

from .event import Event, append_json_line
from .table import Table


class Output(Protocol):
    def write(self, event: Event) -> None: ...
    def flush(self) -> None: ...
    def close(self) -> None: ...
    def counters(self) -> dict[str, int]: ...


def _open(path: str, binary: bool) -> IO:
    if not path or path == "-":
        return sys.stdout.buffer if binary else sys.stdout
    return open(path, "ab" if binary else "a")


class JsonlOutput:
    """One Event per line, exactly the schema `replay` reads back.

    A poll's events are encoded into one buffer and written with one call."""

    FLUSH_BYTES = 1 << 20

    def __init__(self, path: str = ""):
        self._fh = self.stream = _open(path, binary=True)
        self._own = bool(path and path != "-")
        self._buf = bytearray()
        self.written = 0

    @property
    def pending(self) -> bool:
        return bool(self._buf)

    def write(self, event: Event) -> None:
        append_json_line(event, self._buf)
        self.written += 1
        if len(self._buf) >= self.FLUSH_BYTES:
            self.flush()

    def flush(self) -> None:
        if self._buf:
            self._fh.write(self._buf)
            self._buf.clear()
        self._fh.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._fh.close()

    def counters(self) -> dict[str, int]:
        return {"output_written": self.written}


class TableOutput:
    """Rows for a person (table.py): a poll's rows are written at flush,
    so a live status line on the same terminal can be cleared first."""

    def __init__(self, fields: list[str], path: str = ""):
        self._fh = self.stream = _open(path, binary=False)
        self._own = bool(path and path != "-")
        self.table = Table(fields, self._fh)
        self._rows: list[str] = [self.table.header()]
        self.written = 0

    def write(self, event: Event) -> None:
        self._rows.append(self.table.row(event))
        self.written += 1

    @property
    def pending(self) -> bool:
        return bool(self._rows)

    def flush(self) -> None:
        if self._rows:
            self._rows.append("")
            self._fh.write("\n".join(self._rows))
            self._rows.clear()
        self._fh.flush()

    def close(self) -> None:
        self.flush()
        if self._own:
            self._fh.close()

    def counters(self) -> dict[str, int]:
        return {"output_written": self.written}


class OtlpOutput:
    """Events to an OTLP collector through the loss-counting Shipper."""

    def __init__(self, settings, resource, log: logging.Logger):
        from .delivery.shipper import Shipper

        self.shipper = Shipper(settings, resource, log)
        self._batch: list[Event] = []

    def write(self, event: Event) -> None:
        self._batch.append(event)

    def flush(self) -> None:
        """Spool what this poll read, in one write (the agent calls this
        after every poll, before it waits again)."""
        if self._batch:
            batch, self._batch = self._batch, []
            self.shipper.submit_many(batch)

    def close(self) -> None:
        self.flush()
        self.shipper.close(self.shipper.settings.drain_timeout)

    def counters(self) -> dict[str, int]:
        return self.shipper.counters()
