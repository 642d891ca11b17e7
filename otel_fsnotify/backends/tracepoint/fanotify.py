"""fanotify reads: each event carries the actor's pid (attribution "exact"),
numbered in the reader's pid namespace; its path is the one the kernel walked
from the event's own fd (records.FanPaths), never a readlink after the fact.
Permission events go on to verdicts.py to wait for their answer.
"""

from __future__ import annotations

import time
from typing import Callable

import msgspec

from ... import masks
from ...enrich import procs as proc_readers
from ...enrich.identity import Identities
from ...enrich.procs import ProcTable
from ...enrich.watches import Listeners
from ...event import Event
from ...kernel.abi import (
    FAN_INFO_HANDLE_AT, FAN_INFO_HDR, FAN_METADATA, FAN_NAME_INFO_TYPES, FAN_PERM_EVENTS,
    FAN_Q_OVERFLOW, FAN_REPORT_FID_BITS, FAN_REPORT_NAME, FAN_REPORT_TID, FILE_HANDLE_HDR)
from ...kernel.records import cstr
from .records import NO_PATH, Clock, FanPaths
from .verdicts import Verdicts

NS_MISS_KEEP_S = 1.0  # a pid not found in another pid namespace is looked for again after this
MAX_NS_PIDS = 4096  # remembered (namespace, number) -> pid translations


def fa_type(mask: int, fan_flags: int) -> str:
    """The event's type, as the kernel's enum fanotify_event_type names it."""
    if mask & FAN_Q_OVERFLOW:
        return "FANOTIFY_EVENT_TYPE_OVERFLOW"
    if mask & FAN_PERM_EVENTS:
        return "FANOTIFY_EVENT_TYPE_PATH_PERM"
    if fan_flags & FAN_REPORT_FID_BITS:
        return "FANOTIFY_EVENT_TYPE_FID_NAME" if fan_flags & FAN_REPORT_NAME else "FANOTIFY_EVENT_TYPE_FID"
    return "FANOTIFY_EVENT_TYPE_PATH"


def fid_name(info: bytes) -> str:
    """The name of a FAN_REPORT_DFID_NAME event (relative to its directory)."""
    pos = 0
    hdr = FAN_INFO_HDR
    while pos + hdr.size <= len(info):
        itype, _p, ilen = hdr.unpack_from(info, pos)
        if ilen < hdr.size:
            break
        start = pos + FAN_INFO_HANDLE_AT + FILE_HANDLE_HDR.size
        if itype in FAN_NAME_INFO_TYPES and ilen >= start - pos:
            hbytes = FILE_HANDLE_HDR.unpack_from(info, pos + FAN_INFO_HANDLE_AT)[0]
            return cstr(info[start + hbytes: pos + ilen])
        pos += ilen
    return ""


class FanotifyReads:
    def __init__(self, emit: Callable[[Event], None], identities: Identities,
                 listeners: Listeners, procs: ProcTable, clock: Clock, paths: FanPaths,
                 verdicts: Verdicts, own_pidns: int):
        self.emit = emit
        self.identities = identities
        self.listeners = listeners
        self.procs = procs
        self.clock = clock
        self.paths = paths
        self.verdicts = verdicts
        self.own_pidns = own_pidns  # the agent's: pids in records are numbered in it
        self._ns_pids: dict[tuple[int, int, bool], tuple[int, float]] = {}
        self.counters = {"fanotify_path_unresolved": 0, "tracee_pidns_unresolved": 0,
                         "tracee_tgid_unknown": 0}

    def read(self, h, data: bytes) -> None:
        """Decode one read: struct fanotify_event_metadata + optional info
        records, back to back."""
        pid, fd = h.proc_pid, h.fd
        tmpl = self.identities.tracer(h)
        ts = self.clock.wall(h.ts)
        listener = self.listeners.get(pid, fd) or self.listeners.refresh(pid, fd)
        fan_flags = listener.fan_flags if listener else 0
        f_flags = listener.fan_event_flags if listener else 0
        paths = self.paths.take(h.proc_tid)
        unpack = FAN_METADATA.unpack_from
        off = 0
        while off + FAN_METADATA.size <= len(data):
            event_len, _v, _r, mlen, mask, efd, apid = unpack(data, off)
            if event_len < FAN_METADATA.size or off + event_len > len(data):
                break  # corrupt, or cut (an incomplete read): counted unparsed
            fields = dict(timestamp=ts, type="fanotify", fa_mask=mask,
                          fa_mask_names=masks.names(mask, fanotify=True), fa_pid=apid,
                          fa_flags=fan_flags, fa_f_flags=f_flags, fa_type=fa_type(mask, fan_flags))
            if mask & FAN_Q_OVERFLOW:
                ev = msgspec.structs.replace(tmpl, **fields)
            else:
                if efd >= 0:
                    self._path(paths.get(off, NO_PATH), fields)
                else:
                    # FID modes: a name relative to the directory whose file
                    # handle the event carries, not a path
                    fields["name"] = fid_name(data[off + mlen: off + event_len])
                ev = self._with_tracee(tmpl, fields, h, apid, fan_flags & FAN_REPORT_TID)
            off += event_len
            self.emit(ev)
            if mask & FAN_PERM_EVENTS and efd >= 0:
                self.verdicts.awaiting((pid, efd), ev, h.group)

    def _path(self, walked: tuple[str, str], fields: dict) -> None:
        # only the path the kernel walked from this very fd: a readlink of
        # /proc/<tracer>/fd/<efd> after the fact may name whatever file
        # reuses that fd number by then
        path, ns_path = walked
        if path:
            fields["path"] = fields["name"] = path
            if ns_path != path:  # the listener runs under another root (chroot)
                fields["host_path"] = ns_path
        else:  # past MAX_FAN_PATHS, cut, or its record lost
            self.counters["fanotify_path_unresolved"] += 1

    def _with_tracee(self, tmpl: Event, fields: dict, h, apid: int, report_tid: int) -> Event:
        # the event's pid as the agent numbers it: a tgid, or with
        # FAN_REPORT_TID a thread id mapped to its process; its identity as
        # it was when the listener read the event (an exec since does not count)
        tracee, tid = self._tracee(h.pidns, apid, report_tid)
        if tid:
            fields["tracee_tid"] = tid
        if not tracee:  # pid 0 (actor outside the reader's pid namespace) or untranslatable
            return msgspec.structs.replace(tmpl, **fields)
        return self.identities.event(tmpl, self.identities.tracee(tracee, h.ts), "exact", fields)

    def _tracee(self, pidns: int, apid: int, report_tid: int) -> tuple[int, int]:
        """(pid, tid) in the agent's numbering of the pid a fanotify reader got
        (its tgid, or its tid with FAN_REPORT_TID, in the reader's pid
        namespace); 0 where unknown. tid is 0 without FAN_REPORT_TID."""
        if apid <= 0:
            return 0, 0  # the actor is not visible in the reader's pid namespace
        if pidns and pidns != self.own_pidns:
            apid = self._from_pidns(pidns, apid, bool(report_tid))
            if not apid:
                self.counters["tracee_pidns_unresolved"] += 1
                return 0, 0
        if not report_tid:
            return apid, 0
        tgid = self.procs.tgid_of(apid)
        if not tgid:
            self.counters["tracee_tgid_unknown"] += 1
        return tgid, apid

    def _from_pidns(self, pidns: int, nspid: int, thread: bool) -> int:
        """A pid (tid) numbered in another pid namespace, in the agent's; 0 if
        no live task of that namespace has it (from /proc/*/status NSpid)."""
        host = self.procs.from_ns(pidns, nspid)  # born since the agent started
        if host:
            return host
        key = (pidns, nspid, thread)
        now = time.monotonic()
        hit = self._ns_pids.get(key)
        if hit is not None:
            host, when = hit
            if host and proc_readers.ns_pids(f"/proc/{host}")[-1:] == [nspid]:
                return host  # still that task (its number was not reused)
            if not host and now - when < NS_MISS_KEEP_S:
                return 0  # looked very recently: no rescan of /proc per event
        host = proc_readers.pid_from_ns(pidns, nspid, thread)
        if len(self._ns_pids) > MAX_NS_PIDS:
            self._ns_pids.clear()
        self._ns_pids[key] = (host, now)
        return host
