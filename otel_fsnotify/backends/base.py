"""What every backend provides: the hooks behind one `--backend` choice.

A backend loads its BPF program(s), applies the in-kernel filters, and hands
finished Events to `emit`. It never drops an event without counting it: every
counter it returns from `counters()` is reported by the agent and exported as
a metric.
"""

from __future__ import annotations

import abc
import logging
from typing import Callable, ClassVar

import msgspec

from ..event import Event


class Filters(msgspec.Struct, frozen=True):
    """In-kernel filters (the seed gadget's flags)."""

    tracer_pids: tuple[int, ...] = ()
    tracee_pids: tuple[int, ...] = ()
    tracer_group: int = 0  # struct fsnotify_group address, 0 = any
    inotify_only: bool = False
    fanotify_only: bool = False


class BackendUnavailable(RuntimeError):
    """This kernel cannot run the backend; the message names the missing feature."""


class Backend(abc.ABC):
    name: ClassVar[str]
    #: what `attribution` this backend can claim for its tracee
    description: ClassVar[str]

    def __init__(self, filters: Filters, emit: Callable[[Event], None],
                 log: logging.Logger | None = None):
        self.filters = filters
        self.emit = emit
        self.log = log or logging.getLogger(f"otel_fsnotify.backend.{self.name}")

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> str | None:
        """Cheap check (no compile): None if this kernel can run it, else the reason."""

    @abc.abstractmethod
    def start(self) -> None:
        """Compile, load and attach. Raise BackendUnavailable with one clear line."""

    @abc.abstractmethod
    def poll(self, timeout_ms: int) -> None:
        """Deliver pending events through `emit`, waiting at most timeout_ms."""

    @abc.abstractmethod
    def counters(self) -> dict[str, int]:
        """Cumulative counts: events emitted, and every way an event was lost or
        left unmatched (e.g. ringbuf_lost, map_full, tracee_unmatched)."""

    def close(self) -> None:
        """Detach and free kernel resources."""
