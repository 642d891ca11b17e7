"""The `tracepoint` backend: for kernels without kprobes or BPF trampolines.

Tracer side (exact): syscall tracepoints capture what each inotify/fanotify
listener read(2)s and the fanotify permission responses it write(2)s, with the
listener's identity (bpf/fsnotify_tracepoint.bpf.c).

Tracee side:
  * fanotify: the event carries the actor's pid -> attribution "exact";
  * inotify: the agent's own fanotify marks mirror every inotify watch
    (mirror.py); the tracer's event is matched by object, name and event bit
    -> "inferred"; no match -> "unknown" with tracee fields left 0 / "".

Timestamps: when the tracer's read(2) returned (this backend cannot see the
moment the tracee generated the event); fa_resp: when the response was written.
"""

from __future__ import annotations

import ctypes
import mmap
import os
import struct
import time
from collections import deque

import msgspec

from ... import masks
from ...enrich import procs as procfs, watches as listeners
from ...kernel.abi import (
    FAN_CLASS_PERM_BITS, FAN_CLOEXEC, FAN_INFO_HANDLE_AT, FAN_INFO_HDR, FAN_METADATA,
    FAN_NAME_INFO_TYPES, FAN_NONBLOCK, FAN_PERM_EVENTS, FAN_Q_OVERFLOW, FAN_REPORT_FID_BITS,
    FAN_REPORT_NAME, FAN_REPORT_TID, FAN_RESPONSE, FILE_HANDLE_HDR, IN_IGNORED, IN_Q_OVERFLOW,
    INOTIFY_EVENT, libc)
from ...event import Event
from ...enrich.mirror import Mirror
from ...enrich.procs import ProcTable
from ...kernel.btf import Btf, BtfError, offset_macros
from ...kernel.ringbuf import RingReader
from ..base import Backend, BackendUnavailable, Filters

SOURCE = "fsnotify_tracepoint.bpf.c"

# macro -> (struct, member path), resolved from the running kernel's BTF
OFFSETS = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_TASK_REAL_PARENT": ("task_struct", "real_parent"),
    "OFF_TASK_TGID": ("task_struct", "tgid"),
    "OFF_TASK_PID": ("task_struct", "pid"),
    "OFF_TASK_NSPROXY": ("task_struct", "nsproxy"),
    "OFF_TASK_COMM": ("task_struct", "comm"),
    "OFF_TASK_STACK": ("task_struct", "stack"),
    "OFF_PT_REGS_DI": ("pt_regs", "di"),
    "OFF_PT_REGS_SI": ("pt_regs", "si"),
    "OFF_PT_REGS_DX": ("pt_regs", "dx"),
    "OFF_NSPROXY_MNT_NS": ("nsproxy", "mnt_ns"),
    "OFF_MNTNS_INUM": ("mnt_namespace", "ns.inum"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FDT_MAX_FDS": ("fdtable", "max_fds"),
    "OFF_FILE_F_OP": ("file", "f_op"),
    "OFF_FILE_PRIVATE_DATA": ("file", "private_data"),
    "OFF_FILE_F_PATH": ("file", "f_path"),
    "OFF_PATH_DENTRY": ("path", "dentry"),
    "OFF_PATH_MNT": ("path", "mnt"),
    "OFF_GROUP_PRIORITY": ("fsnotify_group", "priority"),
    "OFF_DENTRY_D_PARENT": ("dentry", "d_parent"),
    "OFF_DENTRY_D_NAME": ("dentry", "d_name"),
    "OFF_QSTR_NAME": ("qstr", "name"),
    "OFF_MOUNT_MNT": ("mount", "mnt"),
    "OFF_MOUNT_MNT_PARENT": ("mount", "mnt_parent"),
    "OFF_MOUNT_MNT_MOUNTPOINT": ("mount", "mnt_mountpoint"),
    "OFF_VFSMOUNT_MNT_ROOT": ("vfsmount", "mnt_root"),
    "OFF_PT_REGS_AX": ("pt_regs", "ax"),
    "OFF_FILES_COUNT": ("files_struct", "count"),
    "OFF_TASK_THREAD_PID": ("task_struct", "thread_pid"),
    "OFF_PID_LEVEL": ("pid", "level"),
    "OFF_PID_NUMBERS": ("pid", "numbers"),
    "OFF_UPID_NS": ("upid", "ns"),
    "OFF_UPID_NR": ("upid", "nr"),
    "OFF_PIDNS_INUM": ("pid_namespace", "ns.inum"),
}
# the file's reference count, by kernel version: file_ref_t f_ref (6.13+,
# stores count - 1, so one reference reads 0) or atomic_long_t f_count
FILE_REF_MEMBERS = (("f_ref", 0), ("f_count", 1))
RINGBUF_PAGES = 2048  # 8 MiB (BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES))

KIND_INOTIFY, KIND_FANOTIFY = 1, 2
(REC_READ, REC_RESPONSE, REC_ADD_WATCH, REC_FORK, REC_EXEC, REC_EXIT, REC_FAN_PATH, REC_KILLED,
 REC_GROUP_GONE, REC_THREAD) = range(1, 11)
LOSS_NAMES = ("ringbuf_lost", "read_truncated", "pending_map_full", "path_too_deep")

# struct rec_hdr in the BPF source
HDR = struct.Struct("=6IQQQiiIIIIIIII16s")
# field indices in HDR.unpack()
(H_KIND, H_TGID, H_TID, H_PPID, H_UID, H_GID, H_MNTNS, H_TS, H_GROUP, H_FD, H_RET, H_PRIO,
 H_LISTENER, H_TOTAL, H_OFFSET, H_LEN, H_PAD, H_PIDNS, H_NSPID, H_COMM) = range(20)
CHUNK = 4096  # bytes per ring buffer record of a read (CHUNK in the BPF source)
MAX_READ = 16 * CHUNK  # bytes of one read captured (MAX_CHUNKS * CHUNK)
MAX_WAIT_MS = 25  # longest wait for the ring between looks (the kernel wakes us for bulk only)
KILLED_KEEP_S = 2.0  # a killed tracee's pid is remembered this long
MAX_PENDING_PERM = 65_536  # permission events awaiting an answer (oldest forgotten, counted)
# an inotify event read by a tracer whose mirror event is not in yet waits this long
MATCH_WAIT_S = 0.3
CLOCK_SYNC_S = 2.0  # the monotonic -> wall clock offset is re-read this often
NS_MISS_KEEP_S = 1.0  # a pid not found in another pid namespace is looked for again after this


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


_IN_NAMES: dict[int, list[str]] = {}
_FAN_NAMES: dict[int, list[str]] = {}


def _names(cache: dict, fn, mask: int) -> list[str]:
    """Mask names, one list per distinct mask (shared: never mutate it)."""
    names = cache.get(mask)
    if names is None:
        names = fn(mask)
        if len(cache) < 4096:
            cache[mask] = names
    return names


class TracepointBackend(Backend):
    name = "tracepoint"
    description = ("syscall + sched tracepoints; fanotify tracee exact, inotify tracee inferred "
                   "from the agent's own fanotify mirror marks, or unknown")

    def __init__(self, filters: Filters, emit, log=None):
        super().__init__(filters, emit, log)
        self.bpf = None
        self.mirror: Mirror | None = None
        self._ring: RingReader | None = None
        self.procs = ProcTable()
        self._self = os.getpid()
        # tid -> [hdr, contiguous bytes received, no gap yet] of a multi-chunk read
        self._chunks: dict[int, list] = {}
        self._paths: dict[int, dict[int, str]] = {}  # tid -> {event offset: path} for its next read
        self._waiting: deque = deque()  # (deadline, tracer template, fields, key): unmatched inotify
        self._listeners: dict[tuple[int, int], listeners.Listener] = {}
        self._listener_pids: set[int] = set()
        # (tracer pid, event fd) -> (fanotify Event, group) of a permission event not answered yet
        self._fan_pending: dict[tuple[int, int], tuple[Event, int]] = {}
        self._killed: dict[int, float] = {}  # pid/tid killed out of a wait -> when (monotonic)
        self._answered_late: set[tuple[int, int]] = set()  # pending resolved as interrupted
        self._tracers: dict[tuple, Event] = {}  # tracer identity -> Event template
        self._tracees: dict[int, dict] = {}  # pid -> tracee fields
        self._clock_offset = 0
        self._clock_next = 0.0
        self._sync_clock(time.monotonic())
        self._pidns = procfs.pidns_id(self._self)  # pids in records are numbered in it
        self._ns_pids: dict[tuple[int, int, bool], tuple[int, float]] = {}
        self._learn_fds: list[int] = []
        self._polls = 0
        self.stats = {
            "emitted": 0, "inotify_inferred": 0, "inotify_unmatched": 0, "filtered_tracee": 0,
            "fanotify_path_unresolved": 0, "response_unmatched": 0, "response_failed": 0,
            "response_interrupted": 0, "response_after_interrupt": 0,
            "watch_unknown": 0, "decode_errors": 0, "tracee_tgid_unknown": 0,
            "response_pending_dropped": 0, "tracee_pidns_unresolved": 0,
            "read_incomplete": 0, "read_bytes_unparsed": 0, "inotify_ambiguous": 0,
        }

    # -- lifecycle ------------------------------------------------------------------
    @classmethod
    def probe(cls) -> str | None:
        for tp in ("syscalls/sys_enter_read", "sched/sched_process_exec"):
            if not any(os.path.exists(f"{d}/events/{tp}")
                       for d in ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")):
                # tracefs may just be unmounted; bccenv mounts it at start
                if not os.path.isdir("/sys/kernel/tracing"):
                    return "tracefs (syscall and sched tracepoints) is not available"
        if os.uname().machine != "x86_64":
            return f"reads syscall arguments from x86_64 pt_regs; this machine is {os.uname().machine}"
        if os.geteuid() != 0:
            return "needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for fanotify)"
        return None

    def _cflags(self) -> list[str]:
        try:
            btf = Btf.load()
            flags = offset_macros(btf, OFFSETS) + [f"-DPT_REGS_SIZE={btf.struct_size('pt_regs')}",
                                            f"-DUPID_SIZE={btf.struct_size('upid')}"]
        except BtfError as exc:
            raise BackendUnavailable(str(exc)) from None
        f = self.filters
        if f.inotify_only and f.fanotify_only:
            raise BackendUnavailable("--inotify-only and --fanotify-only exclude each other")
        for member, one in FILE_REF_MEMBERS:
            if btf.has_member("file", member):
                flags += [f"-DOFF_FILE_REF={btf.offsetof('file', member)}", f"-DFILE_ONE_REF={one}ULL"]
                break
        else:
            raise BackendUnavailable("struct file has neither f_ref nor f_count in this kernel's BTF")
        flags += [
            f"-DRINGBUF_PAGES={RINGBUF_PAGES}",
            f"-DSELF_TGID={self._self}",
            f"-DFILTER_TRACER_PIDS={1 if f.tracer_pids else 0}",
            f"-DTRACER_GROUP={f.tracer_group}ULL",
            f"-DWANT_INOTIFY={0 if f.fanotify_only else 1}",
            f"-DWANT_FANOTIFY={0 if f.inotify_only else 1}",
        ]
        return flags

    def start(self) -> None:
        from ...kernel import bcc as bccenv

        try:
            self.bpf = bccenv.compile_bpf(SOURCE, self._cflags())
        except bccenv.BccError as exc:
            raise BackendUnavailable(str(exc)) from None
        b = self.bpf
        for pid in self.filters.tracer_pids:
            b["tracer_pid_filter"][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
        self._learn_listener_fops()
        self.procs.seed()
        if not self.filters.fanotify_only:
            try:
                self.mirror = Mirror(report_tid=True)
            except OSError as exc:
                raise BackendUnavailable(f"cannot create the fanotify mirror group: {exc}") from None
        for listener in listeners.scan(skip_pid=self._self):
            self._add_listener(listener)
        try:
            self._ring = RingReader(b["events"].map_fd, RINGBUF_PAGES * mmap.PAGESIZE)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot map the ring buffer: {exc}") from None

    def _learn_listener_fops(self) -> None:
        """Teach the BPF program the f_op of inotify and fanotify files (see the
        comment on `listener_fops`): open one of each and read it once."""
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
        learn.clear()
        regs = self.bpf["learn_regs"]
        for slot, size in ((0, 16384), (1, 32768)):
            if regs[ctypes.c_int(slot)].value == fan:
                regs[ctypes.c_int(2)] = ctypes.c_uint64(size)
                break
        else:
            raise BackendUnavailable("cannot locate the syscall registers on the kernel stack "
                                     "(THREAD_SIZE is neither 16 nor 32 KiB)")
        # learning done: the enter tracepoint is only for the agent's own reads
        self.bpf.detach_tracepoint(b"syscalls:sys_enter_read")
        fops = self.bpf["listener_fops"]
        if not fops[ctypes.c_int(KIND_INOTIFY)].value or not fops[ctypes.c_int(KIND_FANOTIFY)].value:
            raise BackendUnavailable("the sys_enter_read tracepoint did not fire: cannot "
                                     "recognise inotify/fanotify files")

    def close(self) -> None:
        if self.bpf is not None:
            self.flush()  # inotify events still waiting for a mirror match go out as "unknown"
            self._final = self.counters()  # the kernel's loss counters die with the maps
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            self.bpf.cleanup()
            self.bpf = None
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None

    # -- listeners and mirror marks ---------------------------------------------------
    def _add_listener(self, listener: listeners.Listener) -> None:
        key = (listener.pid, listener.fd)
        old = self._listeners.get(key)
        self._listeners[key] = listener
        self._listener_pids.add(listener.pid)
        if listener.kind == "fanotify" and listener.fan_flags & FAN_CLASS_PERM_BITS and self.bpf:
            # a permission listener running before the agent: its answers count
            self.bpf["perm_readers"][ctypes.c_uint32(listener.pid)] = ctypes.c_uint32(listener.fd)
        if listener.kind != "inotify" or self.mirror is None:
            return
        for watch in listener.watches.values():
            self.mirror.mark(watch, key)
        if old is not None:  # watches gone since the last look (inotify_rm_watch...)
            for wd, watch in old.watches.items():
                if wd not in listener.watches:
                    self.mirror.unmark(watch, key)

    def _drop_listeners(self, pid: int) -> None:
        """A process exited: its inotify watches no longer need mirror marks."""
        self._listener_pids.discard(pid)
        for key in [k for k in self._listeners if k[0] == pid]:
            listener = self._listeners.pop(key)
            if self.mirror is not None:
                for watch in listener.watches.values():
                    self.mirror.unmark(watch, key)

    def _refresh(self, pid: int, fd: int) -> listeners.Listener | None:
        listener = listeners.read_listener(pid, fd)
        if listener:
            self._add_listener(listener)
        return listener

    # -- polling --------------------------------------------------------------------
    def poll(self, timeout_ms: int) -> None:
        # the kernel side wakes us only when WAKEUP_BYTES are waiting: look at
        # least every MAX_WAIT_MS so a lone event is not held longer than that
        buf, recs = self._ring.read(min(timeout_ms, MAX_WAIT_MS))
        # after the ring: every mirror event behind a read in this batch was
        # queued before that read, so it is in the mirror queue by now
        if self.mirror:
            self.mirror.drain()
        if recs:
            self._process(buf, recs)
        if self._waiting:
            self._retry_waiting()
        self._polls += 1
        now = time.monotonic()
        if now >= self._clock_next:
            self._sync_clock(now)
        if self._polls & 63 == 0:
            self.procs.expire()
            self._expire_killed()

    def _sync_clock(self, now: float) -> None:
        """Record timestamps are CLOCK_MONOTONIC: re-read the offset to the
        wall clock every CLOCK_SYNC_S, so a step of the wall clock (NTP,
        date -s) moves the events' timestamps with it within that time."""
        self._clock_offset = time.time_ns() - time.monotonic_ns()
        self._clock_next = now + CLOCK_SYNC_S

    def flush(self) -> None:
        """Emit everything still waiting for a mirror match (at exit)."""
        if self._ring is not None:
            buf, recs = self._ring.read(0)
            if self.mirror:
                self.mirror.drain()
            if recs:
                self._process(buf, recs)
        self._retry_waiting(final=True)

    def counters(self) -> dict[str, int]:
        out = dict(getattr(self, "_final", {}))
        out.update(self.stats)
        if self.bpf is not None:
            for i, name in enumerate(LOSS_NAMES):
                out[name] = sum(self.bpf["losses"][ctypes.c_int(i)])
        if self.mirror:
            out.update(self.mirror.counters)
            out["mirror_marks"] = self.mirror.marks()
        out["proc_unknown"] = self.procs.misses
        return out

    # -- ring buffer records -----------------------------------------------------------
    def _process(self, buf: bytes, recs) -> None:
        unpack = HDR.unpack_from
        hsize = HDR.size
        for off, _size in recs:
            h = unpack(buf, off)
            kind = h[H_KIND]
            doff = off + hsize
            if kind == REC_READ:
                total, o, ln = h[H_TOTAL], h[H_OFFSET], h[H_LEN]
                if o == 0 and ln >= total:  # the whole read in one record
                    self._finish_read(h, buf[doff: doff + total])
                    continue
                # A read in several chunks, in order per thread. Only the
                # contiguous prefix received is parsed: bytes after a chunk
                # lost in the ring, or past MAX_READ, are counted, not guessed.
                tid = h[H_TID]
                ent = self._chunks.get(tid)
                if o == 0:
                    if ent is not None:  # the previous read's last chunk never came
                        self._finish_partial(tid, ent)
                    ent = self._chunks[tid] = [h, bytearray(), True]
                elif ent is None:  # its first chunk was lost: nothing to attach to
                    self.stats["read_bytes_unparsed"] += ln
                    continue
                if ent[2] and o == len(ent[1]) and ln:
                    ent[1] += buf[doff: doff + ln]
                else:
                    ent[2] = False  # a gap: what follows is not parsed
                if o + CHUNK >= min(total, MAX_READ):  # the last chunk
                    self._finish_partial(tid, ent)
            elif kind == REC_FAN_PATH:
                n = h[H_OFFSET]
                comps = buf[doff: doff + h[H_LEN]].split(b"\0")[:n]
                if h[H_PAD]:  # complete: the walk reached the root
                    comps.reverse()
                    path = "/" + b"/".join(comps).decode(errors="replace")
                else:
                    path = ""
                seq = h[H_TOTAL]  # the event's offset in its read
                if seq == 0:  # a new read's first event: forget leftovers of a lost read
                    self._paths[h[H_TID]] = {0: path}
                else:
                    self._paths.setdefault(h[H_TID], {})[seq] = path
            elif kind == REC_RESPONSE:
                self._on_response(h, buf[doff: doff + h[H_LEN]])
            elif kind == REC_ADD_WATCH:
                self._refresh(h[H_TGID], h[H_FD])
            elif kind == REC_FORK:
                self._tracees.pop(h[H_TGID], None)
                self.procs.fork(h[H_TGID], h[H_PPID], _cstr(h[H_COMM]), h[H_UID], h[H_GID], h[H_MNTNS])
                if h[H_PIDNS] != self._pidns and h[H_NSPID]:
                    self.procs.ns_task(h[H_PIDNS], h[H_NSPID], h[H_TGID])
            elif kind == REC_EXEC:
                pid = h[H_TGID]
                self._tracees.pop(pid, None)
                if self._tracers:
                    self._tracers.clear()  # a tracer's exe/comm may have changed
                self.procs.exec(pid, h[H_PPID], _cstr(h[H_COMM]), h[H_UID], h[H_GID], h[H_MNTNS],
                                _cstr(buf[doff: doff + h[H_LEN]]))
            elif kind == REC_EXIT:
                pid = h[H_TGID]
                self.procs.exit(pid)
                if pid in self._listener_pids:
                    self._drop_listeners(pid)
            elif kind == REC_KILLED:
                self._on_killed(h)
            elif kind == REC_GROUP_GONE:
                self._on_group_gone(h)
            elif kind == REC_THREAD:
                self.procs.thread(h[H_TID], h[H_TGID])
                if h[H_PIDNS] != self._pidns and h[H_NSPID]:
                    self.procs.ns_task(h[H_PIDNS], h[H_NSPID], h[H_TID])

    def _ts(self, mono_ns: int) -> int:
        return mono_ns + self._clock_offset

    def _tracer(self, h) -> Event:
        """An Event template holding the tracer's fields (cached per identity)."""
        key = h[H_TGID: H_TS] + (h[H_PRIO], h[H_COMM])
        tmpl = self._tracers.get(key)
        if tmpl is None:
            pid = h[H_TGID]
            proc = self.procs.get(pid)
            parent = self.procs.get(h[H_PPID])
            tmpl = Event(tracer_pid=pid, tracer_tid=h[H_TID], tracer_ppid=h[H_PPID],
                         tracer_uid=h[H_UID], tracer_gid=h[H_GID], tracer_mntns_id=h[H_MNTNS],
                         tracer_comm=_cstr(h[H_COMM]), tracer_pcomm=parent.comm if parent else "",
                         tracer_exe=proc.exe if proc else "", prio=h[H_PRIO])
            if len(self._tracers) > 4096:
                self._tracers.clear()
            self._tracers[key] = tmpl
        return tmpl

    def _tracee_fields(self, pid: int) -> dict:
        fields = self._tracees.get(pid)
        if fields is not None:
            return fields
        proc = self.procs.get(pid)
        if proc is None:
            return {"tracee_pid": pid}  # not cached: /proc may know it next time
        parent = self.procs.get(proc.ppid)
        fields = dict(tracee_pid=pid, tracee_ppid=proc.ppid, tracee_uid=proc.uid, tracee_gid=proc.gid,
                      tracee_mntns_id=proc.mntns, tracee_comm=proc.comm,
                      tracee_pcomm=parent.comm if parent else "", tracee_exe=proc.exe,
                      tracee_container_id=proc.container_id)
        if len(self._tracees) > 65536:
            self._tracees.clear()
        self._tracees[pid] = fields
        return fields

    def _emit(self, ev: Event) -> None:
        if self.filters.tracee_pids and ev.tracee_pid not in self.filters.tracee_pids:
            self.stats["filtered_tracee"] += 1
            return
        self.stats["emitted"] += 1
        self.emit(ev)

    def _finish_partial(self, tid: int, ent: list) -> None:
        """A multi-chunk read is over: parse what arrived contiguously."""
        del self._chunks[tid]
        h, data = ent[0], bytes(ent[1])
        missing = h[H_TOTAL] - len(data)
        if missing > 0:
            self.stats["read_incomplete"] += 1
            self.stats["read_bytes_unparsed"] += missing
        self._finish_read(h, data)

    def _finish_read(self, h, data: bytes) -> None:
        try:
            if h[H_LISTENER] == KIND_INOTIFY:
                self._inotify_read(h, data)
            else:
                self._fanotify_read(h, data)
        except (struct.error, ValueError):
            self.stats["decode_errors"] += 1

    # inotify: struct inotify_event { int wd; u32 mask, cookie, len; char name[]; }
    def _inotify_read(self, h, data: bytes) -> None:
        pid, fd = h[H_TGID], h[H_FD]
        consumer = (pid, fd)
        tmpl = self._tracer(h)
        ts = h[H_TS] + self._clock_offset
        mirror = self.mirror
        listener = self._listeners.get(consumer)
        unpack = INOTIFY_EVENT.unpack_from
        end = len(data)
        off = 0
        while off + 16 <= end:
            wd, mask, cookie, nlen = unpack(data, off)
            if off + 16 + nlen > end:
                break  # cut (an incomplete read): its bytes are counted unparsed
            name = _cstr(data[off + 16: off + 16 + nlen]) if nlen else ""
            off += 16 + nlen
            fields = dict(timestamp=ts, type="inotify", i_wd=wd, i_mask=mask, i_cookie=cookie,
                          i_mask_names=_names(_IN_NAMES, masks.inotify_mask_names, mask), name=name)
            if mask & IN_Q_OVERFLOW:
                # no tracee: the kernel dropped the events themselves
                self._emit(msgspec.structs.replace(tmpl, **fields))
                continue
            watch = listener.watches.get(wd) if listener is not None else None
            if watch is None:
                listener = self._refresh(pid, fd) if not mask & IN_IGNORED else listener
                watch = listener.watches.get(wd) if listener is not None else None
            if watch is not None:
                wpath = mirror.path_of(watch) if mirror else ""
                fields["path"] = (wpath + "/" + name if wpath != "/" else "/" + name) if wpath and name else wpath
                if name:
                    fields["i_ino_dir"] = watch.ino
                else:
                    fields["i_ino"] = watch.ino
                if mask & IN_IGNORED and listener is not None:
                    # the watch is gone (inotify_rm_watch, IN_ONESHOT, object
                    # deleted or unmounted): so is the need for its mirror mark
                    listener.watches = {k: v for k, v in listener.watches.items() if k != wd}
                    if mirror:
                        mirror.unmark(watch, consumer)
            else:
                self.stats["watch_unknown"] += 1
            key = (watch.ino if watch else 0, name, mask, consumer)
            if not self._try_match(tmpl, fields, key):
                self._waiting.append((time.monotonic() + MATCH_WAIT_S, tmpl, fields, key))

    def _try_match(self, tmpl: Event, fields: dict, key) -> bool:
        ino, name, mask, consumer = key
        if not ino or self.mirror is None:
            return False
        (pid, tid, child_ino), certain = self.mirror.match(ino, name, mask, consumer)
        if not pid:
            return False
        if child_ino and name:
            fields["i_ino"] = child_ino
        if not certain:
            # inotify may have merged this event with an identical one of
            # another actor: the mirror's order no longer says whose it is
            self.stats["inotify_ambiguous"] += 1
            self._emit(msgspec.structs.replace(tmpl, **fields))
            return True
        if tid:  # the mirror reports thread ids: find the process
            fields["tracee_tid"] = tid
            pid = self.procs.tgid_of(tid)
            if not pid:
                self.stats["tracee_tgid_unknown"] += 1
                fields["tracee_pid"] = 0
        self.stats["inotify_inferred"] += 1
        tracee = self._tracee_fields(pid) if pid else {}
        self._emit(msgspec.structs.replace(tmpl, **fields, **tracee, attribution="inferred"))
        return True

    def _retry_waiting(self, final: bool = False) -> None:
        now = time.monotonic()
        still = deque()
        for item in self._waiting:
            deadline, tmpl, fields, key = item
            if self._try_match(tmpl, fields, key):
                continue
            if final or now >= deadline:
                self.stats["inotify_unmatched"] += 1
                self._emit(msgspec.structs.replace(tmpl, **fields))  # "unknown", tracee 0 / ""
            else:
                still.append(item)
        self._waiting = still

    # fanotify: struct fanotify_event_metadata + optional info records
    def _fanotify_read(self, h, data: bytes) -> None:
        pid, fd = h[H_TGID], h[H_FD]
        tmpl = self._tracer(h)
        ts = h[H_TS] + self._clock_offset
        listener = self._listeners.get((pid, fd)) or self._refresh(pid, fd)
        fan_flags = listener.fan_flags if listener else 0
        f_flags = listener.fan_event_flags if listener else 0
        paths = self._paths.pop(h[H_TID], None) or {}
        group = h[H_GROUP]
        unpack = FAN_METADATA.unpack_from
        off = 0
        while off + FAN_METADATA.size <= len(data):
            event_len, _v, _r, mlen, mask, efd, apid = unpack(data, off)
            if event_len < FAN_METADATA.size or off + event_len > len(data):
                break  # corrupt, or cut (an incomplete read): counted unparsed
            fields = dict(timestamp=ts, type="fanotify", fa_mask=mask,
                          fa_mask_names=_names(_FAN_NAMES, masks.fanotify_mask_names, mask),
                          fa_pid=apid, fa_flags=fan_flags, fa_f_flags=f_flags)
            perm = False
            if mask & FAN_Q_OVERFLOW:
                fields["fa_type"] = "FANOTIFY_EVENT_TYPE_OVERFLOW"
                ev = msgspec.structs.replace(tmpl, **fields)
            else:
                perm = bool(mask & FAN_PERM_EVENTS)
                if perm:
                    fields["fa_type"] = "FANOTIFY_EVENT_TYPE_PATH_PERM"
                elif fan_flags & FAN_REPORT_FID_BITS:
                    fields["fa_type"] = ("FANOTIFY_EVENT_TYPE_FID_NAME" if fan_flags & FAN_REPORT_NAME
                                         else "FANOTIFY_EVENT_TYPE_FID")
                else:
                    fields["fa_type"] = "FANOTIFY_EVENT_TYPE_PATH"
                # the event's pid as the agent numbers it: a tgid, or with
                # FAN_REPORT_TID a thread id mapped to its process
                tracee, tid = self._fan_tracee(h[H_PIDNS], apid, fan_flags & FAN_REPORT_TID)
                if tid:
                    fields["tracee_tid"] = tid
                if efd >= 0:
                    # only the path the kernel walked from this very fd: a
                    # readlink of /proc/<tracer>/fd/<efd> after the fact may
                    # name whatever file reuses that fd number by then
                    path = paths.get(off, "")
                    if path:
                        fields["path"] = fields["name"] = path
                    else:  # past MAX_FAN_PATHS, cut, or its record lost
                        self.stats["fanotify_path_unresolved"] += 1
                else:
                    # FID modes: a name relative to the directory whose file
                    # handle the event carries, not a path
                    fields["name"] = self._fid_name(data[off + mlen: off + event_len])
                if tracee:
                    ev = msgspec.structs.replace(tmpl, **fields, **self._tracee_fields(tracee),
                                                 attribution="exact")
                else:  # pid 0 (actor outside the reader's pid namespace) or untranslatable
                    ev = msgspec.structs.replace(tmpl, **fields)
            off += event_len
            self._emit(ev)
            if perm and efd >= 0:
                pending = self._fan_pending
                if len(pending) >= MAX_PENDING_PERM:  # listeners that never answer
                    del pending[next(iter(pending))]
                    self.stats["response_pending_dropped"] += 1
                pending[(pid, efd)] = (ev, group)
                if ev.tracee_pid in self._killed or ev.tracee_tid in self._killed:
                    # killed before its listener's read was seen
                    self._interrupted((pid, efd), ev.timestamp)

    def _fan_tracee(self, pidns: int, apid: int, report_tid: int) -> tuple[int, int]:
        """(pid, tid) in the agent's numbering of the pid a fanotify reader got
        (its tgid, or its tid with FAN_REPORT_TID, in the reader's pid
        namespace); 0 where unknown. tid is 0 without FAN_REPORT_TID."""
        if apid <= 0:
            return 0, 0  # the actor is not visible in the reader's pid namespace
        if pidns and pidns != self._pidns:
            apid = self._from_pidns(pidns, apid, bool(report_tid))
            if not apid:
                self.stats["tracee_pidns_unresolved"] += 1
                return 0, 0
        if not report_tid:
            return apid, 0
        tgid = self.procs.tgid_of(apid)
        if not tgid:
            self.stats["tracee_tgid_unknown"] += 1
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
            if host and procfs.ns_pids(f"/proc/{host}")[-1:] == [nspid]:
                return host  # still that task (its number was not reused)
            if not host and now - when < NS_MISS_KEEP_S:
                return 0  # looked very recently: no rescan of /proc per event
        host = procfs.pid_from_ns(pidns, nspid, thread)
        if len(self._ns_pids) > 4096:
            self._ns_pids.clear()
        self._ns_pids[key] = (host, now)
        return host

    @staticmethod
    def _fid_name(info: bytes) -> str:
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
                return _cstr(info[start + hbytes: pos + ilen])
            pos += ilen
        return ""

    def _on_response(self, h, body: bytes) -> None:
        if h[H_RET] < 0:
            self.stats["response_failed"] += 1
            return
        efd, response = FAN_RESPONSE.unpack_from(body, 0)
        key = (h[H_TGID], efd)
        pending = self._fan_pending.pop(key, None)
        if pending is None:
            if key in self._answered_late:
                # the kernel had already settled it (tracee killed): the
                # listener's answer changed nothing, and was reported as such
                self._answered_late.discard(key)
                self.stats["response_after_interrupt"] += 1
                return
            self.stats["response_unmatched"] += 1
            ev = msgspec.structs.replace(self._tracer(h), attribution="unknown")
        else:
            ev = pending[0]
        ev = msgspec.structs.replace(
            ev, type="fa_resp", timestamp=h[H_TS] + self._clock_offset,
            fa_response=masks.fa_response_name(response), **self._tracer_identity(h))
        self._emit(ev)

    def _tracer_identity(self, h) -> dict:
        t = self._tracer(h)
        return dict(tracer_pid=t.tracer_pid, tracer_tid=t.tracer_tid, tracer_ppid=t.tracer_ppid,
                    tracer_uid=t.tracer_uid, tracer_gid=t.tracer_gid,
                    tracer_mntns_id=t.tracer_mntns_id, tracer_comm=t.tracer_comm,
                    tracer_pcomm=t.tracer_pcomm, tracer_exe=t.tracer_exe, prio=t.prio)

    # -- verdicts the listener never gave ------------------------------------------------
    def _interrupted(self, key: tuple[int, int], ts: int) -> None:
        """The kernel settled this permission event without the listener's answer."""
        ev, _group = self._fan_pending.pop(key)
        self._answered_late.add(key)
        if len(self._answered_late) > 4096:
            self._answered_late.clear()
        self.stats["response_interrupted"] += 1
        self._emit(msgspec.structs.replace(ev, type="fa_resp", timestamp=ts,
                                           fa_response="interrupted"))

    def _on_killed(self, h) -> None:
        """A task left a syscall with SIGKILL pending: if it is the tracee of a
        permission event still unanswered, that wait was interrupted."""
        tgid, tid = h[H_TGID], h[H_TID]
        ts = h[H_TS] + self._clock_offset
        self._killed[tgid] = self._killed[tid] = time.monotonic()
        for key, (ev, _group) in list(self._fan_pending.items()):
            if ev.tracee_pid == tgid or ev.tracee_tid == tid:
                self._interrupted(key, ts)

    def _on_group_gone(self, h) -> None:
        """The last reference to a permission listener's fanotify file is going
        (close(2) or exit): the kernel allows every event still pending."""
        group, ts = h[H_GROUP], h[H_TS] + self._clock_offset
        for key, (_ev, g) in list(self._fan_pending.items()):
            if g == group:
                self._interrupted(key, ts)

    def _expire_killed(self) -> None:
        limit = time.monotonic() - KILLED_KEEP_S
        for pid in [p for p, t in self._killed.items() if t < limit]:
            del self._killed[pid]
