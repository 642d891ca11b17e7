"""inotify reads: what a tracer read, matched to the actor through the
agent's own fanotify marks (enrich/mirror.py).

inotify events do not say who caused them. Each event a tracer reads is
matched to the mirror event of the same object, name and event bit:
attribution "inferred". An event whose mirror event is not in yet waits up to
MATCH_WAIT_S. Then, if fanotify merged its mirror event into an identical
one of the same process still queued (a storm on one file), it takes that
one's actor where no other process's event could be it (inotify_merged,
counted in inotify_inferred too); else it goes out "unknown", with the
tracee fields 0 / "" (inotify_unmatched).
"""

from __future__ import annotations

import time
from collections import deque
from typing import Callable

import msgspec

from ... import masks
from ...enrich.identity import Identities
from ...enrich.procs import ProcTable
from ...enrich.watches import Listeners
from ...event import Event
from ...kernel.abi import IN_IGNORED, IN_Q_OVERFLOW, INOTIFY_EVENT
from ...kernel.records import cstr
from .records import Clock

# an inotify event read by a tracer whose mirror event is not in yet waits this long
MATCH_WAIT_S = 0.3


class InotifyReads:
    def __init__(self, emit: Callable[[Event], None], identities: Identities,
                 listeners: Listeners, procs: ProcTable, clock: Clock):
        self.emit = emit
        self.identities = identities
        self.listeners = listeners  # and, through it, the mirror
        self.procs = procs
        self.clock = clock
        # (deadline, tracer template, fields, match key) of events not matched yet
        self._waiting: deque = deque()
        self.counters = {"inotify_inferred": 0, "inotify_unmatched": 0, "inotify_ambiguous": 0,
                         "inotify_merged": 0, "watch_unknown": 0, "tracee_tgid_unknown": 0}

    def read(self, h, data: bytes) -> None:
        """Decode one read: struct inotify_event { int wd; u32 mask, cookie,
        len; char name[]; }, back to back."""
        consumer = (h.proc_pid, h.fd)
        tmpl = self.identities.tracer(h)
        ts = self.clock.wall(h.ts)
        listener = self.listeners.get(*consumer)
        unpack = INOTIFY_EVENT.unpack_from
        end = len(data)
        off = 0
        while off + 16 <= end:
            wd, mask, cookie, nlen = unpack(data, off)
            if off + 16 + nlen > end:
                break  # cut (an incomplete read): its bytes are counted unparsed
            name = cstr(data[off + 16: off + 16 + nlen]) if nlen else ""
            off += 16 + nlen
            fields = dict(timestamp=ts, type="inotify", i_wd=wd, i_mask=mask, i_cookie=cookie,
                          i_mask_names=masks.names(mask, fanotify=False), name=name)
            if mask & IN_Q_OVERFLOW:
                # no tracee: the kernel dropped the events themselves
                self.emit(msgspec.structs.replace(tmpl, **fields))
                continue
            listener, obj = self._locate(listener, consumer, wd, mask, name, fields)
            # the actor acted before the tracer's read: its identity then counts
            key = (obj, name, mask, consumer, h.ts)
            if not self._try_match(tmpl, fields, key):
                self._waiting.append((time.monotonic() + MATCH_WAIT_S, tmpl, fields, key))

    def _locate(self, listener, consumer, wd: int, mask: int, name: str, fields: dict):
        """The watch behind wd: path and inodes into fields; (listener, the
        watched object as the mirror knows it, (sdev, ino), or None)."""
        watch = listener.watches.get(wd) if listener is not None else None
        if watch is None:
            if not mask & IN_IGNORED:
                listener = self.listeners.refresh(*consumer)
            watch = listener.watches.get(wd) if listener is not None else None
        if watch is None:
            self.counters["watch_unknown"] += 1
            return listener, None
        mirror = self.listeners.mirror
        wpath = mirror.path_of(watch, consumer[0]) if mirror else ""
        if wpath and name:
            fields["path"] = wpath + "/" + name if wpath != "/" else "/" + name
        else:
            fields["path"] = wpath
        if name:
            fields["i_ino_dir"] = watch.ino
        else:
            fields["i_ino"] = watch.ino
        if mask & IN_IGNORED and listener is not None:
            # the watch is gone (inotify_rm_watch, IN_ONESHOT, object deleted
            # or unmounted): so is the need for its mirror mark
            self.listeners.watch_gone(listener, wd)
        return listener, (watch.sdev, watch.ino)

    def _try_match(self, tmpl: Event, fields: dict, key, last_chance: bool = False) -> bool:
        """Match to the mirror; on the last chance (the wait is over) also
        to the mirror event this one was merged into (inotify_merged)."""
        obj, name, mask, consumer, read_ns = key
        mirror = self.listeners.mirror
        if obj is None or mirror is None:
            return False
        remembered = mirror.remembered
        (pid, tid, child_ino, seen_ns), certain = remembered.match(obj, name, mask, consumer)
        if not pid and last_chance:
            pid, tid, child_ino, seen_ns = remembered.merged(obj, name, mask, consumer)
            certain = True
            if pid:
                self.counters["inotify_merged"] += 1
        if not pid:
            return False
        if child_ino and name:
            fields["i_ino"] = child_ino
        if not certain:
            # inotify may have merged this event with an identical one of
            # another actor: the mirror's order no longer says whose it is
            self.counters["inotify_ambiguous"] += 1
            self.emit(msgspec.structs.replace(tmpl, **fields))
            return True
        if tid:  # the mirror reports thread ids: find the process
            fields["tracee_tid"] = tid
            pid = self.procs.tgid_of(tid)
            if not pid:
                self.counters["tracee_tgid_unknown"] += 1
                fields["tracee_pid"] = 0
        self.counters["inotify_inferred"] += 1
        # the actor acted before both the tracer's read and the agent's drain
        # of its mirror event: its identity then counts, not a later exec's
        acted_by = min(read_ns, seen_ns) if seen_ns else read_ns
        tracee = self.identities.tracee(pid, acted_by) if pid else {}
        self.emit(self.identities.event(tmpl, tracee, "inferred", fields))
        return True

    @property
    def waiting(self) -> int:
        return len(self._waiting)

    def retry(self, final: bool = False) -> None:
        """Match waiting events again; those past their wait (all, when final)
        go out "unknown", counted as inotify_unmatched."""
        now = time.monotonic()
        still = deque()
        for item in self._waiting:
            deadline, tmpl, fields, key = item
            if self._try_match(tmpl, fields, key, last_chance=final or now >= deadline):
                continue
            if final or now >= deadline:
                self.counters["inotify_unmatched"] += 1
                self.emit(msgspec.structs.replace(tmpl, **fields))  # "unknown", tracee 0 / ""
            else:
                still.append(item)
        self._waiting = still
