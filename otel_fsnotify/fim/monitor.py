"""Watch mode: the paths the user names, as one stream of `fim` events.

    fanotify FID events (fid_group) -> path (dir_paths) -> watched? excluded?
      -> one change per write session (Session) -> hash -> baseline -> Event
    baseline vs the tree at start, after a queue overflow or a ring loss (scan)

The actor of each live change comes from the backend (`actor`, handed to
`process`): the exact backends link it in the kernel, the tracepoint backend
from its process table as of the event. The agent reads the group right
before the backend drains its ring, so the records behind a read are there.

Order of a turn (`process`): live events in queue order, then sessions whose
writer is done, then a slice of any scan in progress; all in one baseline
transaction.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import time
from collections import deque
from typing import Callable, NamedTuple

from .. import masks
from ..event import Event
from ..kernel.abi import (
    FAN_CLOSE_WRITE, FAN_CREATE, FAN_DELETE, FAN_DELETE_SELF, FAN_MODIFY,
    FAN_MOVE_SELF, FAN_MOVED_FROM, FAN_MOVED_TO, FAN_ONDIR, FAN_Q_OVERFLOW, FAN_RENAME)
from .baseline import Baseline, FileState, change
from .dir_paths import DirPaths
from .excludes import Excludes
from .fid_group import FidGroup, Handle, RawChange, WatchUnavailable
from .hashing import Hasher
from .scan import Scan

SETTLE_S = 0.2  # after a close-for-write or an attribute change: later events join it
CREATE_WAIT_S = 1.0  # a created file nobody writes (a link, a fifo): reported after this
WRITE_IDLE_S = 5.0  # a file written and never closed (a log): reported after this quiet
MOVE_PAIR_S = 0.2  # before FAN_RENAME: a FAN_MOVED_FROM waits this long for its FAN_MOVED_TO
SCAN_SLICE_S = 0.05  # scan work per turn, so live events keep flowing during a long scan
BASELINE_FILE = "baseline.sqlite"

# actor(pid, kernel mask, wanted) -> (tracee fields incl. attribution, event time ns or 0),
# or None. Called for every event read, in queue order (wanted False: not a
# watched path, but the exact backends must step past its record).
Actor = Callable[[int, int, bool], "tuple[dict, int] | None"]


class Watched(NamedTuple):
    path: str
    tags: tuple[str, ...] = ()
    severity: str = ""


class Session:
    """One change in progress to one path: created or written, until the
    writer is done (close-for-write, then SETTLE_S of quiet)."""

    __slots__ = ("created", "mask", "fields", "ts", "due", "last")

    def __init__(self, fields: dict, ts: int):
        self.created = False
        self.mask = 0
        self.fields = fields  # the actor of its first event
        self.ts = ts
        self.due = 0.0  # monotonic time to report it; 0 while being written
        self.last = 0.0


class FimMonitor:
    def __init__(self, watched: list[Watched], excludes: Excludes, hasher: Hasher,
                 scan_hasher: Hasher, state_dir: str, log: logging.Logger):
        self.watched = sorted(watched, key=lambda w: len(w.path), reverse=True)  # deepest first
        self.excludes = excludes
        self.hasher = hasher
        self.scan_hasher = scan_hasher
        self.state_dir = state_dir
        self.log = log
        self.pid = os.getpid()
        self.group: FidGroup | None = None
        self.baseline: Baseline | None = None
        self.dirs = DirPaths()
        self.fsids: dict[str, bytes] = {}  # watched path -> its filesystem id
        self._sessions: dict[str, Session] = {}
        self._moved_from: tuple | None = None  # before FAN_RENAME: waiting for its FAN_MOVED_TO
        self._scans: deque[tuple[Scan, bool]] = deque()  # (pass, recording the first baseline)
        self._scan_iter = None
        self._scan_started = 0.0
        self._scan_found: dict[str, int] = {}
        self._ready = False
        self._started = time.monotonic()
        self._out: list[Event] = []
        self.counters = dict.fromkeys((
            "fim_events", "fim_queue_overflows", "fim_rescans", "fim_path_unresolved",
            "fim_mark_failed", "fim_outside", "fim_excluded", "fim_own", "fim_unchanged",
            "fim_baseline_recorded", "fim_scan_errors"), 0)

    # -- start -------------------------------------------------------------------
    def start(self) -> None:
        """The baseline, the group and its marks. Marks come before the first
        scan (`begin`), so nothing falls between scan and watch."""
        from .baseline import BaselineError

        try:
            os.makedirs(self.state_dir, mode=0o700, exist_ok=True)
        except OSError as exc:
            raise WatchUnavailable(f"state_dir {self.state_dir}: {exc.strerror}") from None
        try:
            self.baseline = Baseline(os.path.join(self.state_dir, BASELINE_FILE))
        except BaselineError as exc:
            raise WatchUnavailable(str(exc)) from None
        self.group = FidGroup()
        refused = []
        for w in self.watched:
            try:
                fs = self.group.mark(w.path)
            except WatchUnavailable as exc:
                self.counters["fim_mark_failed"] += 1
                refused.append(str(exc))
                continue
            self.fsids[w.path] = fs
            self.dirs.add_filesystem(fs, w.path)
        if not self.fsids:  # nothing to watch: that is the error, in one line
            raise WatchUnavailable("; ".join(refused))
        for why in refused:  # the others are watched: say which are not
            self.log.error("fim: %s", why)

    @property
    def fd(self) -> int:
        return self.group.fd if self.group else -1

    def begin(self) -> None:
        """Queue the start-up scan of every watched path."""
        self._queue_scans()

    def _queue_scans(self) -> None:
        for w in reversed(self.watched):  # shallowest first: a nested root is scanned with its parent
            if w.path not in self.fsids or any(s.root == w.path for s, _ in self._scans):
                continue
            if any(o.path != w.path and _under(w.path, o.path) and o.path in self.fsids
                   for o in self.watched):
                continue  # inside another watched path: covered by its scan
            recording = not self.baseline.recorded(w.path)
            scan = Scan(w.path, self.fsids[w.path], self.baseline, self.scan_hasher, self.excludes, self.dirs)
            self._scans.append((scan, recording))

    def rescan(self, why: str) -> None:
        """Compare every watched tree with the baseline again (after events
        were lost: a queue overflow, a ring buffer loss)."""
        self.counters["fim_rescans"] += 1
        self.log.warning("fim: %s: rescanning the watched paths against the baseline", why)
        self._queue_scans()

    @property
    def scanning(self) -> bool:
        return bool(self._scans)

    @property
    def busy(self) -> bool:
        """Work is waiting that should not wait for the next event."""
        return bool(self._scans or self._sessions or self._moved_from)

    # -- a turn --------------------------------------------------------------------
    def read(self) -> list[RawChange]:
        return self.group.read() if self.group else []

    def process(self, raw: list[RawChange], actor: Actor) -> list[Event]:
        now = time.monotonic()
        read_ts = time.time_ns()
        with self.baseline.batch():
            for rc in raw:
                self._live(rc, actor, read_ts, now)
            self._pair_moves(now, MOVE_PAIR_S)  # its FAN_MOVED_TO may be in the next read
            self._settle(now)
            if self._scans:
                self._scan_slice()
        out, self._out = self._out, []
        return out

    def finish(self) -> list[Event]:
        """At exit: report every change still being written."""
        with self.baseline.batch():
            self._pair_moves(time.monotonic())
            self._settle(float("inf"))
        out, self._out = self._out, []
        return out

    # -- live events -----------------------------------------------------------------
    def _path(self, h: Handle | None, name: str) -> str:
        if h is None:
            return ""
        directory = self.dirs.path(h)
        if not directory:
            return ""
        if name in (".", ""):
            return directory
        return directory + name if directory.endswith("/") else f"{directory}/{name}"

    def _watched(self, path: str, count: bool = False) -> Watched | None:
        """The watched path holding path, None when outside or excluded."""
        if not path:
            return None
        for w in self.watched:
            if _under(path, w.path):
                if self.excludes and self.excludes.excluded(path):
                    self.counters["fim_excluded"] += count
                    return None
                return w
        return None

    def _live(self, rc: RawChange, actor: Actor, read_ts: int, now: float) -> None:
        """One event as read: dropped (overflow, the agent's own, outside the
        watched paths) or handed on with its actor."""
        mask = rc.mask
        if mask & FAN_Q_OVERFLOW:
            actor(0, mask, False)
            self.counters["fim_queue_overflows"] += 1
            self.rescan("the fanotify queue overflowed (fs.fanotify.max_queued_events)")
            return
        if rc.pid == self.pid:  # the agent's own work (its baseline, its spool)
            actor(rc.pid, mask, False)
            self.counters["fim_own"] += 1
            return
        path = self._path(rc.dir, rc.name)
        old = self._path(rc.old_dir, rc.old_name) if rc.old_dir is not None else ""
        if not path or (rc.old_dir is not None and not old):
            self.counters["fim_path_unresolved"] += 1
        w, wo = self._watched(path, count=True), self._watched(old)
        got = actor(rc.pid, mask, bool(w or wo))
        if not (w or wo):
            self.counters["fim_outside"] += 1
            if mask & FAN_RENAME and mask & FAN_ONDIR and old and path:
                self.dirs.moved(old, path)  # a directory outside moved: cached paths follow
            return
        fields, ts = got if got else ({"tracee_pid": rc.pid}, 0)
        self._change(path, w, old, wo, (fields, ts or read_ts, mask), now)

    def _change(self, path: str, w, old: str, wo, who, now: float) -> None:
        """A change under the watched paths, by what the kernel said happened."""
        mask = who[2]
        if mask & FAN_MOVED_TO:  # before FAN_RENAME: the second half of a rename
            if self._moved_from is None:
                self._moved(path, w, "", None, who, now)  # moved in from outside the marks
            else:
                old, wo, _who, _since = self._moved_from
                self._moved_from = None
                self._moved(path, w, old, wo, who, now)
            return
        self._pair_moves(now)
        if mask & FAN_RENAME:
            self._moved(path, w, old, wo, who, now)
        elif mask & FAN_MOVED_FROM:
            self._moved_from = (path, w, who, now)
        elif mask & FAN_DELETE:
            if not mask & (FAN_CREATE | FAN_MODIFY | FAN_CLOSE_WRITE):
                self._deleted(path, w, who, now)
            elif os.path.lexists(path):
                # deleted and made again while queued (fanotify merged them
                # into one event): the old file went, a new one is there
                self._deleted(path, w, who, now)
                self._touched(path, (who[0], who[1], mask & ~FAN_DELETE | FAN_CREATE), now)
            else:  # created (or written) and deleted while queued: both are facts
                self._touched(path, (who[0], who[1], mask & ~FAN_DELETE), now)
                self._deleted(path, w, who, now)
        elif mask & (FAN_DELETE_SELF | FAN_MOVE_SELF):
            if any(path == x.path for x in self.watched):
                self.log.warning("fim: watched path %s was %s", path,
                                 "deleted" if mask & FAN_DELETE_SELF else "moved away")
        else:
            self._touched(path, who, now)

    def _pair_moves(self, now: float, held_s: float = 0.0) -> None:
        """Before FAN_RENAME: a FAN_MOVED_FROM not followed by its
        FAN_MOVED_TO (the kernel queues the two back to back) moved out of
        the watched paths; held_s: unless it came less than that ago, when
        the read may have ended between the two."""
        if self._moved_from is not None and now - self._moved_from[3] >= held_s:
            old, wo, who, _since = self._moved_from
            self._moved_from = None
            self._moved("", None, old, wo, who, now)

    def _touched(self, path: str, who, now: float) -> None:
        fields, ts, mask = who
        s = self._sessions.get(path)
        if s is not None and s.fields.get("tracee_pid") != fields.get("tracee_pid"):
            del self._sessions[path]  # another process's change: each keeps its actor
            self._report(path, s)
            s = None
        if s is None:
            s = self._sessions[path] = Session(fields, ts)
        s.mask |= mask
        s.last = now
        if mask & FAN_CREATE:
            s.created = True
        if mask & FAN_ONDIR:
            if mask & FAN_CREATE:
                fs = self._fs_of(path)
                if fs:
                    self.dirs.learn(fs, path)
            s.due = now  # a directory has no write session
        elif mask & FAN_CLOSE_WRITE:
            s.due = now + SETTLE_S
        elif mask & FAN_MODIFY:
            s.due = 0.0  # being written: wait for the close (or WRITE_IDLE_S)
        elif mask & FAN_CREATE:
            s.due = now + CREATE_WAIT_S
        elif s.due or not s.mask & FAN_MODIFY:  # attributes, not in the middle of a write
            s.due = max(s.due, now + SETTLE_S)

    def _settle(self, now: float) -> None:
        for path, s in list(self._sessions.items()):
            if (s.due and now >= s.due) or (not s.due and now - s.last >= WRITE_IDLE_S):
                del self._sessions[path]
                self._report(path, s)

    def _report(self, path: str, s: Session) -> None:
        w = self._watched(path)
        if w is None:
            return
        before = self.baseline.get(path)
        state = self.hasher.state(path)
        if state is None:
            if not s.created:
                return  # gone: its delete or rename reports it
            state = FileState(0, 0, 0, 0, 0, 0, hash_skipped="vanished")
        action = "created" if s.created and before is None else change(before, state)
        if state.hash_skipped != "vanished":
            self.baseline.put(path, state)
        if not action:
            self.counters["fim_unchanged"] += 1
            return
        self._emit(action, "live", path, w, state, (s.fields, s.ts, s.mask))

    def _deleted(self, path: str, w: Watched, who, now: float) -> None:
        s = self._sessions.pop(path, None)
        if s is not None and s.created:
            self._report(path, s)  # created and gone before it settled: both are facts
        before = self.baseline.get(path)
        self.baseline.delete(path)
        self._emit("deleted", "live", path, w, before, who)

    def _moved(self, new: str, wn: Watched | None, old: str, wo: Watched | None, who, now: float) -> None:
        fields, ts, mask = who
        if old:
            self._sessions.pop(old, None)  # written, then renamed into place: reported below
        if mask & FAN_ONDIR and old and new:
            self.dirs.moved(old, new)
        if wn is None:  # moved out of the watched paths (or excluded): gone from here
            if wo is not None:
                before = self.baseline.get(old)
                self.baseline.delete(old)
                self._emit("deleted", "live", old, wo, before, who)
            return
        before_new = self.baseline.get(new)
        if wo is not None:  # within the watched paths: one renamed, whatever was there
            moved = self.baseline.get(old)  # None: created and renamed before it settled
            self.baseline.rename(old, new)
            state = self._state_after_move(new, moved)
            if state is not None:
                self.baseline.put(new, state)
            self._emit("renamed", "live", new, wn, state or moved, who, old_path=old)
            return
        # moved in from outside the watched paths or from an excluded name: new here
        state = self.hasher.state(new)
        if state is None:
            return
        self.baseline.put(new, state)
        self._emit("modified" if before_new is not None else "created", "live", new, wn, state, who,
                   old_path=old)
        if stat.S_ISDIR(state.mode):
            self._moved_in_tree(new, who)

    def _state_after_move(self, new: str, moved: FileState | None) -> FileState | None:
        """The file at its new name; its recorded hashes reused when it is
        plainly the same file (same inode, size and mtime)."""
        try:
            st = os.lstat(new)
        except OSError:
            return None
        if moved is not None and (moved.ino, moved.size, moved.mtime_ns) == (
                st.st_ino, st.st_size, st.st_mtime_ns):
            return FileState(st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_mtime_ns,
                             st.st_ino, moved.hashes, moved.hash_skipped)
        return self.hasher.state(new)

    def _moved_in_tree(self, top: str, who) -> None:
        """A directory moved in from outside: each entry in it is new here."""
        fs = self._fs_of(top)
        scan = Scan(top, fs, self.baseline, self.hasher, self.excludes, self.dirs)
        for found in scan.run():
            if found is not None and found.path != top:
                self._emit(found.action, "live", found.path, self._watched(found.path),
                           found.state or found.before, who)

    # -- scans -------------------------------------------------------------------------
    def _scan_slice(self) -> None:
        end = time.monotonic() + SCAN_SLICE_S
        while self._scans:
            scan, recording = self._scans[0]
            if self._scan_iter is None:
                self._scan_iter = scan.run()
                self._scan_started = time.monotonic()
                self._hashed_at_start = self.scan_hasher.bytes_hashed
            for found in self._scan_iter:
                if found is not None and not recording:
                    self._scan_found[found.action] = self._scan_found.get(found.action, 0) + 1
                    self._emit(found.action, "scan", found.path, self._watched(found.path) or
                               Watched(scan.root), found.state or found.before, None)
                if time.monotonic() >= end:
                    return
            self._scan_done(scan, recording)

    def _scan_done(self, scan: Scan, recording: bool) -> None:
        self._scans.popleft()
        self._scan_iter = None
        self.counters["fim_scan_errors"] += scan.errors
        took = time.monotonic() - self._scan_started
        mb = (self.scan_hasher.bytes_hashed - self._hashed_at_start) / 1e6
        if recording:
            self.baseline.mark_recorded(scan.root)
            self.counters["fim_baseline_recorded"] += scan.files
            self.log.info("fim: baseline of %s recorded: %d entries, %.1f MB hashed in %.2f s",
                          scan.root, scan.files, mb, took)
        else:
            self.log.info("fim: scan of %s against the baseline: %d entries, %.1f MB hashed in %.2f s",
                          scan.root, scan.files, mb, took)
        if not self._scans and not self._ready:
            self._ready = True
            found = " ".join(f"{k}={self._scan_found.get(k, 0)}"
                             for k in ("created", "modified", "deleted", "attributes"))
            sys.stderr.write(
                f"otel-fsnotify: fim ready: watching {_count(len(self.fsids), 'path')} on "
                f"{_count(len(set(self.fsids.values())), 'filesystem')}, "
                f"{_count(len(self.baseline), 'baseline entry', 'baseline entries')}, "
                f"changes while down: {found}, {time.monotonic() - self._started:.1f} s\n")
            sys.stderr.flush()

    # -- events ------------------------------------------------------------------------
    def _fs_of(self, path: str) -> bytes:
        for w in self.watched:
            if _under(path, w.path) and w.path in self.fsids:
                return self.fsids[w.path]
        return b""

    def _emit(self, action: str, origin: str, path: str, w: Watched | None, state: FileState | None,
              who, old_path: str = "") -> None:
        fields, ts, mask = who if who else ({}, time.time_ns(), 0)
        ev = Event(timestamp=ts, type="fim", action=action, origin=origin, path=path,
                   name=os.path.basename(path), old_path=old_path,
                   tags=list(w.tags) if w else [], severity=w.severity if w else "",
                   fa_mask=mask, fa_mask_names=masks.names(mask, fanotify=True) if mask else [],
                   **_file_fields(state), **fields)
        self.counters["fim_events"] += 1
        self._out.append(ev)

    def close(self) -> None:
        if self.group is not None:
            self.group.close()
            self.group = None
        self.dirs.close()
        if self.baseline is not None:
            self.baseline.close()
            self.baseline = None


def _count(n: int, one: str, many: str = "") -> str:
    return f"{n} {one if n == 1 else many or one + 's'}"


def _under(path: str, root: str) -> bool:
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


def _file_fields(state: FileState | None) -> dict:
    if state is None:
        return {}
    return dict(file_size=state.size, file_mode=state.mode, file_uid=state.uid, file_gid=state.gid,
                file_mtime=state.mtime_ns, file_ino=state.ino, file_hashes=dict(state.hashes),
                hash_skipped=state.hash_skipped)
