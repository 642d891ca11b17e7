"""The exact correlator: backends `fentry` and `kprobe` (bpf/fsnotify_exact.bpf.c).

Both hook the fsnotify internals, keyed by the `struct fsnotify_event *`
between insertion (tracee context) and removal (tracer context), so the tracee
is known exactly. They differ only in how the hooks attach.

Everything that depends on the kernel version is decided in `kernel_layout()`:
function names, struct offsets (from the running kernel's BTF, never from the
headers bcc compiles with) and fanotify constants.

Records reach user space through a BPF ring buffer read via its mmap
(otel_fsnotify/ringbuf.py), a batch per poll: a fixed 224-byte header (HDR)
plus only the bytes of name (inotify) or path components (fanotify) the event
has. The inotify `path` (watched object's path + name) is resolved here, from
the tracer's watch in /proc/<pid>/fdinfo (otel_fsnotify/watchpath.py).
"""

from __future__ import annotations

import ctypes
import errno
import mmap
import os
import struct
import time

from ... import masks
from ...enrich import procs as procfs
from ...enrich.watches import WatchPaths
from ...event import Event
from ...kernel import bcc as bccenv
from ...kernel.btf import Btf, BtfError, KIND_FUNC, offset_macros
from ...kernel.ringbuf import RingReader
from ..base import Backend, BackendUnavailable

SOURCE = "fsnotify_exact.bpf.c"
# Bounded kernel memory per agent: the ring buffer (RINGBUF_PAGES pages = 32 MiB)
# + `pending` (MAX_PENDING x ~450 B = 7 MiB) + small per-tid/group maps.
MAX_PENDING = 16384     # events queued in kernel and not yet freed (all groups)
RINGBUF_PAGES = 8192    # 32 MiB: ~130,000 inotify records of ~250 B wait for the reader
PATH_DEPTH = 24

# struct out_event's fixed header (struct record + emission fields), in order;
# the BPF program asserts its size (OUT_HDR_SIZE). Variable tail follows.
_PROC = "6I16s16s"
HDR = struct.Struct("=4Q" + _PROC + _PROC + "12I" + "Q6I")

KIND_INOTIFY, KIND_FANOTIFY = 1, 2
REC_EVENT, REC_RESPONSE, REC_OVERFLOW = 1, 2, 3
# fs/notify/fanotify/fanotify.h: fanotify_perm_event.state values (#defines, not in BTF)
FAN_EVENT_ANSWERED = 2
# Slots of the per-CPU `counters` array, in the order of the CNT_* macros.
COUNTERS = ("emitted", "ringbuf_lost", "map_full", "tracee_unmatched", "ctx_map_full",
            "filtered", "flushed_on_close", "inotify_ctx_missing")

# Struct fields read by the BPF program: macro -> (struct, member path).
OFFSETS = {
    "OFF_TASK_REAL_PARENT": ("task_struct", "real_parent"),
    "OFF_TASK_TGID": ("task_struct", "tgid"),
    "OFF_TASK_COMM": ("task_struct", "comm"),
    "OFF_TASK_NSPROXY": ("task_struct", "nsproxy"),
    "OFF_NSPROXY_MNT_NS": ("nsproxy", "mnt_ns"),
    "OFF_MNT_NS_INUM": ("mnt_namespace", "ns.inum"),
    "OFF_INODE_INO": ("inode", "i_ino"),
    "OFF_GROUP_OPS": ("fsnotify_group", "ops"),
    "OFF_GROUP_PRIORITY": ("fsnotify_group", "priority"),
    "OFF_GROUP_SHUTDOWN": ("fsnotify_group", "shutdown"),
    "OFF_GROUP_OVERFLOW_EVENT": ("fsnotify_group", "overflow_event"),
    "OFF_GROUP_FAN_FLAGS": ("fsnotify_group", "fanotify_data.flags"),
    "OFF_GROUP_FAN_F_FLAGS": ("fsnotify_group", "fanotify_data.f_flags"),
    "OFF_OPS_HANDLE_EVENT": ("fsnotify_ops", "handle_event"),
    "OFF_INOTIFY_EVENT_MASK": ("inotify_event_info", "mask"),
    "OFF_INOTIFY_EVENT_WD": ("inotify_event_info", "wd"),
    "OFF_INOTIFY_EVENT_COOKIE": ("inotify_event_info", "sync_cookie"),
    "OFF_INOTIFY_EVENT_NAME_LEN": ("inotify_event_info", "name_len"),
    "OFF_INOTIFY_EVENT_NAME": ("inotify_event_info", "name"),
    "OFF_FANOTIFY_EVENT_MASK": ("fanotify_event", "mask"),
    "OFF_FANOTIFY_EVENT_PID": ("fanotify_event", "pid"),
    "OFF_PID_NR": ("pid", "numbers"),  # numbers[0].nr: nr is upid's first member
    "OFF_FA_PATH_EVENT_PATH": ("fanotify_path_event", "path"),
    "OFF_FA_PERM_EVENT_PATH": ("fanotify_perm_event", "path"),
    "OFF_FA_PERM_RESPONSE": ("fanotify_perm_event", "response"),
    "OFF_FA_PERM_STATE": ("fanotify_perm_event", "state"),
    "OFF_PATH_MNT": ("path", "mnt"),
    "OFF_PATH_DENTRY": ("path", "dentry"),
    "OFF_DENTRY_PARENT": ("dentry", "d_parent"),
    "OFF_DENTRY_NAME": ("dentry", "d_name.name"),
    "OFF_VFSMOUNT_ROOT": ("vfsmount", "mnt_root"),
    "OFF_MOUNT_MNT": ("mount", "mnt"),
    "OFF_MOUNT_PARENT": ("mount", "mnt_parent"),
    "OFF_MOUNT_MOUNTPOINT": ("mount", "mnt_mountpoint"),
}


class KernelLayout:
    """What this kernel looks like to the correlator (the one version switch)."""

    def __init__(self, btf: Btf):
        self.btf = btf
        # inotify's handler took the inode as an argument from 5.11 on.
        self.inotify_handle = ("inotify_handle_inode_event" if btf.has_func("inotify_handle_inode_event")
                               else "inotify_handle_event")
        # fsnotify_add_event became fsnotify_insert_event (with an insert callback) in 5.16.
        self.insert_event = ("fsnotify_insert_event" if btf.has_func("fsnotify_insert_event")
                             else "fsnotify_add_event")
        # The ops member that holds inotify's handler follows the same rename.
        self.ops_inotify_member = ("handle_inode_event" if btf.has_member("fsnotify_ops", "handle_inode_event")
                                   else "handle_event")
        try:
            types = btf.enum_members("fanotify_event_type")
        except BtfError:
            types = {name: i for i, name in enumerate(masks.FANOTIFY_EVENT_TYPES)}
        self.fa_types = {v: k for k, v in types.items()}
        self.fa_type_path = types.get("FANOTIFY_EVENT_TYPE_PATH", 2)
        self.fa_type_path_perm = types.get("FANOTIFY_EVENT_TYPE_PATH_PERM", 3)

    def fa_type_bits(self) -> tuple[int, int, int]:
        """(byte offset of the 32-bit word, shift, mask) of fanotify_event.type,
        a bitfield (`enum fanotify_event_type type:3` since 5.7)."""
        bit_off, bit_size = self.btf.bitfield("fanotify_event", "type")
        if bit_off % 32 + bit_size > 32:
            raise BtfError("fanotify_event.type straddles a 32-bit word in this kernel")
        return (bit_off // 32) * 4, bit_off % 32, (1 << bit_size) - 1

    def cflags(self) -> list[str]:
        flags = offset_macros(self.btf, OFFSETS)
        flags.append(f"-DOFF_OPS_INOTIFY_HANDLER={self.btf.offsetof('fsnotify_ops', self.ops_inotify_member)}")
        word, shift, mask = self.fa_type_bits()
        flags += [f"-DFA_TYPE_WORD={word}", f"-DFA_TYPE_SHIFT={shift}", f"-DFA_TYPE_MASK={mask}",
                  f"-DFA_TYPE_PATH={self.fa_type_path}", f"-DFA_TYPE_PATH_PERM={self.fa_type_path_perm}",
                  f"-DFN_INOTIFY_HANDLE={self.inotify_handle}", f"-DFN_INSERT_EVENT={self.insert_event}"]
        return flags


def _ksym(name: str) -> int:
    """Address of a text symbol from /proc/kallsyms (0 if absent or hidden)."""
    try:
        with open("/proc/kallsyms") as fh:
            for line in fh:
                parts = line.split()
                if len(parts) >= 3 and parts[2] == name:
                    return int(parts[0], 16)
    except OSError:
        pass
    return 0


# ---- capability checks (also used by `otel-fsnotify doctor`) ---------------

def kprobes_available() -> str | None:
    """None if this kernel has kprobes, else one line saying why not."""
    if os.path.exists("/sys/bus/event_source/devices/kprobe"):
        return None
    for tracefs in bccenv.TRACEFS_DIRS:
        if os.path.exists(os.path.join(tracefs, "kprobe_events")):
            return None
    return "this kernel has no kprobes (CONFIG_KPROBES is unset)"


class _ProgLoadAttr(ctypes.Structure):
    _fields_ = [("prog_type", ctypes.c_uint32), ("insn_cnt", ctypes.c_uint32),
                ("insns", ctypes.c_uint64), ("license", ctypes.c_uint64),
                ("log_level", ctypes.c_uint32), ("log_size", ctypes.c_uint32),
                ("log_buf", ctypes.c_uint64), ("kern_version", ctypes.c_uint32),
                ("prog_flags", ctypes.c_uint32), ("prog_name", ctypes.c_char * 16),
                ("prog_ifindex", ctypes.c_uint32), ("expected_attach_type", ctypes.c_uint32),
                ("prog_btf_fd", ctypes.c_uint32), ("func_info_rec_size", ctypes.c_uint32),
                ("func_info", ctypes.c_uint64), ("func_info_cnt", ctypes.c_uint32),
                ("line_info_rec_size", ctypes.c_uint32), ("line_info", ctypes.c_uint64),
                ("line_info_cnt", ctypes.c_uint32), ("attach_btf_id", ctypes.c_uint32),
                ("attach_prog_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint8 * 32)]


class _RawTpAttr(ctypes.Structure):
    _fields_ = [("name", ctypes.c_uint64), ("prog_fd", ctypes.c_uint32), ("_pad", ctypes.c_uint8 * 20)]


_SYS_BPF = 321  # x86_64
_BPF_PROG_LOAD, _BPF_RAW_TRACEPOINT_OPEN = 5, 17
_BPF_PROG_TYPE_TRACING, _BPF_TRACE_FENTRY = 26, 24


def probe_fentry_load(func: str = "fsnotify_destroy_event") -> str | None:
    """Load and attach a two-instruction fentry program on `func` (then detach).

    None if it worked, else one line naming what the kernel refused. This is a
    real load through bpf(2), not a guess from config.
    """
    try:
        btf = Btf.load()
    except BtfError as exc:
        return f"fentry needs kernel BTF: {exc}"
    btf_id = btf._by_name.get((KIND_FUNC, func))
    if not btf_id:
        return f"fentry: kernel BTF has no function {func}"
    libc = ctypes.CDLL(None, use_errno=True)
    insns = (ctypes.c_uint64 * 2)(0x00000000000000b7, 0x0000000000000095)  # r0 = 0; exit
    license_ = ctypes.create_string_buffer(b"GPL")
    log = ctypes.create_string_buffer(4096)
    attr = _ProgLoadAttr(prog_type=_BPF_PROG_TYPE_TRACING, insn_cnt=2,
                         insns=ctypes.addressof(insns), license=ctypes.addressof(license_),
                         log_level=1, log_size=len(log), log_buf=ctypes.addressof(log),
                         prog_name=b"probe_fentry", expected_attach_type=_BPF_TRACE_FENTRY,
                         attach_btf_id=btf_id)
    fd = libc.syscall(_SYS_BPF, _BPF_PROG_LOAD, ctypes.byref(attr), ctypes.sizeof(attr))
    if fd < 0:
        err = ctypes.get_errno()
        detail = log.value.decode(errors="replace").strip().splitlines()
        why = f" ({detail[-1]})" if detail else ""
        return (f"fentry program refused by the kernel: {errno.errorcode.get(err, err)} "
                f"{os.strerror(err)} loading a BPF_TRACE_FENTRY program{why}")
    try:
        tp = _RawTpAttr(name=0, prog_fd=fd)
        link = libc.syscall(_SYS_BPF, _BPF_RAW_TRACEPOINT_OPEN, ctypes.byref(tp), ctypes.sizeof(tp))
        if link < 0:
            err = ctypes.get_errno()
            return (f"fentry attach refused by the kernel (BPF trampoline): "
                    f"{errno.errorcode.get(err, err)} {os.strerror(err)}")
        os.close(link)
        return None
    finally:
        os.close(fd)


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


def _s(raw: bytes) -> str:
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")


class _ExeCache:
    """exe path and container id per pid, cached briefly (pids are reused)."""

    TTL = 5.0
    MAX = 4096

    def __init__(self):
        self._cache: dict[int, tuple[float, str, str]] = {}

    def get(self, pid: int) -> tuple[str, str]:
        if not pid:
            return "", ""
        now = time.monotonic()
        hit = self._cache.get(pid)
        if hit and now - hit[0] < self.TTL:
            return hit[1], hit[2]
        if len(self._cache) >= self.MAX:
            self._cache.clear()
        exe, cid = procfs.exe_path(pid), procfs.container_id(pid)
        self._cache[pid] = (now, exe, cid)
        return exe, cid


class _ExactBackend(Backend):
    use_fentry: bool = False
    description = "exact: tracee linked in the kernel by the struct fsnotify_event pointer"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bpf = None
        self._ring: RingReader | None = None
        self._layout: KernelLayout | None = None
        self._offset = boot_to_epoch_offset()
        self._exe = _ExeCache()
        self._paths = WatchPaths()
        self._str: dict[bytes, str] = {}
        self._mask_names: dict[tuple[bool, int], list[str]] = {}
        self._decode_errors = 0
        self._final_counters: dict[str, int] | None = None

    # -- loading -------------------------------------------------------------
    def _cflags(self) -> list[str]:
        layout = self._layout
        f = self.filters
        flags = layout.cflags() + [
            f"-DUSE_FENTRY={1 if self.use_fentry else 0}",
            f"-DMAX_PENDING={MAX_PENDING}", f"-DRINGBUF_PAGES={RINGBUF_PAGES}",
            f"-DPATH_DEPTH={PATH_DEPTH}", f"-DOUT_HDR_SIZE={HDR.size}",
            f"-DFILTER_INOTIFY_ONLY={int(f.inotify_only)}",
            f"-DFILTER_FANOTIFY_ONLY={int(f.fanotify_only)}",
            f"-DFILTER_GROUP={f.tracer_group}ULL" if f.tracer_group else "-DFILTER_GROUP=0",
            f"-DFILTER_TRACER_PIDS={int(bool(f.tracer_pids))}",
            f"-DFILTER_TRACEE_PIDS={int(bool(f.tracee_pids))}",
        ]
        inotify_fn = _ksym(layout.inotify_handle)
        fanotify_fn = _ksym("fanotify_handle_event")
        if not inotify_fn or not fanotify_fn:
            raise BackendUnavailable("cannot find inotify/fanotify handler addresses in /proc/kallsyms "
                                     "(kernel.kptr_restrict hides them?)")
        flags += [f"-DINOTIFY_HANDLER_ADDR={inotify_fn}ULL", f"-DFANOTIFY_HANDLER_ADDR={fanotify_fn}ULL"]
        return flags

    def _attach(self, b) -> None:
        """kprobe backend: attach by name (fentry programs are auto-attached by bcc)."""

    def start(self) -> None:
        reason = self.probe()
        if reason:
            raise BackendUnavailable(reason)
        try:
            self._layout = KernelLayout(Btf.load())
            cflags = self._cflags()
        except BtfError as exc:
            raise BackendUnavailable(str(exc)) from None
        try:
            self._bpf = bccenv.compile_bpf(SOURCE, cflags)
            self._attach(self._bpf)
        except bccenv.BccError as exc:
            raise BackendUnavailable(str(exc)) from None
        except Exception as exc:  # bcc attach errors are bare Exceptions
            raise BackendUnavailable(f"{self.name}: cannot attach: {exc}") from None
        b = self._bpf
        for table, pids in (("tracer_pids", self.filters.tracer_pids),
                            ("tracee_pids", self.filters.tracee_pids)):
            t = b[table]
            for pid in pids:
                t[t.Key(pid)] = t.Leaf(1)
        try:
            # read the ring through its mmap, a batch at a time (no per-record
            # ctypes callback)
            self._ring = RingReader(b["events"].map_fd, RINGBUF_PAGES * mmap.PAGESIZE)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot map the ring buffer: {exc}") from None
        self.log.info("%s backend attached (%s, %s)", self.name, self._layout.inotify_handle,
                      self._layout.insert_event)

    def poll(self, timeout_ms: int) -> None:
        if self._ring is None:
            return
        buf, recs = self._ring.read(timeout_ms)
        emit, decode = self.emit, self.decode
        for off, size in recs:
            try:
                ev = decode(buf, off, size)
            except Exception:  # never let one bad record stop the stream; counted
                self._decode_errors += 1
                self.log.exception("cannot decode an event")
                continue
            emit(ev)

    def counters(self) -> dict[str, int]:
        if self._bpf is None and self._final_counters is not None:
            return dict(self._final_counters)  # read after close()
        out = {name: 0 for name in COUNTERS}
        if self._bpf is not None:
            table = self._bpf["counters"]
            for i, name in enumerate(COUNTERS):
                out[name] = int(sum(table[ctypes.c_int(i)]))
        out["decode_errors"] = self._decode_errors
        out["inotify_path_unresolved"] = self._paths.unresolved
        return out

    def close(self) -> None:
        if self._bpf is not None:
            self._final_counters = self.counters()
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            self._bpf.cleanup()
            self._bpf = None
        self._paths.close()

    # -- decoding ------------------------------------------------------------
    def _text(self, raw: bytes) -> str:
        """comm bytes (NUL-padded) -> str, memoised: a few distinct values repeat."""
        s = self._str.get(raw)
        if s is None:
            s = _s(raw)
            if len(self._str) < 4096:
                self._str[raw] = s
        return s

    def _names(self, fanotify: bool, mask: int) -> list[str]:
        """Mask names, memoised per mask (a copy: an Event's list is its own)."""
        names = self._mask_names.get((fanotify, mask))
        if names is None:
            names = masks.fanotify_mask_names(mask) if fanotify else masks.inotify_mask_names(mask)
            if len(self._mask_names) < 4096:
                self._mask_names[(fanotify, mask)] = names
        return list(names)

    def decode(self, buf: bytes, off: int = 0, size: int | None = None) -> Event:
        """One ring record (HDR + tail) at buf[off:off+size] -> Event."""
        (ts_boot, _group, i_ino, i_ino_dir,
         ee_pid, ee_tid, ee_ppid, ee_uid, ee_gid, ee_mntns, ee_comm, ee_pcomm,
         er_pid, er_tid, er_ppid, er_uid, er_gid, er_mntns, er_comm, er_pcomm,
         kind, prio, i_wd, i_mask, i_cookie, fa_type, fa_mask, fa_pid, fa_flags, fa_f_flags,
         _name_len, _pad, ts_now, rtype, verdict, state, path_depth, path_complete,
         tail_len) = HDR.unpack_from(buf, off)
        if size is None:
            size = HDR.size + tail_len
        tail = buf[off + HDR.size: off + min(size, HDR.size + tail_len)]
        text = self._text
        tracer_exe, _ = self._exe.get(er_pid)
        tracee_exe, tracee_cid = self._exe.get(ee_pid)
        fanotify = kind == KIND_FANOTIFY
        answered = rtype == REC_RESPONSE
        ev = Event(
            timestamp=(ts_now if answered else ts_boot) + self._offset,
            type="fa_resp" if answered else ("fanotify" if fanotify else "inotify"),
            tracer_pid=er_pid, tracer_tid=er_tid, tracer_ppid=er_ppid,
            tracer_uid=er_uid, tracer_gid=er_gid, tracer_mntns_id=er_mntns,
            tracer_comm=text(er_comm), tracer_pcomm=text(er_pcomm), tracer_exe=tracer_exe,
            tracee_pid=ee_pid, tracee_tid=ee_tid, tracee_ppid=ee_ppid,
            tracee_uid=ee_uid, tracee_gid=ee_gid, tracee_mntns_id=ee_mntns,
            tracee_comm=text(ee_comm), tracee_pcomm=text(ee_pcomm), tracee_exe=tracee_exe,
            tracee_container_id=tracee_cid,
            prio=prio,
            attribution="exact" if ee_pid else "unknown",
        )
        if rtype == REC_OVERFLOW:
            if fanotify:
                ev.type, ev.fa_mask, ev.fa_mask_names = "fanotify", 0x4000, ["FAN_Q_OVERFLOW"]
                ev.fa_type = "FANOTIFY_EVENT_TYPE_OVERFLOW"
            else:
                ev.i_mask, ev.i_mask_names = 0x4000, ["IN_Q_OVERFLOW"]
            ev.attribution = "unknown"
            return ev
        if fanotify:
            path = ""
            if path_depth:
                parts = tail.split(b"\0")[:path_depth]
                path = "/" + "/".join(_s(p) for p in reversed(parts))
                if not path_complete:
                    path = "..." + path  # deeper than PATH_DEPTH: the head is unknown
            ev.fa_type = self._layout.fa_types.get(fa_type, masks.fanotify_event_type_name(fa_type))
            ev.fa_mask = fa_mask
            ev.fa_mask_names = self._names(True, fa_mask)
            ev.fa_pid = fa_pid
            ev.fa_flags = fa_flags
            ev.fa_f_flags = fa_f_flags
            ev.name = path
            ev.path = path if path_complete else ""
            if answered:
                if state != FAN_EVENT_ANSWERED:
                    ev.fa_response = "interrupted"
                else:
                    ev.fa_response = masks.fa_response_name(verdict)
        else:
            name = _s(tail) if tail else ""
            ev.i_wd = i_wd
            ev.i_mask = i_mask
            ev.i_mask_names = self._names(False, i_mask)
            ev.i_cookie = i_cookie
            ev.i_ino = i_ino
            ev.i_ino_dir = i_ino_dir
            ev.name = name
            watched = self._paths.dir_path(er_pid, i_wd, i_ino_dir, i_ino) if er_pid else ""
            if watched:
                ev.path = f"{watched}/{name}" if name else watched
        return ev


class FentryBackend(_ExactBackend):
    name = "fentry"
    use_fentry = True

    @classmethod
    def probe(cls) -> str | None:
        if not os.path.exists("/sys/kernel/btf/vmlinux"):
            return "fentry needs kernel BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF)"
        return None

    def start(self) -> None:
        # bcc reports a refused trampoline as a long multi-line error; load a
        # tiny program first so the user gets the kernel's one-line reason.
        reason = probe_fentry_load()
        if reason:
            raise BackendUnavailable(reason)
        super().start()


class KprobeBackend(_ExactBackend):
    name = "kprobe"
    use_fentry = False

    @classmethod
    def probe(cls) -> str | None:
        return kprobes_available()

    def _attach(self, b) -> None:
        lay = self._layout
        try:
            b.attach_kprobe(event=lay.inotify_handle, fn_name="on_inotify_handle_enter")
            b.attach_kretprobe(event=lay.inotify_handle, fn_name="on_handle_return")
            b.attach_kprobe(event=lay.insert_event, fn_name="on_insert_enter")
            b.attach_kprobe(event="fsnotify_remove_first_event", fn_name="on_remove_first_enter")
            b.attach_kretprobe(event="fsnotify_remove_first_event", fn_name="on_remove_first_return",
                               maxactive=256)
            b.attach_kprobe(event="fsnotify_destroy_event", fn_name="on_destroy_enter")
        except Exception as exc:
            raise bccenv.BccError(f"kprobe attach failed: {exc}") from None
