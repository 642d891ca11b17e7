"""What every backend provides: the hooks behind one `--backend` choice.

A backend loads its BPF program, applies the in-kernel filters, and returns
the Events it decoded from each `poll()`. It never drops an event without
counting it: every counter it returns from `counters()` is reported by the
agent and exported as a metric.
"""

from __future__ import annotations

import abc
import ctypes
import logging
import os
from typing import ClassVar

import msgspec

from ..enrich.procs import pidns_id
from ..kernel.ringbuf import MAX_BATCH, RingReader
from ..event import Event

MAX_PID_FILTERS = 64  # entries of each program's pid filter map (config.py checks it)


class Filters(msgspec.Struct, frozen=True):
    """In-kernel filters (the seed gadget's flags)."""

    tracer_pids: tuple[int, ...] = ()
    tracee_pids: tuple[int, ...] = ()
    tracer_group: int = 0  # struct fsnotify_group address, 0 = any
    inotify_only: bool = False
    fanotify_only: bool = False
    fim_only: bool = False  # only the agent's own watch group (run --fim-only)
    # only actors in this cgroup v2 directory or below (--cgroup, --pod-uid...:
    # enrich/scope.py kernel_cgroup), where the backend can test it in the kernel
    scope_cgroup: str = ""
    # by name and uid (--tracer-comm, --comm, --exclude-comm, --uid): in the
    # kernel where the backend knows the process there, always in user space
    # too (enrich/selection.py)
    tracer_comms: tuple[str, ...] = ()
    tracee_comms: tuple[str, ...] = ()
    exclude_comms: tuple[str, ...] = ()
    tracee_uids: tuple[int, ...] = ()


# The initial pid namespace's inode (PROC_PID_INIT_INO): fixed by the kernel.
INIT_PIDNS_INUM = 0xEFFFFFFC


def own_pidns_cflags() -> list[str]:
    """AGENT_PIDNS_INUM when the agent runs in a pid namespace of its own (a
    pod without hostPID): the programs then number pids as its /proc does."""
    inum = pidns_id("self")
    return [] if inum in (0, INIT_PIDNS_INUM) else [f"-DAGENT_PIDNS_INUM={inum}"]


def filter_cflags(f: Filters, tracee_pids_in_kernel: bool = True) -> list[str]:
    """The FILTER_* macros of bpf/fsnotify_common.h, for either program, and
    the agent's pid namespace (own_pidns_cflags)."""
    return own_pidns_cflags() + [
        f"-DFILTER_INOTIFY_ONLY={int(f.inotify_only)}",
        f"-DFILTER_FANOTIFY_ONLY={int(f.fanotify_only)}",
        f"-DFILTER_GROUP={f.tracer_group}ULL",
        f"-DFILTER_TRACER_PIDS={int(bool(f.tracer_pids) or f.fim_only)}",
        f"-DFILTER_TRACEE_PIDS={int(bool(f.tracee_pids) and tracee_pids_in_kernel)}",
        f"-DFILTER_TRACER_COMMS={int(bool(f.tracer_comms))}",
        f"-DFILTER_TRACEE_COMMS={int(bool(f.tracee_comms) and tracee_pids_in_kernel)}",
        f"-DFILTER_EXCLUDE_COMMS={int(bool(f.exclude_comms) and tracee_pids_in_kernel)}",
        f"-DFILTER_TRACEE_UIDS={int(bool(f.tracee_uids) and tracee_pids_in_kernel)}",
        f"-DMAX_PID_FILTERS={MAX_PID_FILTERS}",
    ]


def fill_pid_filters(bpf, f: Filters, tracee_pids_in_kernel: bool = True) -> None:
    """Put the --tracer-pid / --tracee-pid tgids into the program's maps. A
    tracer filter always lets the agent itself through: its watch group's
    events are how the exact backends name the actors of watch mode."""
    tracers = f.tracer_pids + (os.getpid(),) if f.tracer_pids or f.fim_only else ()
    tables = [("tracer_pids", tracers)]
    if tracee_pids_in_kernel:
        tables.append(("tracee_pids", f.tracee_pids))
    for table, pids in tables:
        for pid in pids:
            bpf[table][ctypes.c_uint32(pid)] = ctypes.c_uint8(1)
    names = [("tracer_comms", f.tracer_comms)]
    if tracee_pids_in_kernel:
        names += [("tracee_comms", f.tracee_comms), ("exclude_comms", f.exclude_comms)]
        for uid in f.tracee_uids:
            bpf["tracee_uids"][ctypes.c_uint32(uid)] = ctypes.c_uint8(1)
    for table, comms in names:
        for comm in comms:  # NUL-padded, as bpf_get_current_comm() writes it
            key = bpf[table].Key()
            ctypes.memmove(ctypes.addressof(key), comm.encode()[:15].ljust(16, b"\0"), 16)
            bpf[table][key] = ctypes.c_uint8(1)


class BackendUnavailable(RuntimeError):
    """This kernel cannot run the backend; the message names the missing feature."""


# The ring buffer the kernel side writes and the agent reads: what absorbs a
# burst while the agent is busy. Larger loses fewer events in a storm
# (ringbuf_lost), at that much kernel memory, locked, for as long as it runs.
DEFAULT_RING_MIB = 4


class Backend(abc.ABC):
    name: ClassVar[str]
    #: what `attribution` this backend can claim for its tracee
    description: ClassVar[str]
    #: the agent's own watch-mode fanotify group (-1: none), set before start()
    own_group_fd: int = -1
    #: bytes of the ring buffer to user space (a power of two), set before start()
    ring_bytes: int = DEFAULT_RING_MIB << 20
    #: whether Filters.scope_cgroup is tested in the kernel (else only in user space)
    scope_in_kernel: ClassVar[bool] = False
    #: the ring buffer's reader, once started (None without one)
    _ring: RingReader | None = None

    def __init__(self, filters: Filters, log: logging.Logger | None = None):
        if filters.inotify_only and filters.fanotify_only:
            raise BackendUnavailable("--inotify-only and --fanotify-only exclude each other")
        self.filters = filters
        self.log = log or logging.getLogger(f"otel_fsnotify.backend.{self.name}")

    @classmethod
    @abc.abstractmethod
    def probe(cls) -> str | None:
        """Check without compiling: None if this kernel can run it, else the reason."""

    @abc.abstractmethod
    def start(self) -> None:
        """Compile, load and attach. Raise BackendUnavailable with one clear line."""

    @abc.abstractmethod
    def poll(self, timeout_ms: int) -> list[Event]:
        """The events decoded since the last call, waiting at most timeout_ms
        for the first one: one batch of the ring at most (see `behind`)."""

    @property
    def behind(self) -> bool:
        """The last poll left records ready in the ring: poll again (at once)
        before acting on the whole of what came before them."""
        return self._ring is not None and self._ring.more

    def catch_up(self, sink) -> None:
        """Poll at once while the last poll left records ready, each poll's
        events to sink: every record committed before the call is read by the
        end. Bounded by one ring's worth of batches, so a storm that keeps
        the ring full does not hold the caller longer."""
        for _ in range(self.ring_bytes // MAX_BATCH + 1):
            if not self.behind:
                return
            sink(self.poll(0))

    @abc.abstractmethod
    def counters(self) -> dict[str, int]:
        """Cumulative counts: events emitted, and every way an event was lost or
        left unmatched (e.g. ringbuf_lost, map_full, tracee_unmatched)."""

    def close(self) -> list[Event]:
        """Detach and free kernel resources; returns the events still held
        (e.g. waiting for a match), finished as well as they can be."""
        return []

    def fim_actor(self, pid: int, mask: int, wanted: bool) -> tuple[dict, int] | None:
        """The actor of the next event read from the agent's watch group, in
        queue order: (tracee fields with `attribution`, the event's time in ns
        or 0 if unknown), None when not wanted. Each backend names it from
        what it keeps (this default knows only the pid)."""
        if not wanted or pid <= 0:
            return None
        return {"tracee_pid": pid, "attribution": "inferred"}, 0
