"""Shipper: events -> spool (write-ahead) -> batches -> collector, losing nothing.

submit() (the kernel reader's thread) stamps each event with its
log.record.uid and observed time and appends it to the on-disk spool: one
os.write, never a network wait. A sender thread reads the spool in order,
exports batches, retries failures with backoff (Retry-After honoured, capped
at max_backoff) for as long as it takes, and acknowledges a batch only once
the collector accepted it. So a collector outage fills the spool, and an
agent killed at any moment finds its unsent events there on the next start.

The only places an event can be lost are counted (and logged, rate-limited):
- dropped_spool_full: the spool reached spool_max_bytes, or the disk refused
  the write (full, quota): the event is not written at all, the capture goes on;
- rejected: the collector refused records for good (HTTP 400 and the other
  4xx that are not about the agent's configuration, a non-retryable gRPC
  status, OTLP partial success, a single record larger than it accepts).
- spool_corrupt_events: events in damaged spool frames (a torn tail cut when
  the spool is opened, damage skipped while reading), and frames that no
  longer decode (e.g. written by another version of the Event schema).

Not losses: an answer that says the agent is misconfigured (401, 403, 404,
405, redirects; gRPC UNAUTHENTICATED, PERMISSION_DENIED, UNIMPLEMENTED)
pauses delivery (`delivery_paused`) and keeps the data until it is fixed; a
request too large (413, gRPC RESOURCE_EXHAUSTED for size, max_request_bytes)
is split in halves (`batches_split`).
"""

from __future__ import annotations

import base64
import collections
import logging
import os
import random
import queue
import threading
import time
from concurrent.futures import Future
from typing import Any

import msgspec

from ..enrich.procs import command_line
from ..event import Event, utf8_event, utf8_text
from ..otel.entry import LogEntry
from .outcome import Exporter
from .settings import OtlpSettings
from .spool import Spool, decode_entry, encode_payload, frame

# base32 (RFC 4648) letters -> Crockford's, the ULID alphabet
_ALPHABET = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"
_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())
FRESH_MAX = 4096  # entries kept for the sender beside their spooled bytes (~2.5 KB each)
PROBE_S = 0.25  # while the collector is unreachable, a connection is tried this often

_LOW40 = (1 << 40) - 1
_PAIRS = [_ALPHABET[i >> 5] + _ALPHABET[i & 31] for i in range(1024)]


class UidGenerator:
    """Monotonic ULIDs (48-bit ms time + 80-bit random, incremented within a ms)."""

    def __init__(self):
        self._lock = threading.Lock()
        self._ms = 0
        self._rand = 0

    def __call__(self) -> str:
        return self.many(1)[0]

    def many(self, n: int) -> list[str]:
        """n ULIDs in increasing order."""
        if n <= 0:
            return []
        with self._lock:
            ms = time.time_ns() // 1_000_000
            if ms > self._ms:
                self._ms = ms
                self._rand = int.from_bytes(os.urandom(10), "big") >> 1  # room to increment
            else:
                self._rand += 1
            first = (self._ms << 80) | (self._rand & ((1 << 80) - 1))
            self._rand += n - 1
        # 26 characters of 5 bits hold the 128: encode 160 bits, keep the last 26
        text = base64.b32encode(first.to_bytes(20, "big"))[6:].translate(_CROCKFORD).decode()
        low = first & _LOW40
        if low + n > _LOW40:  # the increments carry past the last 8 characters
            return [text] + self._slow(first + 1, n - 1)
        head, pairs = text[:18], _PAIRS  # the last 8 characters: 4 pairs of 10 bits
        return [head + pairs[x >> 30] + pairs[(x >> 20) & 1023] + pairs[(x >> 10) & 1023] + pairs[x & 1023]
                for x in range(low, low + n)]

    @staticmethod
    def _slow(first: int, n: int) -> list[str]:
        b32 = base64.b32encode
        return [b32((first + i).to_bytes(20, "big"))[6:].translate(_CROCKFORD).decode()
                for i in range(n)]


class RateLimitedLog:
    """Log a recurring problem at most once per `interval` seconds, with a count."""

    def __init__(self, log: logging.Logger, interval: float = 10.0):
        self.log = log
        self.interval = interval
        self._last: dict[str, float] = {}
        self._suppressed: dict[str, int] = {}

    def warning(self, key: str, msg: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._last.get(key, -1e9) >= self.interval:
            n = self._suppressed.pop(key, 0)
            suffix = f" ({n} similar suppressed)" if n else ""
            self._last[key] = now
            self.log.warning(msg + suffix, *args)
        else:
            self._suppressed[key] = self._suppressed.get(key, 0) + 1


class Shipper:
    """Loss-counting OTLP delivery of Events (see module docstring)."""

    def __init__(self, settings: OtlpSettings, resource: dict[str, Any],
                 log: logging.Logger | None = None, exporter: Exporter | None = None,
                 exporters: list[Exporter] | None = None):
        """exporter / exporters: given by the caller instead of made from the
        settings (one per request in flight)."""
        self.settings = settings
        self.resource = resource
        self.log = log or logging.getLogger("otel_fsnotify.delivery")
        self._rl = RateLimitedLog(self.log)
        self.spool = Spool(settings.resolved_spool_dir(), settings.spool_max_bytes,
                           settings.spool_segment_bytes, settings.spool_fsync)
        # one exporter (connection) per request in flight
        if exporters is None:
            exporters = [exporter] if exporter else [
                make_exporter(settings, resource) for _ in range(settings.max_in_flight)]
        self.exporter = exporters[0]
        self._exporters = list(exporters)
        # with several, one daemon thread each takes batches from _work (never
        # holds up the process's exit: what it has not delivered stays spooled)
        self._work: queue.SimpleQueue = queue.SimpleQueue()
        self._workers = [threading.Thread(target=self._export_loop, args=(exp,), daemon=True,
                                          name=f"otel-fsnotify-export-{i}")
                         for i, exp in enumerate(self._exporters)] if len(self._exporters) > 1 else []
        for worker in self._workers:
            worker.start()
        self._uid = UidGenerator()
        # entries spooled in this run and not read back yet, by their spool
        # payload: the sender takes them from here instead of decoding again
        self._fresh: dict[bytes, LogEntry] = {}
        self._lock = threading.Lock()
        self._c = {
            "submitted": 0,  # events handed to submit() in this run
            "spooled": 0,  # written to the spool in this run
            "delivered": 0,  # acknowledged by the collector
            "retried": 0,  # failed export attempts that will be retried
            "export_requests": 0,
            "dropped_spool_full": 0,
            "rejected": 0,  # refused by the collector for good
            "recovered": self.spool.recovered,  # found unsent in the spool at start
            "spool_corrupt_events": self.spool.corrupt_events,  # lost to damaged spool frames
            "sender_errors": 0,  # unexpected errors in the sender thread (it carries on)
            "delivery_paused": 0,  # attempts the collector refused as misconfigured (data kept)
            "batches_split": 0,  # requests too large for the collector, sent as halves
        }
        if self.spool.recovered:
            self.log.info("spool %s: %d events from an earlier run will be sent first",
                          self.spool.dir, self.spool.recovered)
        self._stop = threading.Event()  # stop once the spool is empty
        self._abort = threading.Event()  # stop now (deadline passed)
        self._idle = threading.Event()  # sender has nothing in flight
        self._thread = threading.Thread(target=self._run, name="otel-fsnotify-shipper", daemon=True)
        self._thread.start()

    # ----------------------------------------------------------- producer side
    def submit(self, event: Event, uid: str | None = None) -> bool:
        """Spool one event for delivery. False if it had to be dropped (counted)."""
        return self.submit_many([event], None if uid is None else [uid]) == 1

    def submit_many(self, events: list[Event], uids: list[str] | None = None,
                    drop: bool = True) -> int:
        """Spool events for delivery in order, with one write; how many were
        accepted. The rest are dropped (counted), or with drop=False left to
        the caller (replay waits for room). `uids`: their log.record.uid,
        one per event (default: new ULIDs)."""
        if not events:
            return 0
        observed = time.time_ns()
        uids = uids or self._uid.many(len(events))
        frames = []
        payloads: list[bytes] = []
        fresh = self._fresh if len(self._fresh) < FRESH_MAX else None
        with_cmd = self.settings.include_command_line
        for i, event in enumerate(events):
            cmd = command_line(event.tracee_pid) if with_cmd and event.tracee_pid else ""
            entry = LogEntry(uids[i], observed, event, cmd)
            try:
                payload = encode_payload(entry)
            except UnicodeEncodeError:  # a file name that is not UTF-8: sent escaped
                entry = LogEntry(uids[i], observed, utf8_event(event), utf8_text(cmd))
                payload = encode_payload(entry)
            frames.append(frame(payload))
            if fresh is not None:
                fresh[payload] = entry
                payloads.append(payload)
        write_errors = self.spool.write_errors
        ok = self.spool.append_many(frames)
        for payload in payloads[ok:]:  # not spooled: the sender will not read them
            self._fresh.pop(payload, None)
        lost = len(frames) - ok if drop else 0
        with self._lock:
            self._c["submitted"] += ok + lost
            self._c["spooled"] += ok
            self._c["dropped_spool_full"] += lost
            dropped = self._c["dropped_spool_full"]
        if not lost:
            return ok
        if self.spool.write_errors != write_errors:
            self._rl.warning("spool_full", "spool %s: the disk refused a write (%s): dropping "
                             "events until the collector drains it; %d dropped so far",
                             self.spool.dir, self.spool.last_write_error, dropped)
        else:
            self._rl.warning("spool_full", "spool %s is full (%d bytes): dropping events; "
                             "%d dropped so far", self.spool.dir, self.settings.spool_max_bytes,
                             dropped)
        return ok

    # ----------------------------------------------------------- sender side
    def _run(self) -> None:
        """The sender loop. It must never die: an unexpected error is logged
        (rate-limited, with its traceback the first time), counted as
        ``sender_errors``, and the batches in flight are read again after a
        back-off."""
        failures = 0
        inflight: collections.deque = collections.deque()
        while not self._abort.is_set():
            try:
                if self._step(inflight) is False:
                    break
                failures = 0
            except Exception as exc:  # noqa: BLE001 - keep delivering whatever happens
                if self._abort.is_set():
                    break  # a request cut short by close(): its batch stays in the spool
                failures += 1
                with self._lock:
                    self._c["sender_errors"] += 1
                    first = self._c["sender_errors"] == 1
                if first:
                    self.log.exception("sender: unexpected error; retrying, events wait in the spool")
                else:
                    self._rl.warning("sender_error", "sender: unexpected error (%s: %s); retrying",
                                     type(exc).__name__, exc)
                self._settle(inflight)
                delay = min(self.settings.max_backoff, 0.25 * (2 ** min(failures, 16)))
                if self._abort.wait(delay):
                    break
        self._settle(inflight)
        self._idle.set()

    def _settle(self, inflight: collections.deque) -> None:
        """Stop short: wait for the requests in flight, acknowledge those
        delivered before the first that was not (in order), and read the
        rest again (next time, or in the next run)."""
        head = True  # the batches delivered before the first that was not keep their ack
        for fut, pos, frames, damaged in inflight:
            try:
                ok = fut.result()
            except Exception:  # noqa: BLE001 - its batch is read again anyway
                ok = False
            if head and ok:
                self.spool.ack(pos, frames)
                if damaged:
                    self._count_damaged(damaged)
            head = head and ok
        inflight.clear()
        self.spool.rewind()

    def _step(self, inflight: collections.deque) -> bool | None:
        """Keep up to max_in_flight batches in delivery, acknowledge the
        oldest once it is done. False: stop the loop (stopped and empty, or
        aborted mid-delivery)."""
        s = self.settings
        if not inflight:
            self._idle.set()
            if not self.spool.wait_for_data(0.2):
                return False if self._stop.is_set() else None
            self._idle.clear()
            self.spool.wait_for_frames(s.batch_size, s.batch_linger if not self._stop.is_set() else 0)
        while len(inflight) < len(self._exporters) and (
                not inflight or self.spool.unread() >= s.batch_size or self._stop.is_set()):
            payloads, pos, damaged = self.spool.read(s.batch_size)
            if not payloads and not damaged:
                break
            entries = self._decode(payloads)
            inflight.append((self._start(entries), pos, len(payloads), damaged))
        if not inflight:
            return None
        fut, pos, frames, damaged = inflight[0]
        if not fut.result():
            self._settle(inflight)  # aborted: leave the batches in the spool for the next run
            return False
        inflight.popleft()
        if s.spool_fsync:
            self.spool.sync()
        self.spool.ack(pos, frames)
        if damaged:
            self._count_damaged(damaged)
        return None

    def _start(self, entries: list[LogEntry]) -> Future:
        """Deliver one batch: on the next free export thread when there are
        several, else here (a finished future)."""
        fut: Future = Future()
        if self._workers:
            self._work.put((fut, entries))
        else:
            fut.set_result(not entries or self._deliver(self.exporter, entries))
        return fut

    def _export_loop(self, exporter: Exporter) -> None:
        """One export thread: batches from _work through its own exporter."""
        while True:
            item = self._work.get()
            if item is None:
                return
            fut, entries = item
            try:
                fut.set_result(not entries or self._deliver(exporter, entries))
            except BaseException as exc:  # noqa: BLE001 - the sender loop counts it
                fut.set_exception(exc)

    def _count_damaged(self, events: int) -> None:
        with self._lock:
            self._c["spool_corrupt_events"] += events
            total = self._c["spool_corrupt_events"]
        self._rl.warning("spool_damaged", "spool %s: %d events lost in damaged frames, skipped; "
                         "%d so far", self.spool.dir, events, total)

    def _decode(self, payloads: list[bytes]) -> list[LogEntry]:
        """Frames -> entries (those spooled in this run as they were handed
        in, the rest decoded). A frame that does not decode (written by another
        version of the Event schema) cannot ever be sent: it is counted as
        spool_corrupt_events, logged, and acknowledged past."""
        entries = []
        bad = 0
        fresh = self._fresh.pop
        for p in payloads:
            entry = fresh(p, None)
            if entry is not None:
                entries.append(entry)
                continue
            try:
                entries.append(decode_entry(p))
            except (msgspec.DecodeError, msgspec.ValidationError) as exc:
                bad += 1
                detail = str(exc)
        if bad:
            with self._lock:
                self._c["spool_corrupt_events"] += bad
                total = self._c["spool_corrupt_events"]
            self._rl.warning("spool_corrupt", "spool %s: %d undecodable events skipped (%s); "
                             "%d so far", self.spool.dir, bad, detail, total)
        return entries

    def _deliver(self, exporter: Exporter, entries: list[LogEntry]) -> bool:
        """Export until accepted or refused for good; a batch too large for
        the collector is split and its halves delivered in turn. False only
        when aborted."""
        attempt = 0
        n = len(entries)
        while True:
            with self._lock:
                self._c["export_requests"] += 1
            out = exporter.export(entries)
            if out.ok:
                self._accepted(n, out)
                return True
            if out.too_large:
                return self._split(exporter, entries, out.detail)
            if out.pause:
                if self._paused(n, out.detail):
                    return False
                continue
            if not out.retryable:
                with self._lock:
                    self._c["rejected"] += n
                self._rl.warning("rejected", "collector refused a batch of %d records for good: %s",
                                 n, out.detail)
                return True
            with self._lock:
                self._c["retried"] += 1
            if self._back_off(exporter, attempt, out, n):
                return False
            attempt += 1

    def _accepted(self, n: int, out) -> None:
        rejected = max(0, min(n, out.rejected))  # a collector's count, clamped to the batch
        with self._lock:
            self._c["delivered"] += n - rejected
            self._c["rejected"] += rejected
        if rejected:
            self._rl.warning("rejected", "collector rejected %d of %d records", rejected, n)

    def _split(self, exporter: Exporter, entries: list[LogEntry], detail: str) -> bool:
        if len(entries) == 1:
            with self._lock:
                self._c["rejected"] += 1
            self._rl.warning("too_large", "a record too large for the collector was refused: %s", detail)
            return True
        with self._lock:
            self._c["batches_split"] += 1
        half = len(entries) // 2
        return self._deliver(exporter, entries[:half]) and self._deliver(exporter, entries[half:])

    def _paused(self, n: int, detail: str) -> bool:
        """The collector refuses this agent as configured: keep everything,
        say what to fix (rate-limited), ask again every max_backoff.
        True when aborted meanwhile."""
        with self._lock:
            self._c["delivery_paused"] += 1
        self._rl.warning("paused", "delivery paused, %d+ events kept in the spool: %s",
                         max(n, self.spool.pending), detail)
        return self._abort.wait(max(self.settings.max_backoff, 0.1))

    def _back_off(self, exporter: Exporter, attempt: int, out, n: int) -> bool:
        """Wait before retrying: the collector's delay, else exponential with
        jitter (within max_backoff). While the collector cannot be reached at
        all, probe it every PROBE_S and retry as soon as it answers. True
        when aborted meanwhile."""
        cap = self.settings.max_backoff
        if out.retry_after is not None:
            delay = min(cap, out.retry_after)
        else:
            delay = min(cap, 0.25 * (2 ** min(attempt, 16)) * random.uniform(0.8, 1.2))
        self._rl.warning("retry", "export of %d records failed (%s); retrying in %.1fs, "
                         "events wait in the spool", n, out.detail, delay)
        if out.retry_after is not None or not out.unreachable:
            return self._abort.wait(delay)
        deadline = time.monotonic() + delay
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            if self._abort.wait(min(PROBE_S, left)):
                return True
            if exporter.reachable(timeout=min(PROBE_S, 0.5)):
                return False  # it is back: retry now

    # ----------------------------------------------------------- control
    def flush(self, timeout_s: float) -> bool:
        """Wait until everything spooled so far is delivered (True) or timeout."""
        return self.spool.wait_empty(timeout_s)

    def close(self, timeout_s: float | None = None) -> bool:
        """Deliver what is spooled (up to timeout_s, default drain_timeout), then stop.
        Undelivered events stay in the spool for the next run. True if all delivered."""
        if timeout_s is None:
            timeout_s = self.settings.drain_timeout
        done = False
        try:
            done = self.flush(timeout_s)
        finally:  # cut short too (a second SIGTERM): the requests in flight stop at once
            self._stop.set()
            self._abort.set()
            self.spool.wake()
            for exporter in self._exporters:
                exporter.shutdown()  # interrupts an SDK exporter's own retry sleep
            self._thread.join(timeout=self.settings.timeout + 5)
            for _worker in self._workers:
                self._work.put(None)
            self.spool.close()
        if not done:
            self.log.warning("collector %s: %d events not delivered; they stay in %s for the next run",
                             self.settings.logs_url(), self.spool.pending, self.spool.dir)
        return done

    def counters(self) -> dict[str, int]:
        with self._lock:
            c = dict(self._c)
        c["spool_pending"] = self.spool.pending
        c["spool_bytes"] = self.spool.total_bytes
        return c


def make_exporter(settings: OtlpSettings, resource: dict[str, Any]) -> Exporter:
    """The exporter of the configured protocol (imported only when chosen)."""
    if settings.protocol == "grpc":
        from .grpc import GrpcExporter

        return GrpcExporter(settings, resource)
    from .http import HttpJsonExporter, HttpProtobufExporter

    if settings.protocol == "http/json":
        return HttpJsonExporter(settings, resource)
    return HttpProtobufExporter(settings, resource)
