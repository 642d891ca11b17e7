"""`otel-fsnotify replay FILE`: ship a jsonl capture over OTLP, losing nothing.

The capture is validated first (a bad line: one message naming file:line,
exit 2), then every event goes through the Shipper's write-ahead spool.

Resuming: each event's log.record.uid is derived from the capture's identity
(path, size, mtime) and its line number, and the last line handed to the
spool is recorded in ``<spool_dir>/replay-<id>.pos``. A replay that was killed
(even with SIGKILL) and is started again with the same spool directory first
sends what its spool holds, then continues after the recorded line; anything
sent twice carries the same uid, so the collector can drop the duplicate.

Exit status: 0 when every event was delivered; 1 when some were lost
(counted), the collector stayed unreachable past `drain_timeout` (they
stay in the spool for the next run) or the spool is held by another
process; 2 for a bad capture or setting;
130 when interrupted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time

from .event import CaptureError, iter_capture_chunks
from .delivery.settings import OtlpSettings
from .delivery.spool import SpoolBusy, SpoolUnsafe
from .quiet_gc import quiet_gc

PROGRESS_INTERVAL = 1.0


def capture_id(path: str) -> str:
    st = os.stat(path)
    key = f"{os.path.realpath(path)}\0{st.st_size}\0{st.st_mtime_ns}".encode()
    return hashlib.sha256(key).hexdigest()[:16]


def _fail(msg: str) -> None:
    """The one error line for bad input (exit 2)."""
    sys.stderr.write(f"otel-fsnotify: error: {msg}\n")
    sys.stderr.flush()


def _say(msg: str) -> None:
    sys.stderr.write(f"otel-fsnotify: replay: {msg}\n")
    sys.stderr.flush()


def _replay_settings(settings: OtlpSettings) -> OtlpSettings:
    """Replay must not share the running agent's spool: default to a sub-directory."""
    if settings.spool_dir:
        return settings
    import msgspec

    return msgspec.structs.replace(settings, spool_dir=os.path.join(settings.resolved_spool_dir(), "replay"))


def _count_capture(path: str) -> int | str:
    """The number of events in the capture, or the one error line for it."""
    total = 0
    try:
        for chunk in iter_capture_chunks(path):
            total += len(chunk)
    except FileNotFoundError:
        return f"{path}: no such file"
    except IsADirectoryError:
        return f"{path}: is a directory"
    except PermissionError:
        return f"{path}: permission denied"
    except CaptureError as exc:
        return str(exc)
    return total


class _Replay:
    """One replay: the capture's events into the shipper, then the drain."""

    def __init__(self, path: str, total: int, shipper, settings: OtlpSettings, progress: bool):
        self.path = path
        self.total = total
        self.shipper = shipper
        self.settings = settings
        self.progress = progress
        self.cid = capture_id(path)
        # the last line handed to the spool, kept in the spool directory
        self.pos = shipper.spool.side_file(f"replay-{self.cid}.pos")
        self.resume_after = self.pos.value[0]
        self.recovered = shipper.counters()["recovered"]
        self.start = time.monotonic()
        self.last_progress = self.start
        self.read = 0
        self.deadline_hit = False

    def show(self) -> None:
        c = self.shipper.counters()
        el = max(1e-6, time.monotonic() - self.start)
        _say(f"read {self.read}/{self.total}, delivered {c['delivered']}, "
             f"{c['delivered'] / el:,.0f} events/s, waiting in spool {c['spool_pending']}")

    def _maybe_show(self) -> None:
        if self.progress and time.monotonic() - self.last_progress >= PROGRESS_INTERVAL:
            self.last_progress = time.monotonic()
            self.show()

    def _spool_full(self) -> bool:
        """Less room than 64 KiB of frames (a quarter of a smaller spool)."""
        room = min(64 * 1024, self.settings.spool_max_bytes // 4)
        return self.shipper.spool.total_bytes + room > self.settings.spool_max_bytes

    def _wait_for_room(self) -> bool:
        """replay is not the kernel: when the spool is full, wait for room (up
        to drain_timeout) instead of dropping. False when the time ran out."""
        waited = time.monotonic()
        while self._spool_full() and time.monotonic() - waited < self.settings.drain_timeout:
            time.sleep(0.05)
            self._maybe_show()
        if time.monotonic() - waited >= self.settings.drain_timeout:
            self.deadline_hit = True
            return False
        return True

    def _submit(self, events: list, uids: list[str]) -> None:
        """Spool one batch whole, waiting for room as often as needed; what
        cannot be written in the end is dropped (counted)."""
        done = 0
        while done < len(events):
            got = self.shipper.submit_many(events[done:], uids[done:], drop=False)
            done += got
            if done == len(events):
                return
            full = self._spool_full()
            if (not got and not full) or not self._wait_for_room():
                # the disk refused with room left, or no room came in time: counted
                self.shipper.submit_many(events[done:], uids[done:])
                return

    def send(self) -> None:
        """The capture after the recorded line, into the spool one chunk at a
        time (one write each); the position saved after each."""
        last = self.resume_after
        for chunk in iter_capture_chunks(self.path):
            chunk = [(n, ev) for n, ev in chunk if n > self.resume_after]
            if not chunk:
                continue
            self._submit([ev for _n, ev in chunk], [f"{self.cid}-{n}" for n, _ev in chunk])
            self.read += len(chunk)
            last = chunk[-1][0]
            self.pos.save(last)
            self._maybe_show()
        self.pos.save(last)

    def drain(self) -> bool:
        """Wait for the collector up to drain_timeout (progress meanwhile);
        True when the spool emptied."""
        drain_end = time.monotonic() + self.settings.drain_timeout
        while not self.shipper.flush(min(PROGRESS_INTERVAL, max(0.0, drain_end - time.monotonic()))):
            if time.monotonic() >= drain_end:
                break
            if self.progress:
                self.last_progress = time.monotonic()
                self.show()
        return self.shipper.flush(0)

    def finish(self, drained: bool) -> int:
        """Close, say what happened, return the exit status."""
        shipper = self.shipper
        shipper.close(0 if not drained else 5)
        c = shipper.counters()
        lost = c["dropped_spool_full"] + c["rejected"] + c["spool_corrupt_events"]
        if self.progress:
            self.show()
        summary = (f"{self.path}: delivered {c['delivered']} events "
                   f"({self.read} read from the capture, {self.recovered} from the spool of an "
                   f"earlier run) in {time.monotonic() - self.start:.1f}s, lost {lost} (spool full "
                   f"{c['dropped_spool_full']}, rejected by collector {c['rejected']}, damaged in "
                   f"the spool {c['spool_corrupt_events']}), "
                   f"retried requests {c['retried']}")
        _say(summary)
        if not drained:
            self.pos.close()
            _say(f"collector {self.settings.logs_url()} did not accept {c['spool_pending']} events "
                 f"within {self.settings.drain_timeout:g}s; they stay in {shipper.spool.dir} "
                 f"(run the same replay again to send them)")
            return 1
        self.pos.remove()
        return 1 if lost or self.deadline_hit else 0


def run_replay(path: str, settings: OtlpSettings, log: logging.Logger | None = None,
               progress: bool = True) -> int:
    """Ship the capture at `path`; returns the process exit status."""
    from .delivery.shipper import Shipper
    from .otel.resource import build_resource

    log = log or logging.getLogger("otel_fsnotify")
    total = _count_capture(path)  # the whole capture is validated before anything is sent
    if isinstance(total, str):
        _fail(total)
        return 2
    settings = _replay_settings(settings)
    try:
        shipper = Shipper(settings, build_resource(backend="replay"), log)
    except (SpoolBusy, SpoolUnsafe) as exc:  # the spool is another's: not bad input
        _fail(str(exc))
        return 1
    except OSError as exc:
        _fail(f"spool_dir {settings.resolved_spool_dir()}: {exc.strerror}")
        return 2
    job = _Replay(path, total, shipper, settings, progress)
    quiet_gc()
    if job.resume_after or job.recovered:
        _say(f"resuming: {job.recovered} events in the spool from an earlier run, "
             f"continuing after line {job.resume_after}")
    try:
        job.send()
        drained = job.drain()
    except KeyboardInterrupt:
        shipper.close(0)
        _say(f"interrupted: {shipper.counters()['spool_pending']} events kept in "
             f"{shipper.spool.dir}; run the same replay again to send them")
        return 130
    return job.finish(drained)
