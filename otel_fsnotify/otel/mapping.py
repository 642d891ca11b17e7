"""Event -> OpenTelemetry log record (design.md "OpenTelemetry log record").

`attributes()` is the single source of truth for a record's attribute set;
every protocol (gRPC, HTTP/protobuf via the SDK, HTTP/JSON via msgspec)
encodes what it returns. Unknown values (0 / "") are left out rather than
sent as if they were facts — except uid/gid 0 of a known process, which is root.
"""

from __future__ import annotations

import os
from typing import Any

from ..event import Event
from ..masks import action

SCOPE_NAME = "otel_fsnotify"

EVENT_NAMES = {
    "inotify": "fsnotify.inotify",
    "fanotify": "fsnotify.fanotify",
    "fa_resp": "fsnotify.fanotify.response",
}

SEVERITY_INFO = (9, "INFO")
SEVERITY_WARN = (13, "WARN")

_INT64_MAX = (1 << 63) - 1


def event_name(ev: Event) -> str:
    return EVENT_NAMES.get(ev.type, f"fsnotify.{ev.type}")


def severity(ev: Event) -> tuple[int, str]:
    """(severity_number, severity_text): a denied permission event is WARN."""
    return SEVERITY_WARN if ev.fa_response == "deny" else SEVERITY_INFO


def _i64(v: int) -> int | str:
    # OTLP ints are int64; a u64 beyond that would make the whole request fail.
    return v if -_INT64_MAX - 1 <= v <= _INT64_MAX else str(v)


def _who(comm: str, pid: int) -> str:
    if not pid and not comm:
        return "unknown process"
    return f"{comm or '?'} (pid {pid})" if pid else comm


def file_path(ev: Event) -> str:
    if ev.path:
        return ev.path
    if ev.type != "inotify" and ev.name.startswith("/"):
        return ev.name  # fanotify: name is the full path
    return ""


def mask(ev: Event) -> int:
    return ev.i_mask if ev.type == "inotify" else ev.fa_mask


def mask_names(ev: Event) -> list[str]:
    return ev.i_mask_names if ev.type == "inotify" else ev.fa_mask_names


def body(ev: Event) -> str:
    """A short human line, e.g. ``touch (pid 12) create /tmp/x; read by inotifywait (pid 9)``."""
    what = file_path(ev) or ev.name or "(no name)"
    verb = action(mask(ev), fanotify=ev.type != "inotify")
    tracee = _who(ev.tracee_comm, ev.tracee_pid)
    tracer = _who(ev.tracer_comm, ev.tracer_pid)
    if ev.type == "fa_resp":
        verdict = {"allow": "allowed", "deny": "denied", "interrupted": "did not answer (interrupted)"}
        return f"{tracer} {verdict.get(ev.fa_response, ev.fa_response)} {verb} of {what} by {tracee}"
    return f"{tracee} {verb} {what}; read by {tracer}"


def attributes(ev: Event, uid: str = "", command_line: str = "",
               include_command_line: bool = False) -> dict[str, Any]:
    """The record's attributes (the one place that decides them)."""
    a: dict[str, Any] = {}
    # the acting process (tracee): semantic conventions
    if ev.tracee_pid:
        a["process.pid"] = ev.tracee_pid
    if ev.tracee_pid and ev.tracee_comm:
        # uid/gid 0 is root only when the process's identity was actually read
        # (comm comes with it); a bare pid leaves them unknown.
        a["process.user.id"] = ev.tracee_uid
        a["fsnotify.tracee.gid"] = ev.tracee_gid
    if ev.tracee_tid:  # unknown for some inotify events of the tracepoint backend: not invented
        a["fsnotify.tracee.tid"] = ev.tracee_tid
    if ev.tracee_ppid:
        a["process.parent_pid"] = ev.tracee_ppid
    if ev.tracee_comm:
        a["process.executable.name"] = ev.tracee_comm
    if ev.tracee_exe:
        a["process.executable.path"] = ev.tracee_exe
    if ev.tracee_pcomm:
        a["fsnotify.tracee.parent.executable.name"] = ev.tracee_pcomm
    if ev.tracee_mntns_id:
        a["fsnotify.tracee.mntns_id"] = _i64(ev.tracee_mntns_id)
    if ev.tracee_container_id:
        a["container.id"] = ev.tracee_container_id
    if include_command_line and command_line:
        a["process.command_line"] = command_line

    # the file
    path = file_path(ev)
    if path:
        a["file.path"] = path
        d, n = os.path.split(path)
        if n:
            a["file.name"] = n
        if d:
            a["file.directory"] = d
    elif ev.name:
        a["file.name"] = ev.name
    if ev.i_ino:
        a["file.inode"] = str(ev.i_ino)

    # the watcher (tracer): no convention exists, so fsnotify.watcher.*
    if ev.tracer_pid:
        a["fsnotify.watcher.pid"] = ev.tracer_pid
    if ev.tracer_pid and ev.tracer_comm:
        a["fsnotify.watcher.user.id"] = ev.tracer_uid
        a["fsnotify.watcher.group.id"] = ev.tracer_gid
    if ev.tracer_tid:
        a["fsnotify.watcher.tid"] = ev.tracer_tid
    if ev.tracer_ppid:
        a["fsnotify.watcher.parent_pid"] = ev.tracer_ppid
    if ev.tracer_comm:
        a["fsnotify.watcher.executable.name"] = ev.tracer_comm
    if ev.tracer_exe:
        a["fsnotify.watcher.executable.path"] = ev.tracer_exe
    if ev.tracer_pcomm:
        a["fsnotify.watcher.parent.executable.name"] = ev.tracer_pcomm
    if ev.tracer_mntns_id:
        a["fsnotify.watcher.mntns_id"] = _i64(ev.tracer_mntns_id)

    # event details
    m = mask(ev)
    a["fsnotify.type"] = ev.type
    a["fsnotify.mask"] = _i64(m)
    names = mask_names(ev)
    if names:
        a["fsnotify.mask.names"] = list(names)
    a["fsnotify.action"] = action(m, fanotify=ev.type != "inotify")
    if ev.type == "inotify":
        a["fsnotify.inotify.wd"] = ev.i_wd
        if ev.i_cookie:
            a["fsnotify.inotify.cookie"] = _i64(ev.i_cookie)
        if ev.i_ino_dir:
            a["fsnotify.inotify.dir_inode"] = str(ev.i_ino_dir)
        if ev.name:
            a["fsnotify.inotify.name"] = ev.name
    else:
        if ev.fa_type:
            a["fsnotify.fanotify.type"] = ev.fa_type
        a["fsnotify.fanotify.response"] = ev.fa_response
        if ev.fa_pid:
            a["fsnotify.fanotify.pid"] = ev.fa_pid
        if ev.fa_flags:
            a["fsnotify.fanotify.flags"] = _i64(ev.fa_flags)
        if ev.fa_f_flags:
            a["fsnotify.fanotify.f_flags"] = _i64(ev.fa_f_flags)
    a["fsnotify.group.priority"] = ev.prio
    a["fsnotify.attribution"] = ev.attribution
    if uid:
        a["log.record.uid"] = uid
    return a
