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

from .event import CaptureError, iter_capture
from .delivery.settings import OtlpSettings
from .delivery.spool import SpoolBusy

PROGRESS_INTERVAL = 1.0
_POS_EVERY = 1000


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


class _PosFile:
    def __init__(self, spool_dir: str, cid: str):
        self.path = os.path.join(spool_dir, f"replay-{cid}.pos")

    def load(self) -> int:
        try:
            with open(self.path) as fh:
                return int(fh.read().strip() or 0)
        except (OSError, ValueError):
            return 0

    def save(self, lineno: int) -> None:
        tmp = self.path + ".tmp"
        with open(tmp, "w") as fh:
            fh.write(str(lineno))
        os.replace(tmp, self.path)

    def remove(self) -> None:
        try:
            os.unlink(self.path)
        except FileNotFoundError:
            pass


def _replay_settings(settings: OtlpSettings) -> OtlpSettings:
    """Replay must not share the running agent's spool: default to a sub-directory."""
    if settings.spool_dir:
        return settings
    import msgspec

    return msgspec.structs.replace(settings, spool_dir=os.path.join(settings.resolved_spool_dir(), "replay"))


def run_replay(path: str, settings: OtlpSettings, log: logging.Logger | None = None,
               progress: bool = True) -> int:
    """Ship the capture at `path`; returns the process exit status."""
    from .delivery.shipper import Shipper
    from .otel.resource import build_resource

    log = log or logging.getLogger("otel_fsnotify")
    # 1. validate the whole capture before sending anything
    total = 0
    try:
        for _lineno, _ev in iter_capture(path):
            total += 1
    except FileNotFoundError:
        _fail(f"{path}: no such file")
        return 2
    except IsADirectoryError:
        _fail(f"{path}: is a directory")
        return 2
    except PermissionError:
        _fail(f"{path}: permission denied")
        return 2
    except CaptureError as exc:
        _fail(str(exc))
        return 2

    settings = _replay_settings(settings)
    try:
        shipper = Shipper(settings, build_resource(backend="replay"), log)
    except SpoolBusy as exc:  # another agent/replay holds the spool: not bad input
        _fail(str(exc))
        return 1
    except OSError as exc:
        _fail(f"spool_dir {settings.resolved_spool_dir()}: {exc.strerror}")
        return 2

    cid = capture_id(path)
    pos = _PosFile(shipper.spool.dir, cid)
    resume_after = pos.load()
    recovered = shipper.counters()["recovered"]
    if resume_after or recovered:
        _say(f"resuming: {recovered} events in the spool from an earlier run, "
             f"continuing after line {resume_after}")

    start = time.monotonic()
    last_progress = start
    read = 0
    deadline_hit = False

    def show(final: bool = False) -> None:
        c = shipper.counters()
        el = max(1e-6, time.monotonic() - start)
        _say(f"read {read}/{total}, delivered {c['delivered']}, "
             f"{c['delivered'] / el:,.0f} events/s, waiting in spool {c['spool_pending']}")

    try:
        for lineno, ev in iter_capture(path):
            if lineno <= resume_after:
                continue
            # replay is not the kernel: when the spool is full, wait for room
            # (up to drain_timeout) instead of dropping.
            if shipper.spool.total_bytes + 64 * 1024 > settings.spool_max_bytes:
                waited = time.monotonic()
                while (shipper.spool.total_bytes + 64 * 1024 > settings.spool_max_bytes
                       and time.monotonic() - waited < settings.drain_timeout):
                    time.sleep(0.05)
                    if progress and time.monotonic() - last_progress >= PROGRESS_INTERVAL:
                        last_progress = time.monotonic()
                        show()
                if time.monotonic() - waited >= settings.drain_timeout:
                    deadline_hit = True
            shipper.submit(ev, uid=f"{cid}-{lineno}")
            read += 1
            if read % _POS_EVERY == 0:
                pos.save(lineno)
            if progress and read % 256 == 0 and time.monotonic() - last_progress >= PROGRESS_INTERVAL:
                last_progress = time.monotonic()
                show()
        pos.save(lineno if read else resume_after)

        # 2. drain: wait for the collector up to drain_timeout (progress meanwhile)
        drain_end = time.monotonic() + settings.drain_timeout
        while not shipper.flush(min(PROGRESS_INTERVAL, max(0.0, drain_end - time.monotonic()))):
            if time.monotonic() >= drain_end:
                break
            if progress:
                last_progress = time.monotonic()
                show()
        drained = shipper.flush(0)
    except KeyboardInterrupt:
        shipper.close(0)
        c = shipper.counters()
        _say(f"interrupted: {c['spool_pending']} events kept in {shipper.spool.dir}; "
             f"run the same replay again to send them")
        return 130

    shipper.close(0 if not drained else 5)
    c = shipper.counters()
    lost = c["dropped_spool_full"] + c["rejected"]
    if progress:
        show(final=True)
    el = time.monotonic() - start
    summary = (f"{path}: delivered {c['delivered']} events "
               f"({read} read from the capture, {recovered} from the spool of an earlier run) "
               f"in {el:.1f}s, lost {lost} (spool full {c['dropped_spool_full']}, "
               f"rejected by collector {c['rejected']}), retried requests {c['retried']}")
    if not drained:
        _say(summary)
        _say(f"collector {settings.logs_url()} did not accept {c['spool_pending']} events within "
             f"{settings.drain_timeout:g}s; they stay in {shipper.spool.dir} "
             f"(run the same replay again to send them)")
        return 1
    pos.remove()
    _say(summary)
    if lost or deadline_hit:
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """Tiny entry point for tests: python -m otel_fsnotify.replay FILE (settings from env)."""
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        _fail("usage: python -m otel_fsnotify.replay FILE")
        return 2
    logging.basicConfig(level=logging.INFO, format="otel-fsnotify: %(levelname)s: %(message)s")
    try:
        settings = OtlpSettings.from_env(os.environ)
    except ValueError as exc:
        _fail(str(exc))
        return 2
    return run_replay(args[0], settings)


if __name__ == "__main__":
    sys.exit(main())
