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
import os
import struct
import time

from .. import listeners, masks, procfs
from ..btf import Btf, BtfError, offset_macros
from ..event import Event
from ..mirror import Mirror
from ..proctable import ProcTable
from .base import Backend, BackendUnavailable, Filters

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
}

KIND_INOTIFY, KIND_FANOTIFY = 1, 2
REC_READ, REC_RESPONSE, REC_ADD_WATCH, REC_FORK, REC_EXEC, REC_EXIT, REC_FAN_PATH = range(1, 8)
LOSS_NAMES = ("ringbuf_lost", "read_truncated", "pending_map_full", "path_too_deep")

# struct rec_hdr in the BPF source
HDR = struct.Struct("=6IQQQiiIIIIII16s")
# field indices in HDR.unpack()
(H_KIND, H_TGID, H_TID, H_PPID, H_UID, H_GID, H_MNTNS, H_TS, H_GROUP, H_FD, H_RET, H_PRIO,
 H_LISTENER, H_TOTAL, H_OFFSET, H_LEN, H_PAD, H_COMM) = range(18)
INOTIFY_EVENT = struct.Struct("=iIII")  # wd, mask, cookie, len
FAN_META = struct.Struct("=IBBHQii")
FAN_RESPONSE = struct.Struct("=iI")
FAN_NOFD = -1
FAN_Q_OVERFLOW = 0x4000
FAN_PERM_EVENTS = 0x00010000 | 0x00020000 | 0x00040000 | 0x00100000
FAN_REPORT_FID_BITS = 0x200 | 0x400 | 0x800 | 0x1000 | 0x4000
IN_Q_OVERFLOW = 0x4000
# an inotify event read by a tracer whose mirror event is not in yet waits this long
MATCH_WAIT_S = 0.3


def _cstr(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode(errors="replace")


class _Read:
    """One read(2) of a listener, reassembled from ring buffer chunks."""

    __slots__ = ("hdr", "data", "paths")

    def __init__(self, hdr):
        self.hdr = hdr
        self.data = bytearray(hdr[H_TOTAL])  # total
        self.paths: dict[int, list[str]] = {}  # event offset -> components, leaf first


class TracepointBackend(Backend):
    name = "tracepoint"
    description = ("syscall + sched tracepoints; fanotify tracee exact, inotify tracee inferred "
                   "from the agent's own fanotify mirror marks, or unknown")

    def __init__(self, filters: Filters, emit, log=None):
        super().__init__(filters, emit, log)
        self.bpf = None
        self.mirror: Mirror | None = None
        self.procs = ProcTable()
        self._self = os.getpid()
        self._reads: dict[int, _Read] = {}  # tid -> read being reassembled
        self._done: list[_Read] = []
        self._waiting: list[tuple[float, Event, int, tuple]] = []  # unmatched inotify events
        self._listeners: dict[tuple[int, int], listeners.Listener] = {}
        self._fan_pending: dict[tuple[int, int], Event] = {}  # (tracer pid, event fd) -> event
        self._clock_offset = time.time_ns() - time.monotonic_ns()
        self._learn_fds: list[int] = []
        self.stats = {
            "emitted": 0, "inotify_inferred": 0, "inotify_unmatched": 0, "filtered_tracee": 0,
            "fanotify_path_unresolved": 0, "response_unmatched": 0, "response_failed": 0,
            "watch_unknown": 0, "decode_errors": 0,
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
            flags = offset_macros(btf, OFFSETS) + [f"-DPT_REGS_SIZE={btf.struct_size('pt_regs')}"]
        except BtfError as exc:
            raise BackendUnavailable(str(exc)) from None
        f = self.filters
        if f.inotify_only and f.fanotify_only:
            raise BackendUnavailable("--inotify-only and --fanotify-only exclude each other")
        flags += [
            f"-DSELF_TGID={self._self}",
            f"-DFILTER_TRACER_PIDS={1 if f.tracer_pids else 0}",
            f"-DTRACER_GROUP={f.tracer_group}ULL",
            f"-DWANT_INOTIFY={0 if f.fanotify_only else 1}",
            f"-DWANT_FANOTIFY={0 if f.inotify_only else 1}",
        ]
        return flags

    def start(self) -> None:
        from .. import bccenv

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
                self.mirror = Mirror()
            except OSError as exc:
                raise BackendUnavailable(f"cannot create the fanotify mirror group: {exc}") from None
        for listener in listeners.scan(skip_pid=self._self):
            self._add_listener(listener)
        b["events"].open_ring_buffer(self._on_record)

    def _learn_listener_fops(self) -> None:
        """Teach the BPF program the f_op of inotify and fanotify files (see the
        comment on `listener_fops`): open one of each and read it once."""
        import select  # noqa: F401  (read on a non-blocking fd returns EAGAIN at once)
        from ..mirror import _libc as libc

        ino = libc.inotify_init1(os.O_NONBLOCK | os.O_CLOEXEC)
        fan = libc.fanotify_init(0x1 | 0x2, 0)  # FAN_CLOEXEC | FAN_NONBLOCK
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
            self.bpf.cleanup()
            self.bpf = None
        if self.mirror is not None:
            self.mirror.close()
            self.mirror = None

    # -- listeners and mirror marks ---------------------------------------------------
    def _add_listener(self, listener: listeners.Listener) -> None:
        self._listeners[(listener.pid, listener.fd)] = listener
        if listener.kind == "inotify" and self.mirror is not None:
            for watch in listener.watches.values():
                self.mirror.mark(watch)

    def _refresh(self, pid: int, fd: int) -> listeners.Listener | None:
        listener = listeners.read_listener(pid, fd)
        if listener:
            self._add_listener(listener)
        return listener

    # -- polling --------------------------------------------------------------------
    def poll(self, timeout_ms: int) -> None:
        if self.mirror:
            self.mirror.drain()
        self.bpf.ring_buffer_poll(timeout_ms)
        if self.mirror:
            self.mirror.drain()
        done, self._done = self._done, []
        for rd in done:
            self._finish_read(rd)
        self._retry_waiting()
        self.procs.expire()

    def flush(self) -> None:
        """Emit everything still waiting for a mirror match (at exit)."""
        if self.bpf is not None:
            self.bpf.ring_buffer_consume()
        if self.mirror:
            self.mirror.drain()
        done, self._done = self._done, []
        for rd in done:
            self._finish_read(rd)
        self._retry_waiting(final=True)

    def counters(self) -> dict[str, int]:
        out = dict(getattr(self, "_final", {}))
        out.update(self.stats)
        if self.bpf is not None:
            for i, name in enumerate(LOSS_NAMES):
                out[name] = sum(self.bpf["losses"][ctypes.c_int(i)])
        if self.mirror:
            out.update(self.mirror.counters)
        out["proc_unknown"] = self.procs.misses
        return out

    # -- ring buffer records -----------------------------------------------------------
    def _on_record(self, ctx, data, size) -> None:
        raw = ctypes.string_at(data, size)
        hdr = HDR.unpack_from(raw, 0)
        body = raw[HDR.size: HDR.size + hdr[H_LEN]]
        kind = hdr[H_KIND]
        if kind == REC_READ:
            tid = hdr[H_TID]
            rd = self._reads.get(tid)
            if hdr[H_OFFSET] == 0 or rd is None:
                rd = _Read(hdr)
                self._reads[tid] = rd
                self._done.append(rd)
            off = hdr[H_OFFSET]
            rd.data[off: off + len(body)] = body
        elif kind == REC_FAN_PATH:
            rd = self._reads.get(hdr[H_TID])
            if rd is not None:
                rd.paths.setdefault(hdr[H_TOTAL], []).append(_cstr(body))
        elif kind == REC_RESPONSE:
            # the read that delivered the permission event came earlier in the
            # ring buffer: decode it first so the response finds its tracee
            done, self._done = self._done, []
            for rd in done:
                self._finish_read(rd)
            self._on_response(hdr, body)
        elif kind == REC_ADD_WATCH:
            self._refresh(hdr[H_TGID], hdr[H_FD])
        elif kind == REC_FORK:
            self.procs.fork(hdr[H_TGID], hdr[H_PPID], _cstr(hdr[H_COMM]), hdr[H_UID], hdr[H_GID], hdr[H_MNTNS])
        elif kind == REC_EXEC:
            self.procs.exec(hdr[H_TGID], hdr[H_PPID], _cstr(hdr[H_COMM]), hdr[H_UID], hdr[H_GID], hdr[H_MNTNS], _cstr(body))
        elif kind == REC_EXIT:
            self.procs.exit(hdr[H_TGID])

    def _ts(self, mono_ns: int) -> int:
        return mono_ns + self._clock_offset

    def _tracer_fields(self, hdr) -> dict:
        pid = hdr[H_TGID]
        proc = self.procs.get(pid)
        parent = self.procs.get(hdr[H_PPID])
        return dict(
            timestamp=self._ts(hdr[H_TS]), tracer_pid=pid, tracer_tid=hdr[H_TID], tracer_ppid=hdr[H_PPID],
            tracer_uid=hdr[H_UID], tracer_gid=hdr[H_GID], tracer_mntns_id=hdr[H_MNTNS], tracer_comm=_cstr(hdr[H_COMM]),
            tracer_pcomm=parent.comm if parent else "", tracer_exe=proc.exe if proc else "",
            prio=hdr[H_PRIO])

    def _tracee_fields(self, pid: int) -> dict:
        proc = self.procs.get(pid)
        if proc is None:
            return dict(tracee_pid=pid)
        parent = self.procs.get(proc.ppid)
        return dict(tracee_pid=pid, tracee_ppid=proc.ppid, tracee_uid=proc.uid, tracee_gid=proc.gid,
                    tracee_mntns_id=proc.mntns, tracee_comm=proc.comm,
                    tracee_pcomm=parent.comm if parent else "", tracee_exe=proc.exe,
                    tracee_container_id=proc.container_id)

    def _emit(self, ev: Event) -> None:
        if self.filters.tracee_pids and ev.tracee_pid not in self.filters.tracee_pids:
            self.stats["filtered_tracee"] += 1
            return
        self.stats["emitted"] += 1
        self.emit(ev)

    def _finish_read(self, rd: _Read) -> None:
        self._reads.pop(rd.hdr[H_TID], None)
        try:
            if rd.hdr[H_LISTENER] == KIND_INOTIFY:
                self._inotify_read(rd)
            else:
                self._fanotify_read(rd)
        except (struct.error, ValueError):
            self.stats["decode_errors"] += 1

    # inotify: struct inotify_event { int wd; u32 mask, cookie, len; char name[]; }
    def _inotify_read(self, rd: _Read) -> None:
        hdr, data = rd.hdr, bytes(rd.data)
        pid, fd = hdr[H_TGID], hdr[H_FD]
        base = self._tracer_fields(hdr)
        off = 0
        while off + INOTIFY_EVENT.size <= len(data):
            wd, mask, cookie, nlen = INOTIFY_EVENT.unpack_from(data, off)
            name = _cstr(data[off + 16: off + 16 + nlen])
            off += 16 + nlen
            ev = Event(type="inotify", i_wd=wd, i_mask=mask, i_cookie=cookie,
                       i_mask_names=masks.inotify_mask_names(mask), name=name, **base)
            if mask & IN_Q_OVERFLOW:
                self._emit(ev)  # no tracee: the kernel dropped the events themselves
                continue
            watch = self._watch(pid, fd, wd)
            if watch is not None:
                wpath = self.mirror.path_of(watch) if self.mirror else ""
                ev.path = os.path.join(wpath, name) if wpath and name else wpath
                if name:
                    ev.i_ino_dir = watch.ino
                else:
                    ev.i_ino = watch.ino
            else:
                self.stats["watch_unknown"] += 1
            key = (watch.ino if watch else 0, name, mask, (pid, fd))
            if not self._try_match(ev, key):
                self._waiting.append((time.monotonic() + MATCH_WAIT_S, ev, key))

    def _watch(self, pid: int, fd: int, wd: int):
        listener = self._listeners.get((pid, fd))
        if listener is None or wd not in listener.watches:
            listener = self._refresh(pid, fd)
        return listener.watches.get(wd) if listener else None

    def _try_match(self, ev: Event, key) -> bool:
        ino, name, mask, consumer = key
        if not ino or self.mirror is None:
            return False
        pid = self.mirror.match(ino, name, mask, consumer)
        if not pid:
            return False
        for k, v in self._tracee_fields(pid).items():
            setattr(ev, k, v)
        ev.attribution = "inferred"
        self.stats["inotify_inferred"] += 1
        self._emit(ev)
        return True

    def _retry_waiting(self, final: bool = False) -> None:
        if not self._waiting:
            return
        now = time.monotonic()
        still = []
        for deadline, ev, key in self._waiting:
            if self._try_match(ev, key):
                continue
            if final or now >= deadline:
                self.stats["inotify_unmatched"] += 1
                self._emit(ev)  # attribution "unknown", tracee fields 0 / ""
            else:
                still.append((deadline, ev, key))
        self._waiting = still

    # fanotify: struct fanotify_event_metadata + optional info records
    def _fanotify_read(self, rd: _Read) -> None:
        hdr, data = rd.hdr, bytes(rd.data)
        pid, fd = hdr[H_TGID], hdr[H_FD]
        base = self._tracer_fields(hdr)
        listener = self._listeners.get((pid, fd)) or self._refresh(pid, fd)
        fan_flags = listener.fan_flags if listener else 0
        off = 0
        while off + FAN_META.size <= len(data):
            event_len, _v, _r, mlen, mask, efd, apid = FAN_META.unpack_from(data, off)
            if event_len < FAN_META.size:
                break
            ev = Event(type="fanotify", fa_mask=mask, fa_mask_names=masks.fanotify_mask_names(mask),
                       fa_pid=apid, fa_flags=fan_flags,
                       fa_f_flags=listener.fan_event_flags if listener else 0, **base)
            if mask & FAN_Q_OVERFLOW:
                ev.fa_type = "FANOTIFY_EVENT_TYPE_OVERFLOW"
            else:
                if mask & FAN_PERM_EVENTS:
                    ev.fa_type = "FANOTIFY_EVENT_TYPE_PATH_PERM"
                elif fan_flags & FAN_REPORT_FID_BITS:
                    ev.fa_type = "FANOTIFY_EVENT_TYPE_FID_NAME" if fan_flags & 0x800 else "FANOTIFY_EVENT_TYPE_FID"
                else:
                    ev.fa_type = "FANOTIFY_EVENT_TYPE_PATH"
                # fanotify reports the tgid (or the tid with FAN_REPORT_TID)
                ev.attribution = "exact"
                for k, v in self._tracee_fields(apid).items():
                    setattr(ev, k, v)
                if fan_flags & 0x100:  # FAN_REPORT_TID
                    ev.tracee_tid = apid
                comps = rd.paths.get(off)
                if comps and comps[-1] == "":
                    ev.path = "/" + "/".join(reversed(comps[:-1]))
                elif efd >= 0:
                    try:
                        ev.path = os.readlink(f"/proc/{pid}/fd/{efd}")
                    except OSError:
                        self.stats["fanotify_path_unresolved"] += 1
                else:
                    ev.path = self._fid_name(data[off + mlen: off + event_len])
                ev.name = ev.path
                if mask & FAN_PERM_EVENTS and efd >= 0:
                    self._fan_pending[(pid, efd)] = ev
            off += event_len
            self._emit(ev)

    @staticmethod
    def _fid_name(info: bytes) -> str:
        """The name of a FAN_REPORT_DFID_NAME event (relative to its directory)."""
        pos = 0
        while pos + 4 <= len(info):
            itype, _p, ilen = struct.unpack_from("=BBH", info, pos)
            if ilen < 4:
                break
            if itype in (2, 4, 5) and ilen >= 20:  # DFID_NAME, OLD_/NEW_DFID_NAME
                hbytes = struct.unpack_from("=I", info, pos + 12)[0]
                return _cstr(info[pos + 20 + hbytes: pos + ilen])
            pos += ilen
        return ""

    def _on_response(self, hdr, body: bytes) -> None:
        if hdr[H_RET] < 0:
            self.stats["response_failed"] += 1
            return
        efd, response = FAN_RESPONSE.unpack_from(body, 0)
        orig = self._fan_pending.pop((hdr[H_TGID], efd), None)
        if orig is None:
            self.stats["response_unmatched"] += 1
            tracee = {}
            fields = dict(fa_mask=0, path="", name="", fa_type="", fa_flags=0, fa_f_flags=0,
                          fa_pid=0, attribution="unknown")
        else:
            tracee = {k: getattr(orig, k) for k in Event.__struct_fields__ if k.startswith("tracee_")}
            fields = dict(fa_mask=orig.fa_mask, path=orig.path, name=orig.name, fa_type=orig.fa_type,
                          fa_flags=orig.fa_flags, fa_f_flags=orig.fa_f_flags, fa_pid=orig.fa_pid,
                          attribution="exact")
        ev = Event(type="fa_resp", fa_response=masks.fa_response_name(response),
                   fa_mask_names=masks.fanotify_mask_names(fields["fa_mask"]),
                   **fields, **tracee, **self._tracer_fields(hdr))
        self._emit(ev)
