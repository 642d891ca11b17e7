"""The `tracepoint` backend: for kernels without kprobes or BPF trampolines.

Tracer side (exact): syscall tracepoints capture what each inotify/fanotify
listener read(2)s and the fanotify permission responses it write(2)s, with the
listener's identity (bpf/fsnotify_tracepoint.bpf.c).

Tracee side:
  * fanotify: the event carries the actor's pid -> attribution "exact"
    (fanotify.py);
  * inotify: the agent's own fanotify marks mirror every inotify watch
    (enrich/mirror.py); the tracer's event is matched by object, name and
    event bit -> "inferred"; no match -> "unknown" with tracee fields left
    0 / "" (inotify.py);
  * verdicts: answered, or interrupted when the kernel settled them (verdicts.py).

This module loads the program and routes each ring record (records.py) to
the piece that decodes it; the pieces share what they are handed here.

Timestamps: when the tracer's read(2) returned (this backend cannot see the
moment the tracee generated the event); fa_resp: when the response was written.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time

from ...enrich import procs as proc_readers
from ...enrich.cgroups import CgroupPaths
from ...enrich.identity import Identities
from ...enrich.mirror import Mirror
from ...enrich.procs import ProcTable
from ...enrich.watches import Listeners, scan
from ...event import Event
from ...kernel import bcc
from ...kernel.abi import FAN_CLASS_PERM_BITS, FAN_CLOEXEC, FAN_NONBLOCK, libc
from ...kernel.btf import BtfError
from ...kernel.layout import THREAD_SIZES, KernelLayout
from ...kernel.probes import tracepoints_available
from ...kernel.records import cstr
from ...kernel.ringbuf import RingReader
from ..base import Backend, BackendUnavailable, Filters, fill_pid_filters, filter_cflags
from . import records
from .fanotify import FanotifyReads
from .inotify import InotifyReads
from .verdicts import Verdicts

SOURCE = "fsnotify_tracepoint.bpf.c"
KIND_INOTIFY, KIND_FANOTIFY = 1, 2  # rec_hdr.listener (fsnotify_common.h)
LEARN_WATCH_GROUP = 3  # learn_fds: the agent's watch group (its queue is looked at on exec)
MAX_WAIT_MS = 25  # longest wait for the ring between looks (the kernel wakes us for bulk only)
EXPIRE_EVERY = 64  # polls between expiries of exited processes and killed pids


class Emitter:
    """Where the decoders put finished events: the list `poll()` returns,
    after the --tracee-pid filter (the tracee is learnt here, not in the kernel)."""

    def __init__(self, tracee_pids: tuple[int, ...]):
        self.tracee_pids = frozenset(tracee_pids)
        self.events: list[Event] = []
        self.counters = {"emitted": 0, "filtered_tracee": 0}

    def __call__(self, ev: Event) -> None:
        if self.tracee_pids and ev.tracee_pid not in self.tracee_pids:
            self.counters["filtered_tracee"] += 1
            return
        self.counters["emitted"] += 1
        self.events.append(ev)

    def take(self) -> list[Event]:
        events, self.events = self.events, []
        return events


class TracepointBackend(Backend):
    name = "tracepoint"
    description = ("syscall + sched tracepoints; fanotify tracee exact, inotify tracee inferred "
                   "from the agent's own fanotify mirror marks, or unknown")

    def __init__(self, filters: Filters, log=None):
        super().__init__(filters, log)
        self.bpf = None
        self.mirror: Mirror | None = None
        self._ring: RingReader | None = None
        self._self = os.getpid()
        self._final: dict[str, int] = {}  # the kernel's and mirror's counters at close
        self._polls = 0
        self.decode_errors = 0
        self.procs = ProcTable()
        self.cgroups = CgroupPaths()  # the cgroup ids of fork/exec records -> containers
        self.clock = records.Clock()
        self.emit = Emitter(filters.tracee_pids)
        self.identities = Identities(self.procs)
        self.reads = records.ReadAssembler()
        self.fan_paths = records.FanPaths()
        self.verdicts = Verdicts(self.emit, self.identities, self.clock)
        self.listeners = Listeners()  # the mirror joins at start()
        self.inotify = InotifyReads(self.emit, self.identities, self.listeners, self.procs, self.clock)
        self.fanotify = FanotifyReads(self.emit, self.identities, self.listeners, self.procs,
                                      self.clock, self.fan_paths, self.verdicts,
                                      proc_readers.pidns_id(self._self))

    # -- lifecycle ------------------------------------------------------------------
    @classmethod
    def probe(cls) -> str | None:
        return tracepoints_available()

    def _cflags(self) -> list[str]:
        try:
            layout = KernelLayout.load().tracepoint_cflags()
        except BtfError as exc:
            raise BackendUnavailable(str(exc)) from None
        return layout + filter_cflags(self.filters, tracee_pids_in_kernel=False) + [
            records.HDR.size_macro("REC_HDR_SIZE"),
            f"-DRINGBUF_PAGES={self.ring_bytes // mmap.PAGESIZE}",
            f"-DSELF_TGID={self._self}",
        ]

    def start(self) -> None:
        try:
            self.bpf = bcc.compile_bpf(SOURCE, self._cflags())
        except bcc.BccError as exc:
            raise BackendUnavailable(str(exc)) from None
        fill_pid_filters(self.bpf, self.filters, tracee_pids_in_kernel=False)
        # the walk that counts a lost read's events, a program of its own (tail call)
        walk = self.bpf.load_func(b"count_lost_events", bcc.import_bcc().BPF.TRACEPOINT)
        self.bpf["lost_read_walk"][ctypes.c_int(0)] = ctypes.c_int(walk.fd)
        self._learn_listener_fops()
        self.procs.seed()
        if not self.filters.fanotify_only and not self.filters.fim_only:
            try:
                self.mirror = Mirror(report_tid=True)
            except OSError as exc:
                raise BackendUnavailable(f"cannot create the fanotify mirror group: {exc}") from None
        self.listeners.mirror = self.mirror
        for listener in scan(skip_pid=self._self):
            self.listeners.add(listener)
            if listener.kind == "fanotify" and listener.fan_flags & FAN_CLASS_PERM_BITS:
                # a permission listener running before the agent: its answers count
                self.bpf["perm_readers"][ctypes.c_uint32(listener.pid)] = ctypes.c_uint32(listener.fd)
        try:
            self._ring = RingReader(self.bpf["events"].map_fd, self.ring_bytes)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot map the ring buffer: {exc}") from None

    def _learn_listener_fops(self) -> None:
        """Teach the BPF program the f_op of inotify and fanotify files (see the
        comment on `listener_fops`) and where the saved user registers sit on
        the kernel stack: open one fd of each kind and read it once."""
        ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        fan = libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK, 0)
        if ino < 0 or fan < 0:
            raise BackendUnavailable("cannot create inotify/fanotify fds (needs root)")
        learn = self.bpf["learn_fds"]
        learn[ctypes.c_uint32(ino)] = ctypes.c_uint32(KIND_INOTIFY)
        learn[ctypes.c_uint32(fan)] = ctypes.c_uint32(KIND_FANOTIFY)
        for fd in (ino, fan):
            try:
                os.read(fd, 4096)
            except BlockingIOError:
                pass
            os.close(fd)
        if self.own_group_fd >= 0:
            # a read(2) of no bytes: the program learns the group, no event is taken
            learn[ctypes.c_uint32(self.own_group_fd)] = ctypes.c_uint32(LEARN_WATCH_GROUP)
            libc.read(self.own_group_fd, None, 0)
        learn.clear()
        regs = self.bpf["learn_regs"]
        for slot, size in enumerate(THREAD_SIZES):
            if regs[ctypes.c_int(slot)].value == fan:
                regs[ctypes.c_int(2)] = ctypes.c_uint64(size)
                break
        else:
            raise BackendUnavailable("cannot locate the syscall registers on the kernel stack "
                                     f"(THREAD_SIZE is none of {', '.join(map(str, THREAD_SIZES))})")
        # learning done: the enter tracepoint is only for the agent's own reads
        self.bpf.detach_tracepoint(b"syscalls:sys_enter_read")
        fops = self.bpf["listener_fops"]
        if not fops[ctypes.c_int(KIND_INOTIFY)].value or not fops[ctypes.c_int(KIND_FANOTIFY)].value:
            raise BackendUnavailable("the sys_enter_read tracepoint did not fire: cannot "
                                     "recognise inotify/fanotify files")

    def close(self) -> list[Event]:
        held: list[Event] = []
        if self.bpf is not None:
            if self._ring is not None:
                held = self.poll(0)  # what the kernel already queued
                self.catch_up(held.extend)
            for read in self.reads.rest():  # their last chunks were lost in the ring
                self._decode_read(*read)
            self.inotify.retry(final=True)  # still waiting for a mirror match: "unknown"
            self._final = self._kernel_counters()  # they die with the maps and the mirror
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            self.bpf.cleanup()
            self.bpf = None
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = self.listeners.mirror = None
        return held + self.emit.take()

    # -- polling --------------------------------------------------------------------
    def poll(self, timeout_ms: int) -> list[Event]:
        # the kernel side wakes us only when WAKEUP_EVERY records are waiting:
        # look at least every MAX_WAIT_MS so a lone event is not held longer
        self._drain(min(timeout_ms, MAX_WAIT_MS))
        if self.inotify.waiting:
            self.inotify.retry()
        self._polls += 1
        self.clock.sync(time.monotonic())
        if self._polls % EXPIRE_EVERY == 0:
            self.procs.expire()
            self.verdicts.expire()
        return self.emit.take()

    def _drain(self, timeout_ms: int) -> None:
        buf, recs = self._ring.read(timeout_ms)
        # after the ring: every mirror event behind a read in this batch was
        # queued before that read, so it is in the mirror queue by now
        if self.mirror:
            self.mirror.drain()
        unpack, hsize = records.HDR.unpack_from, records.HDR.size
        now = time.monotonic()
        for off, _size in recs:
            h = unpack(buf, off)
            self._route(h, buf[off + hsize: off + hsize + h.len], now)
        if not self._ring.more:  # every chunk committed by now has been read
            for read in self.reads.stale(now):
                self._decode_read(*read)

    def _route(self, h, data: bytes, now: float) -> None:
        """One ring record, drained at `now` (monotonic), to the piece that handles its kind."""
        kind = h.kind
        if kind == records.REC_READ:
            for read in self.reads.add(h, data, now):
                self._decode_read(*read)
        elif kind == records.REC_FAN_PATH:
            # a read's paths come before it: the thread's earlier read, if
            # cut in the ring, has sent all it will (and takes its own paths)
            for read in self.reads.finish(h.proc_tid):
                self._decode_read(*read)
            self.fan_paths.add(h, data)
        elif kind == records.REC_RESPONSE:
            self.verdicts.response(h, data)
        elif kind == records.REC_ADD_WATCH:
            self.listeners.refresh(h.proc_pid, h.fd)
        elif kind in (records.REC_FORK, records.REC_EXEC, records.REC_EXIT, records.REC_THREAD,
                      records.REC_CREDS):
            self._process_table(kind, h, data)
        elif kind == records.REC_KILLED:
            self.verdicts.killed(h)
        elif kind == records.REC_GROUP_GONE:
            self.verdicts.group_gone(h)

    def _process_table(self, kind: int, h, data: bytes) -> None:
        """fork / exec / exit / a new thread: keep the process table current."""
        pid = h.proc_pid
        if not pid:
            return  # a task outside the agent's pid namespace (no hostPID): no /proc of it here
        if kind == records.REC_FORK:
            self.procs.fork(pid, h.proc_ppid, cstr(h.proc_comm), h.proc_uid, h.proc_gid, h.proc_mntns_id,
                            h.proc_ruid, h.proc_suid, self.cgroups.container(h.cgroup))
            if h.pidns != self.fanotify.own_pidns and h.nspid:
                self.procs.ns_task(h.pidns, h.nspid, pid)
        elif kind == records.REC_EXEC:
            self.identities.exec_seen()
            self.procs.exec(pid, h.proc_ppid, cstr(h.proc_comm), h.proc_uid, h.proc_gid,
                            h.proc_mntns_id, cstr(data), h.ts, h.queued, h.proc_ruid, h.proc_suid,
                            self.cgroups.container(h.cgroup))
        elif kind == records.REC_EXIT:
            self.procs.exit(pid)
            self.listeners.exited(pid)
        elif kind == records.REC_CREDS:
            self.procs.creds(pid, h.proc_uid, h.proc_gid, h.proc_ruid, h.proc_suid, h.ts, h.queued)
            self.identities.exec_seen()  # a tracer's template holds its ids
        else:  # REC_THREAD
            self.procs.thread(h.proc_tid, pid)
            if h.pidns != self.fanotify.own_pidns and h.nspid:
                self.procs.ns_task(h.pidns, h.nspid, h.proc_tid)

    def _decode_read(self, h, data: bytes) -> None:
        try:
            if h.listener == KIND_INOTIFY:
                self.inotify.read(h, data)
            else:
                self.fanotify.read(h, data)
        except (struct.error, ValueError):
            self.decode_errors += 1

    def fim_actor(self, pid: int, mask: int, wanted: bool) -> tuple[dict, int] | None:
        """The watch group's actor from the process table: as the process was
        before an exec that found this event still queued, else as it is (or
        was, when it exited: kept GRACE_S). fanotify gave the pid: "exact"."""
        if not wanted or pid <= 0:
            return None
        return {**self.identities.tracee_queued(pid), "attribution": "exact"}, 0

    def counters(self) -> dict[str, int]:
        out = {"decode_errors": self.decode_errors, "proc_unknown": self.procs.misses}
        for piece in (self.emit, self.reads, self.verdicts, self.inotify, self.fanotify):
            for name, value in piece.counters.items():
                out[name] = out.get(name, 0) + value  # tracee_tgid_unknown: two pieces count it
        out.update(self._kernel_counters() if self.bpf is not None else self._final)
        return out

    def _kernel_counters(self) -> dict[str, int]:
        table = self.bpf["counters"]
        out = {name: sum(table[ctypes.c_int(i)]) for i, name in enumerate(records.COUNTERS)}
        if self.mirror:
            out.update(self.mirror.counters)
            out["mirror_marks"] = self.mirror.marks()
        return out
