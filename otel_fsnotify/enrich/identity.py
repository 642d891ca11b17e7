"""The tracer and tracee fields of an Event, walked from event.PROCESS_FIELDS.

A role's fields come from the kernel where a ring record carries them (the
current task's struct proc_id: pid, tid, ppid, uid, gid, mntns_id, comm,
pcomm) plus what only /proc knows (exe, container id); or from the process
table (procs.py) for an actor the kernel record does not describe (the
tracepoint backend's tracees, known only by pid).
"""

from __future__ import annotations

from operator import attrgetter

import msgspec

from ..event import PROCESS_FIELDS, Event
from ..kernel.records import PROC_ID, cstr
from . import pods
from .procs import NO_CONTAINER, Container, Proc, ProcTable

MAX_CACHED = 4096  # identities remembered per cache (cleared when full)
_KERNEL_TEXT = frozenset(name for name, code in PROC_ID if code.endswith("s"))


class KernelProcess:
    """Reads one role's fields out of a ring record whose struct proc_id
    fields are named `prefix + name` (e.g. tracee_pid, proc_comm)."""

    def __init__(self, role: str, prefix: str, exe, cgroups=None, cgroup_field: str = ""):
        """exe: `get(pid, at_ns) -> (exe path, Container)` (the process table
        as of at_ns); cgroups, cgroup_field: a CgroupPaths and the record
        field holding the task's cgroup id, when the record says where the
        task was."""
        names = [name for name, _code in PROC_ID]
        self._get = attrgetter(*(prefix + name for name in names))
        self._keys = tuple(f"{role}_{name}" for name in names)
        self._text = tuple(name in _KERNEL_TEXT for name in names)
        self._exe_key = f"{role}_exe"
        self._tracee = role == "tracee"
        self._exe = exe
        self._cgroups = cgroups
        self._cgroup_of = attrgetter(cgroup_field) if cgroup_field else None
        self._strings: dict[bytes, str] = {}

    def _str(self, raw: bytes) -> str:
        """comm bytes -> str, memoised: a few distinct values repeat."""
        s = self._strings.get(raw)
        if s is None:
            s = cstr(raw)
            if len(self._strings) < MAX_CACHED:
                self._strings[raw] = s
        return s

    def fields(self, rec, at_ns: int = 0) -> dict:
        """The role's fields; exe and container id as of at_ns where the
        exe source keeps history (0: now)."""
        out = {key: (self._str(v) if text else v)
               for key, text, v in zip(self._keys, self._text, self._get(rec))}
        exe, container = self._exe.get(out[self._keys[0]], at_ns)
        out[self._exe_key] = exe
        if self._tracee:
            if self._cgroup_of is not None:
                here = self._cgroups.container(self._cgroup_of(rec))
                container = here if here.cgroup else container
            out.update(container_fields(container))
        return out


def container_fields(c) -> dict:
    """The tracee's container fields of an Event (procs.Container), with its
    pod's namespace and name where the node says them (pods.py)."""
    namespace, name = pods.pod_names.of(c.pod_uid)
    return {"tracee_container_id": c.id, "tracee_container_runtime": c.runtime,
            "tracee_pod_uid": c.pod_uid, "tracee_pod_namespace": namespace, "tracee_pod_name": name,
            "tracee_cgroup": c.cgroup}


def from_proc(role: str, proc: Proc, parent: Proc | None) -> dict:
    """One role's fields from the process table: everything it knows (the
    thread id is the event's to say)."""
    out = {}
    for name, _type, _default in PROCESS_FIELDS:
        if name == "pcomm":
            out[f"{role}_pcomm"] = parent.comm if parent else ""
        elif name != "tid":
            out[f"{role}_{name}"] = getattr(proc, name)
    if role == "tracee":
        out.update(container_fields(proc.container))
    return out


class Identities:
    """Cached role fields for a backend that learns tracers from ring records
    and tracees by pid (the tracepoint backend)."""

    def __init__(self, procs: ProcTable):
        self.procs = procs
        self._tracer = KernelProcess("tracer", "proc_", _ProcTableExe(procs))
        self._tracers: dict[tuple, Event] = {}  # tracer identity -> Event template
        self._tracees: dict[int, tuple[Proc, dict]] = {}  # pid -> (identity, its fields)
        # (tracer template, tracee fields, attribution) -> the template with all three
        self._pairs: dict[tuple, tuple[Event, dict, Event]] = {}

    def tracer(self, rec) -> Event:
        """An Event template holding the tracer's fields and the group
        priority of the record (cached per identity)."""
        key = (rec.proc_pid, rec.proc_tid, rec.proc_ppid, rec.proc_uid, rec.proc_gid, rec.proc_ruid,
               rec.proc_suid,
               rec.proc_mntns_id, rec.proc_comm, rec.prio)
        tmpl = self._tracers.get(key)
        if tmpl is None:
            tmpl = Event(**self._tracer.fields(rec), prio=rec.prio)
            if len(self._tracers) > MAX_CACHED:
                self._tracers.clear()
            self._tracers[key] = tmpl
        return tmpl

    def tracer_fields(self, rec) -> dict:
        """The tracer's fields alone (to put on an event another read began)."""
        tmpl = self.tracer(rec)
        return {k: getattr(tmpl, k) for k in _TRACER_KEYS}

    def tracee(self, pid: int, at_ns: int = 0) -> dict:
        """The tracee's fields by pid, as it was at at_ns (CLOCK_MONOTONIC:
        an exec after that does not count); just the pid when nobody knows it."""
        proc = self.procs.get(pid, at_ns)
        if proc is None:
            return {"tracee_pid": pid}  # not cached: /proc may know it next time
        cached = self._tracees.get(pid)
        if cached is not None and cached[0] is proc:
            return cached[1]
        fields = from_proc("tracee", proc, self.procs.get(proc.ppid, at_ns))
        if len(self._tracees) > 16 * MAX_CACHED:
            self._tracees.clear()
        self._tracees[pid] = (proc, fields)
        return fields

    def event(self, tmpl: Event, tracee: dict, attribution: str, fields: dict) -> Event:
        """The event of tracer template `tmpl` and `tracee` (fields from
        tracee()) with its own `fields`. A tracer and a tracee that meet
        again are put together once (tracee() keeps one dict per identity)."""
        if len(tracee) < 2:  # a bare pid: nobody knows it, nothing to keep
            return msgspec.structs.replace(tmpl, **fields, **tracee, attribution=attribution)
        key = (id(tmpl), id(tracee), attribution)
        pair = self._pairs.get(key)
        if pair is None or pair[0] is not tmpl or pair[1] is not tracee:  # ids are reused
            if len(self._pairs) > MAX_CACHED:
                self._pairs.clear()
            pair = self._pairs[key] = (
                tmpl, tracee, msgspec.structs.replace(tmpl, **tracee, attribution=attribution))
        return msgspec.structs.replace(pair[2], **fields)

    def tracee_queued(self, pid: int) -> dict:
        """The tracee fields of the next watch-group event of pid (see
        ProcTable.queued); just the pid when nobody knows it."""
        proc = self.procs.queued(pid)
        if proc is None:
            return {"tracee_pid": pid}
        return from_proc("tracee", proc, self.procs.get(proc.ppid))

    def exec_seen(self) -> None:
        """A process exec'd: a tracer's exe/comm may have changed. (Cached
        tracee fields need nothing: they are kept with the identity they
        describe, and a fork or exec makes a new one.)"""
        if self._tracers:
            self._tracers.clear()


_TRACER_KEYS = tuple(f"tracer_{name}" for name, _t, _d in PROCESS_FIELDS) + ("prio",)


class _ProcTableExe:
    """KernelProcess's exe source over the process table, as it is now."""

    def __init__(self, procs: ProcTable):
        self.procs = procs

    def get(self, pid: int, at_ns: int = 0) -> tuple[str, Container]:
        proc = self.procs.get(pid)
        return (proc.exe, proc.container) if proc else ("", NO_CONTAINER)
