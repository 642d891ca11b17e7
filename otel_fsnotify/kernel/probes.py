"""What this kernel and this process allow, tested for real where it is cheap:
the checks behind each backend's `probe()`, `otel-fsnotify doctor` and the
privilege check of `run`. Each returns None (or ok) or one line saying why not.
"""

from __future__ import annotations

import ctypes
import errno
import os
from typing import NamedTuple

from .bcc import TRACEFS_DIRS
from .btf import Btf, BtfError

BPF_MAP_TYPE_RINGBUF = 27

# include/uapi/linux/capability.h
CAPS = {"CAP_SYS_ADMIN": 21, "CAP_BPF": 39, "CAP_PERFMON": 38,
        "CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19}


def capabilities() -> tuple[bool, str]:
    eff = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
    have = [n for n, bit in CAPS.items() if eff >> bit & 1]
    missing = [n for n in CAPS if n not in have]
    ok = "CAP_SYS_ADMIN" in have or {"CAP_BPF", "CAP_PERFMON"} <= set(have)
    detail = "has " + (", ".join(have) or "none") + ("; missing " + ", ".join(missing) if missing else "")
    return ok, detail



def kprobes_available() -> str | None:
    """None if this kernel has kprobes, else one line saying why not."""
    if os.path.exists("/sys/bus/event_source/devices/kprobe"):
        return None
    for tracefs in TRACEFS_DIRS:
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


def lift_memlock_limit() -> bool:
    """Lift RLIMIT_MEMLOCK for this process. Kernels before 5.11 charge BPF
    maps and programs to it (later ones to the memory cgroup): at its usual
    8 MiB a second agent's loads fail with EPERM. Needs CAP_SYS_RESOURCE
    above the hard limit; False if refused (the loads may still fit)."""
    import resource

    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
        return True
    except (OSError, ValueError):
        return False


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
    btf_id = btf.func_id(func)
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


def tracepoints_available() -> str | None:
    """None if the syscall and sched tracepoints and x86_64 registers the
    tracepoint backend reads are here, else why not."""
    for tp in ("syscalls/sys_enter_read", "sched/sched_process_exec"):
        if not any(os.path.exists(f"{d}/events/{tp}") for d in TRACEFS_DIRS):
            # tracefs may just be unmounted; kernel/bcc.py mounts it at start
            if not os.path.isdir("/sys/kernel/tracing"):
                return "tracefs (syscall and sched tracepoints) is not available"
    if os.uname().machine != "x86_64":
        return f"reads syscall arguments from x86_64 pt_regs; this machine is {os.uname().machine}"
    if os.geteuid() != 0:
        return "needs root (CAP_BPF, CAP_PERFMON, CAP_SYS_ADMIN for fanotify)"
    return None


class MapMemory(NamedTuple):
    """The kernel memory of the BPF maps a process holds (fdinfo `memlock`)."""

    total: int  # bytes, every map
    maps: int  # how many
    ring: int  # bytes of the ring buffers among them


def bpf_map_memory(pid: str = "self") -> MapMemory:
    """Sum the `memlock` of every BPF map pid holds (by map id: a map may
    have several fds). Before 6.4 the kernel counts a hash map's keys and
    values only, not its own per-element overhead."""
    total = maps = ring = 0
    seen = set()
    base = f"/proc/{pid}/fdinfo"
    for fd in os.listdir(base):
        try:
            with open(f"{base}/{fd}") as fh:
                info = dict(line.split(":", 1) for line in fh if ":" in line)
        except OSError:
            continue
        key = info.get("map_id", fd)  # 5.10 and earlier: one fd per map here
        if "map_type" not in info or "memlock" not in info or key in seen:
            continue
        seen.add(key)
        size = int(info["memlock"])
        if int(info["map_type"]) == BPF_MAP_TYPE_RINGBUF:
            # before 6.4 (map_mem_usage) memlock is key + value bytes times
            # max_entries: 0 for a ring, whose max_entries is its data size
            size = max(size, int(info.get("max_entries", 0)))
            ring += size
        total += size
        maps += 1
    return MapMemory(total, maps, ring)
