"""The exact program's ring record (struct out_event in
bpf/fsnotify_exact.bpf.c), declared once, and its decoding into an Event.

A record is a fixed header plus only the bytes of name (inotify) or path
components (fanotify) the event has. Both processes come from the kernel
(struct proc_id, read in their own contexts); exe and container id from the
process table the program's fork/exec/exit records keep (as of the event:
an actor that exec'd or exited since is named as it was).
The inotify `path` (watched object's path + name) is resolved from the
tracer's watch in /proc/<pid>/fdinfo (enrich/watches.py).
"""

from __future__ import annotations

import time
from operator import attrgetter

from ... import masks
from ...enrich.cgroups import CgroupPaths
from ...enrich.identity import KernelProcess
from ...enrich.procs import NO_CONTAINER, Container, ProcTable
from ...enrich.watches import WatchPaths
from ...event import Event
from ...kernel.abi import FAN_Q_OVERFLOW, IN_Q_OVERFLOW
from ...kernel.layout import KernelLayout
from ...kernel.records import (
    PATH_WALK, PROC_ID, ROOT_NOT_PASSED, RecordLayout, cstr, nested, walked_path)

# struct out_event up to its tail; the program asserts the size (OUT_HDR_SIZE).
# Fields named like the Event fields they fill.
OUT_EVENT = RecordLayout("out_event", [
    # struct record: what the tracee side knew, and the tracer who read it
    ("ts_boot", "Q"), ("group", "Q"), ("i_ino", "Q"), ("i_ino_dir", "Q"), ("tracee_cgroup", "Q"),
    *nested("tracee", PROC_ID), *nested("tracer", PROC_ID),
    ("kind", "I"), ("prio", "I"), ("i_wd", "I"), ("i_mask", "I"), ("i_cookie", "I"),
    ("fa_type", "I"), ("fa_mask", "I"), ("fa_pid", "I"), ("fa_flags", "I"), ("fa_f_flags", "I"),
    ("name_len", "I"), ("pad", "I"),
    # when and why it was sent
    ("ts_now", "Q"), ("rtype", "I"), ("response", "I"), ("state", "I"),
    *nested("walk", PATH_WALK), ("tail_len", "I"),
])

KIND_INOTIFY, KIND_FANOTIFY = 1, 2  # record.kind (fsnotify_common.h)
REC_EVENT, REC_RESPONSE, REC_OVERFLOW = 1, 2, 3  # out_event.rtype
REC_FORK, REC_EXEC, REC_EXIT = 4, 5, 6  # out_event.rtype: the process table's feed
# fs/notify/fanotify/fanotify.h: fanotify_perm_event.state values (#defines, not in BTF)
FAN_EVENT_ANSWERED = 2
# Slots of the per-CPU `counters` array, in the order of the CNT_* macros.
COUNTERS = ("emitted", "ringbuf_lost", "map_full", "tracee_unmatched", "ctx_map_full",
            "filtered", "flushed_on_close", "inotify_ctx_missing", "filtered_scope_in_kernel")


def boot_to_epoch_offset() -> int:
    """ns to add to CLOCK_BOOTTIME (bpf_ktime_get_boot_ns) to get Unix time."""
    best = None
    for _ in range(3):
        a = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        r = time.time_ns()
        b = time.clock_gettime_ns(time.CLOCK_BOOTTIME)
        if best is None or b - a < best[0]:
            best = (b - a, r - (a + b) // 2)
    return best[1]


class Decoder:
    """Ring records -> Events."""

    def __init__(self, layout: KernelLayout, watch_paths: WatchPaths, procs: ProcTable):
        self.layout = layout
        self.watch_paths = watch_paths
        self.procs = procs
        self.cgroups = CgroupPaths()
        self.offset = boot_to_epoch_offset()
        exe = _ExeAsOf(procs)
        # the tracee's container: from the cgroup it was in when it acted
        self.tracee = KernelProcess("tracee", "tracee_", exe, self.cgroups, "tracee_cgroup")
        self.tracer = KernelProcess("tracer", "tracer_", exe)

    def decode(self, buf: bytes, off: int = 0, size: int | None = None) -> Event | None:
        """One record (OUT_EVENT + tail) at buf[off:off+size]; None for a
        process table record (taken in here)."""
        r = OUT_EVENT.unpack_from(buf, off)
        if size is None:
            size = OUT_EVENT.size + r.tail_len
        tail = buf[off + OUT_EVENT.size: off + min(size, OUT_EVENT.size + r.tail_len)]
        if r.rtype >= REC_FORK:
            self._process(r, tail)
            return None
        fanotify = r.kind == KIND_FANOTIFY
        answered = r.rtype == REC_RESPONSE
        if r.rtype == REC_OVERFLOW:
            what = _FAN_OVERFLOW if fanotify else _IN_OVERFLOW
        elif fanotify:
            what = self._fanotify(r, tail, answered)
        else:
            what = self._inotify(r, tail)
        return Event(
            timestamp=(r.ts_now if answered else r.ts_boot) + self.offset,
            type="fa_resp" if answered else ("fanotify" if fanotify else "inotify"),
            **self.tracer.fields(r), **self.tracee.fields(r, r.ts_boot), prio=r.prio,
            attribution="exact" if r.tracee_pid and r.rtype != REC_OVERFLOW else "unknown",
            **what)

    def _process(self, r, tail: bytes) -> None:
        pid, comm = r.tracee_pid, cstr(r.tracee_comm)
        container = self.cgroups.container(r.tracee_cgroup)
        if r.rtype == REC_FORK:
            self.procs.fork(pid, r.tracee_ppid, comm, r.tracee_uid, r.tracee_gid, r.tracee_mntns_id,
                            r.tracee_ruid, r.tracee_suid, container)
        elif r.rtype == REC_EXEC:
            self.procs.exec(pid, r.tracee_ppid, comm, r.tracee_uid, r.tracee_gid, r.tracee_mntns_id,
                            cstr(tail), r.ts_boot, ruid=r.tracee_ruid, suid=r.tracee_suid,
                            container=container)
        else:
            self.procs.exit(pid)

    def _fanotify(self, r, tail: bytes, answered: bool) -> dict:
        # as the listener resolves it ("..." ahead when the walk was cut),
        # and from the namespace's root when its root is elsewhere (chroot).
        # A verdict is walked where the event is destroyed, in the actor's
        # context: its root is not the listener's, so that path is the
        # namespace's.
        root_depth = ROOT_NOT_PASSED if answered else r.walk_root_depth
        path, ns_path = walked_path(tail, r.walk_depth, r.walk_complete, root_depth)
        what = dict(zip(_FANOTIFY_COPIED, _fanotify_copied(r)),
                    fa_type=self.layout.fa_type_name(r.fa_type),
                    fa_mask_names=masks.names(r.fa_mask, fanotify=True),
                    name=path, path=path if ns_path else "",
                    host_path=ns_path if ns_path != path else "")
        if answered:
            what["fa_response"] = ("interrupted" if r.state != FAN_EVENT_ANSWERED
                                   else masks.fa_response_name(r.response))
        return what

    def _inotify(self, r, tail: bytes) -> dict:
        name = cstr(tail) if tail else ""
        what = dict(zip(_INOTIFY_COPIED, _inotify_copied(r)),
                    i_mask_names=masks.names(r.i_mask, fanotify=False), name=name)
        pid = r.tracer_pid
        watched = self.watch_paths.dir_path(pid, r.i_wd, r.i_ino_dir, r.i_ino) if pid else ""
        if watched:
            what["path"] = f"{watched}/{name}" if name else watched
        return what


class _ExeAsOf:
    """exe and container id of a pid as of a record's time (boot ns), from
    the process table."""

    def __init__(self, procs: ProcTable):
        self.procs = procs

    def get(self, pid: int, at_ns: int = 0) -> tuple[str, Container]:
        proc = self.procs.get(pid, at_ns)
        return (proc.exe, proc.container) if proc else ("", NO_CONTAINER)


# record fields an Event takes as they are (same names)
_INOTIFY_COPIED = ("i_wd", "i_mask", "i_cookie", "i_ino", "i_ino_dir")
_FANOTIFY_COPIED = ("fa_mask", "fa_pid", "fa_flags", "fa_f_flags")
_inotify_copied = attrgetter(*_INOTIFY_COPIED)
_fanotify_copied = attrgetter(*_FANOTIFY_COPIED)
# a group's queue overflowed: the events themselves are gone, no tracee
_FAN_OVERFLOW = dict(fa_mask=FAN_Q_OVERFLOW, fa_mask_names=["FAN_Q_OVERFLOW"],
                     fa_type="FANOTIFY_EVENT_TYPE_OVERFLOW")
_IN_OVERFLOW = dict(i_mask=IN_Q_OVERFLOW, i_mask_names=["IN_Q_OVERFLOW"])
