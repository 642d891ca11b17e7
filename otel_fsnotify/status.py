"""The one-line live status of a running agent, on a terminal only:

    otel-fsnotify: 1,204 ev/s · emitted 52,113 · delivered 52,000 · spool 113 · lost 0

It is redrawn in place (carriage return, erase line) twice a second on
stderr when both stderr and stdout are a terminal (a person watching);
whatever else goes to that terminal (the table, log lines) clears it
first, and it is drawn again below. With either piped or redirected,
nothing of it is written.
"""

from __future__ import annotations

import logging
import os
import sys
import threading
import time
from typing import IO

REFRESH_S = 0.5
# the counters of events lost on the way, wherever they are kept (kernel
# ring and maps, user-space matching, the spool, the collector's refusals).
# Not map_full: an exact backend's event the pending map could not hold is
# counted again as tracee_unmatched when its listener reads it.
LOSS_COUNTERS = ("ringbuf_lost", "pending_map_full", "ctx_map_full", "tracee_unmatched",
                 "read_truncated", "read_incomplete", "decode_errors", "dropped_spool_full", "rejected",
                 "spool_corrupt_events", "overflows")
CLEAR = "\r\x1b[K"


def emitted(stats: dict) -> int:
    """Events handed to the output: written (table, jsonl) or spooled for OTLP."""
    return stats.get("output_written", stats.get("submitted", 0))


def events_lost(stats: dict) -> int:
    """Events lost on the way, each counted once (LOSS_COUNTERS)."""
    lost = sum(stats.get(k, 0) for k in LOSS_COUNTERS
               if not (k == "ringbuf_lost" and "ringbuf_lost_events" in stats))  # records of many events
    return lost + stats.get("ringbuf_lost_events", 0)


def status_text(stats: dict, rate: float) -> str:
    parts = [f"{rate:,.0f} ev/s", f"emitted {emitted(stats):,}"]
    if "delivered" in stats:
        parts += [f"delivered {stats['delivered']:,}", f"spool {stats.get('spool_pending', 0):,}"]
    parts.append(f"lost {events_lost(stats):,}")
    return "otel-fsnotify: " + " · ".join(parts)


class _ClearingStream:
    """A stream of the status line's terminal (sys.stderr, a log handler's)
    that clears the line before anything else is written."""

    def __init__(self, stream: IO, status: "StatusLine"):
        self._stream = stream
        self._status = status

    def write(self, text: str) -> int:
        with self._status.lock:  # the sender's threads log too
            self._status.clear()
            return self._stream.write(text)

    def flush(self) -> None:
        self._stream.flush()

    def __getattr__(self, name):
        return getattr(self._stream, name)


class StatusLine:
    """Shown on `fh` (stderr) when it and `out` (stdout) are terminals;
    `enabled` says so."""

    def __init__(self, fh: IO, stats, out: IO):
        self.fh = fh
        self.stats = stats  # () -> the agent's counters
        self.enabled = _is_tty(fh) and _is_tty(out) and os.environ.get("TERM") != "dumb"
        self.shown = False
        self.text = ""
        self.lock = threading.RLock()
        self._stderr = None
        self._last = (time.monotonic(), 0)
        self._next = 0.0
        if self.enabled:
            for handler in logging.getLogger().handlers:
                stream = getattr(handler, "stream", None)
                if stream is not None and _same_terminal(stream, fh):
                    handler.setStream(_ClearingStream(stream, self))
            if sys.stderr is fh:  # direct writes (watch mode's `fim ready`, the stats line)
                self._stderr, sys.stderr = fh, _ClearingStream(fh, self)

    def shares(self, stream) -> bool:
        """Whether stream is the status line's terminal (it must clear it first)."""
        return self.enabled and stream is not None and _same_terminal(stream, self.fh)

    def clear(self) -> None:
        """Before anything else is written to the terminal."""
        with self.lock:
            if self.shown:
                self.fh.write(CLEAR)
                self.fh.flush()
                self.shown = False

    def refresh(self, now: float) -> None:
        """New figures twice a second; the line drawn again if it was cleared."""
        if not self.enabled:
            return
        if now >= self._next:
            self._next = now + REFRESH_S
            stats = self.stats()
            count = emitted(stats)
            then, before = self._last
            rate = (count - before) / (now - then) if now > then else 0.0
            self._last = (now, count)
            self.text = status_text(stats, rate)
        elif self.shown:
            return
        try:
            width = os.get_terminal_size(self.fh.fileno()).columns or 120  # 0: a terminal of no size
        except (OSError, ValueError):
            width = 120
        with self.lock:
            self.fh.write(CLEAR + self.text[: max(20, width - 1)])
            self.fh.flush()
            self.shown = True

    def close(self) -> None:
        self.clear()
        if self._stderr is not None:
            sys.stderr, self._stderr = self._stderr, None
        for handler in logging.getLogger().handlers:
            stream = getattr(handler, "stream", None)
            if isinstance(stream, _ClearingStream):
                handler.setStream(stream._stream)


def _is_tty(fh: IO) -> bool:
    try:
        return fh.isatty()
    except (AttributeError, ValueError):
        return False


def _same_terminal(a: IO, b: IO) -> bool:
    try:
        return a.isatty() and os.path.samestat(os.fstat(a.fileno()), os.fstat(b.fileno()))
    except (OSError, ValueError, AttributeError):
        return False
