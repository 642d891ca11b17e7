"""The exact correlator: backends `fentry` and `kprobe` (bpf/fsnotify_exact.bpf.c).

Both hook the fsnotify internals, keyed by the `struct fsnotify_event *`
between insertion (tracee context) and removal (tracer context), so the tracee
is known exactly. They differ only in how the hooks attach.

What depends on the kernel version (function names, struct offsets, fanotify
constants) comes from kernel/layout.py; the record and its decoding are in
records.py. Records reach user space through a BPF ring buffer read via its
mmap (kernel/ringbuf.py), a batch per poll.
"""

from __future__ import annotations

import ctypes
import itertools
import mmap
import os
from collections import deque

from ...enrich.identity import from_proc
from ...enrich.procs import ProcTable
from ...enrich.watches import WatchPaths
from ...event import Event
from ...kernel import bcc
from ...kernel.btf import BtfError
from ...kernel.layout import KernelLayout
from ...kernel.probes import kprobes_available, probe_fentry_load
from ...kernel.ringbuf import RingReader
from ..base import Backend, BackendUnavailable, fill_pid_filters, filter_cflags
from .records import COUNTERS, OUT_EVENT, Decoder

SOURCE = "fsnotify_exact.bpf.c"
# Bounded kernel memory per agent: the ring buffer (Backend.ring_bytes, 4 MiB
# by default: ~16,000 inotify records of ~250 B wait for the reader)
# + `pending` (MAX_PENDING x ~510 B with the hash map's own = 2 MiB) + small
# per-tid/group maps (~1 MiB): under 8 MiB, which `doctor` measures.
MAX_PENDING = 4096      # events queued in kernel and not yet read (all groups; past it: pending_map_full)
PATH_STEPS = 28         # dentries and mount crossings walked per fanotify path
EXPIRE_EVERY = 64       # polls between expiries of exited processes
OWN_KEPT = 1 << 17      # the agent's own read records kept for watch mode (oldest dropped)
OWN_LOOKAHEAD = 64      # records looked past for a watch event's own (a lost one is skipped)
_TRACEE_KEYS = tuple(f for f in Event.__struct_fields__ if f.startswith("tracee_"))


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


class _ExactBackend(Backend):
    use_fentry: bool = False
    description = "exact: tracee linked in the kernel by the struct fsnotify_event pointer"
    scope_in_kernel = True

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self._bpf = None
        self._ring: RingReader | None = None
        self._paths = WatchPaths()
        self.decoder: Decoder | None = None
        self._decode_errors = 0
        self._final_counters: dict[str, int] = {}  # the kernel's, at close()
        # the agent's own reads (its watch group), in read order, waiting for
        # watch mode to take their actors (fim_actor)
        self._self = os.getpid()
        self._own: deque[Event] = deque(maxlen=OWN_KEPT)
        self._own_unmatched = 0
        self._polls = 0

    # -- loading -------------------------------------------------------------
    def _cflags(self, layout: KernelLayout) -> list[str]:
        inotify_fn = _ksym(layout.inotify_handle)
        fanotify_fn = _ksym("fanotify_handle_event")
        if not inotify_fn or not fanotify_fn:
            raise BackendUnavailable("cannot find inotify/fanotify handler addresses in /proc/kallsyms "
                                     "(kernel.kptr_restrict hides them?)")
        return layout.exact_cflags() + filter_cflags(self.filters) + [
            f"-DUSE_FENTRY={1 if self.use_fentry else 0}",
            f"-DMAX_PENDING={MAX_PENDING}", f"-DRINGBUF_PAGES={self.ring_bytes // mmap.PAGESIZE}",
            f"-DPATH_STEPS={PATH_STEPS}", OUT_EVENT.size_macro("OUT_HDR_SIZE"),
            f"-DSELF_TGID={self._self}", f"-DFILTER_SCOPE={int(bool(self.filters.scope_cgroup))}",
            f"-DINOTIFY_HANDLER_ADDR={inotify_fn}ULL", f"-DFANOTIFY_HANDLER_ADDR={fanotify_fn}ULL",
        ]

    def _attach(self, b, layout: KernelLayout) -> None:
        """kprobe backend: attach by name (fentry programs are auto-attached by bcc)."""

    def start(self) -> None:
        try:
            layout = KernelLayout.load()
            cflags = self._cflags(layout)
        except BtfError as exc:
            raise BackendUnavailable(str(exc)) from None
        try:
            self._bpf = bcc.compile_bpf(SOURCE, cflags)
            self._attach(self._bpf, layout)
        except bcc.BccError as exc:
            raise BackendUnavailable(str(exc)) from None
        except Exception as exc:  # bcc attach errors are bare Exceptions
            raise BackendUnavailable(f"{self.name}: cannot attach: {exc}") from None
        fill_pid_filters(self._bpf, self.filters)
        if self.filters.scope_cgroup:
            try:
                self._bpf["scope_cgroup"][0] = self.filters.scope_cgroup
            except OSError as exc:
                raise BackendUnavailable(f"--cgroup: cannot open {self.filters.scope_cgroup}: "
                                         f"{exc.strerror}") from None
        procs = ProcTable()
        procs.seed()  # attached first: a process born meanwhile is in the feed
        self.decoder = Decoder(layout, self._paths, procs)
        try:
            # read the ring through its mmap, a batch at a time (no per-record
            # ctypes callback)
            self._ring = RingReader(self._bpf["events"].map_fd, self.ring_bytes)
        except (OSError, ValueError) as exc:
            raise BackendUnavailable(f"cannot map the ring buffer: {exc}") from None
        self.log.info("%s backend attached (%s, %s)", self.name, layout.inotify_handle,
                      layout.insert_event)

    def poll(self, timeout_ms: int) -> list[Event]:
        if self._ring is None:
            return []
        buf, recs = self._ring.read(timeout_ms)
        self._polls += 1
        if self._polls % EXPIRE_EVERY == 0:
            self.decoder.procs.expire()
        decode = self.decoder.decode
        events = []
        own = self._self
        for off, size in recs:
            try:
                ev = decode(buf, off, size)
            except Exception:  # never let one bad record stop the stream; counted
                self._decode_errors += 1
                self.log.exception("cannot decode an event")
                continue
            if ev is None:
                continue  # the process table's feed
            if ev.tracer_pid == own:
                self._own.append(ev)  # watch mode's: not another listener's event
            else:
                events.append(ev)
        return events

    def fim_actor(self, pid: int, mask: int, wanted: bool) -> tuple[dict, int] | None:
        """The record the kernel made when the agent read this event from its
        watch group: the tracee as it was when it caused the event, and when.
        Records and events come in the same order; one missing (ring buffer
        loss) is stepped over and counted (fim_actor_unmatched)."""
        own = self._own
        for i, ev in enumerate(itertools.islice(own, OWN_LOOKAHEAD)):
            if ev.fa_pid == pid and ev.fa_mask == mask & 0xFFFFFFFF:  # the mask as read
                for _ in range(i):
                    own.popleft()
                self._own_unmatched += i
                own.popleft()
                if not wanted:
                    return None
                return {k: getattr(ev, k) for k in _TRACEE_KEYS} | {"attribution": ev.attribution}, ev.timestamp
        self._own_unmatched += 1
        if not wanted or pid <= 0:
            return None
        procs = self.decoder.procs  # as the process table knows it now
        proc = procs.get(pid)
        fields = from_proc("tracee", proc, procs.get(proc.ppid)) if proc else {"tracee_pid": pid}
        return {**fields, "attribution": "inferred"}, 0

    def counters(self) -> dict[str, int]:
        out = dict(self._final_counters) or {name: 0 for name in COUNTERS}
        if self._bpf is not None:
            table = self._bpf["counters"]
            for i, name in enumerate(COUNTERS):
                out[name] = int(sum(table[ctypes.c_int(i)]))
        out["decode_errors"] = self._decode_errors
        out["fim_actor_unmatched"] = self._own_unmatched
        out["inotify_path_unresolved"] = self._paths.unresolved
        return out

    def close(self) -> list[Event]:
        events = []
        if self._bpf is not None:
            events = self.poll(0)  # what the kernel already queued
            self.catch_up(events.extend)
            self._final_counters = {k: v for k, v in self.counters().items() if k in COUNTERS}
            if self._ring is not None:
                self._ring.close()
                self._ring = None
            self._bpf.cleanup()
            self._bpf = None
        self._paths.close()
        return events


class FentryBackend(_ExactBackend):
    name = "fentry"
    use_fentry = True

    @classmethod
    def probe(cls) -> str | None:
        # bcc reports a refused trampoline as a long multi-line error; a tiny
        # program loaded first gives the user the kernel's one-line reason.
        if not os.path.exists("/sys/kernel/btf/vmlinux"):
            return "fentry needs kernel BTF (/sys/kernel/btf/vmlinux; CONFIG_DEBUG_INFO_BTF)"
        return probe_fentry_load()


class KprobeBackend(_ExactBackend):
    name = "kprobe"
    use_fentry = False

    @classmethod
    def probe(cls) -> str | None:
        return kprobes_available()

    def _attach(self, b, lay: KernelLayout) -> None:
        try:
            b.attach_kprobe(event=lay.inotify_handle, fn_name="on_inotify_handle_enter")
            b.attach_kretprobe(event=lay.inotify_handle, fn_name="on_handle_return")
            b.attach_kprobe(event=lay.insert_event, fn_name="on_insert_enter")
            b.attach_kprobe(event="fsnotify_remove_first_event", fn_name="on_remove_first_enter")
            b.attach_kretprobe(event="fsnotify_remove_first_event", fn_name="on_remove_first_return",
                               maxactive=256)
            b.attach_kprobe(event="fsnotify_destroy_event", fn_name="on_destroy_enter")
        except Exception as exc:
            raise bcc.BccError(f"kprobe attach failed: {exc}") from None
