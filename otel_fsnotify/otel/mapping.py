"""Event -> OpenTelemetry log record (design.md "OpenTelemetry log record").

`attributes()` is the single source of truth for a record's attribute set;
every protocol (gRPC, HTTP/protobuf via the SDK, HTTP/JSON via msgspec)
encodes what it returns. Unknown values (0 / "") are left out rather than
sent as if they were facts — except uid/gid 0 of a known process, which is root.
"""

from __future__ import annotations

import functools
import os
import pwd
import time
from typing import Any, NamedTuple

from msgspec.structs import astuple

from ..event import FIELD_NAMES, Event
from ..masks import action

SCOPE_NAME = "otel_fsnotify"

EVENT_NAMES = {
    "inotify": "fsnotify.inotify",
    "fanotify": "fsnotify.fanotify",
    "fa_resp": "fsnotify.fanotify.response",
    "fim": "fsnotify.fim",
}

SEVERITY_INFO = (9, "INFO")
SEVERITY_WARN = (13, "WARN")
# Event.severity (a watched path's, a rule's) -> OTel severity_number
SEVERITY_NUMBERS = {"trace": 1, "debug": 5, "info": 9, "warn": 13, "error": 17, "fatal": 21}

_INT64_MAX = (1 << 63) - 1

# Sigma rules known to this process: id -> (name, ruleset name), registered
# when they are loaded (agent.load_rules); an event names the ids it matched
# (Event.rules, most severe first) and its record carries security_rule.*.
_RULES: dict[str, tuple[str, str]] = {}


def register_rules(catalog: dict[str, tuple[str, str]]) -> None:
    _RULES.update(catalog)


@functools.lru_cache(maxsize=4096)
def user_name(uid: int) -> str:
    """The user name of uid on this host (the uid itself if it has none)."""
    try:
        return pwd.getpwuid(uid).pw_name
    except KeyError:
        return str(uid)


def event_name(ev: Event) -> str:
    return EVENT_NAMES.get(ev.type, f"fsnotify.{ev.type}")


def severity(ev: Event) -> tuple[int, str]:
    """(severity_number, severity_text): the event's own severity (a watched
    path's), else WARN for a denied permission event, else INFO."""
    if ev.severity:
        return SEVERITY_NUMBERS.get(ev.severity, 9), ev.severity.upper()
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
    if ev.type == "fim":
        change = f"{ev.action} {what}" + (f" (was {ev.old_path})" if ev.old_path else "")
        if ev.origin == "scan":
            return f"{change}: found by comparing with the baseline"
        return f"{change} by {_who(ev.tracee_comm, ev.tracee_pid)}"
    verb = action(mask(ev), fanotify=ev.type != "inotify")
    tracee = _who(ev.tracee_comm, ev.tracee_pid)
    tracer = _who(ev.tracer_comm, ev.tracer_pid)
    if ev.type == "fa_resp":
        verdict = {"allow": "allowed", "deny": "denied", "interrupted": "did not answer (interrupted)"}
        return f"{tracer} {verdict.get(ev.fa_response, ev.fa_response)} {verb} of {what} by {tracee}"
    return f"{tracee} {verb} {what}; read by {tracer}"


# One table per role: (event process field, attribute), in the order sent; a
# field whose value is unknown (0 / "") is left out. uid and gid follow the
# pid only when the process's identity was actually read (its comm comes
# with it): a bare pid leaves them unknown rather than claiming root.
TRACEE = (
    ("pid", "process.pid"),
    ("uid", "process.user.id"),  # effective (semconv)
    ("ruid", "process.real_user.id"),
    ("suid", "process.saved_user.id"),
    ("gid", "fsnotify.tracee.gid"),  # semconv has no process group id
    ("tid", "fsnotify.tracee.tid"),
    ("ppid", "process.parent_pid"),
    ("comm", "process.command"),  # the kernel's 15-character task name
    ("exe", "process.executable.path"),
    ("pcomm", "fsnotify.tracee.parent.executable.name"),
    ("mntns_id", "fsnotify.tracee.mntns_id"),
    ("cgroup", "process.linux.cgroup"),
)
# ...and where it runs: resource attributes, one ResourceLogs per container,
# so a collector's k8sattributes (pod_association by resource attribute) and
# SIEM joins find them where semantic conventions put them
CONTAINER = (
    ("tracee_container_id", "container.id"),
    ("tracee_container_runtime", "container.runtime"),
    ("tracee_pod_uid", "k8s.pod.uid"),
    ("tracee_pod_namespace", "k8s.namespace.name"),
    ("tracee_pod_name", "k8s.pod.name"),
)
WATCHER = (
    ("pid", "fsnotify.watcher.pid"),
    ("uid", "fsnotify.watcher.user.id"),
    ("ruid", "fsnotify.watcher.real_user.id"),
    ("suid", "fsnotify.watcher.saved_user.id"),
    ("gid", "fsnotify.watcher.group.id"),
    ("tid", "fsnotify.watcher.tid"),
    ("ppid", "fsnotify.watcher.parent_pid"),
    ("comm", "fsnotify.watcher.command"),
    ("exe", "fsnotify.watcher.executable.path"),
    ("pcomm", "fsnotify.watcher.parent.executable.name"),
    ("mntns_id", "fsnotify.watcher.mntns_id"),
)
_IDENTITY = frozenset(("uid", "gid", "ruid", "suid"))  # known only with pid and comm
_WIDE = frozenset(("mntns_id",))  # u64 in the kernel: may exceed int64


class _Role(NamedTuple):
    """One role's process fields as a run of the event's fields (its slice of
    msgspec.structs.astuple(ev)) and the rows of its attribute table, each
    (index in that run, attribute, identity?, wide?)."""

    fields: slice
    rows: tuple[tuple[int, str, bool, bool], ...]
    pid: int  # index of the pid in the run
    comm: int  # ...and of the comm


def _role(role: str, table) -> _Role:
    first = FIELD_NAMES.index(f"{role}_pid")
    last = max(i for i, name in enumerate(FIELD_NAMES) if name.startswith(f"{role}_"))
    run = FIELD_NAMES[first:last + 1]
    rows = tuple((run.index(f"{role}_{field}"), key, field in _IDENTITY, field in _WIDE)
                 for field, key in table)
    return _Role(slice(first, last + 1), rows, run.index(f"{role}_pid"), run.index(f"{role}_comm"))


_TRACEE_ROLE = _role("tracee", TRACEE)
_WATCHER_ROLE = _role("tracer", WATCHER)


def _process(values: tuple, role: _Role) -> dict[str, Any]:
    """One role's process attributes from its run of fields; the executable's
    name is the basename of its path (the 15-character comm is the command)."""
    a: dict[str, Any] = {}
    identified = bool(values[role.pid] and values[role.comm])
    for i, key, identity, wide in role.rows:
        value = values[i]
        if identity:
            if identified:
                a[key] = value
        elif value:
            a[key] = _i64(value) if wide else value
            if key.endswith("executable.path"):
                a[key[: -len("path")] + "name"] = os.path.basename(value)
    return a


# ----------------------------------------------------------- the record's parts
# attributes() is built from parts, in the order sent. A part whose inputs
# repeat from event to event (one process's identity, one kind of event) is a
# function of a key made from them, so an encoder can keep its encoded bytes
# per key (otel/parts.py); the rest (file, name, uid) is per event.


def tracee_key(t: tuple) -> tuple:
    """The key of the acting process's part (t: astuple of the event)."""
    return t[_TRACEE_ROLE.fields]


def tracee_part(key: tuple) -> dict[str, Any]:
    """The acting process: semantic conventions (process.*)."""
    a = _process(key, _TRACEE_ROLE)
    if key[_TRACEE_ROLE.pid] and key[_TRACEE_ROLE.comm]:
        a["process.user.name"] = user_name(a["process.user.id"])
    return a


def watcher_key(t: tuple) -> tuple:
    return t[_WATCHER_ROLE.fields]


def watcher_part(key: tuple) -> dict[str, Any]:
    """The watcher: no convention exists, so fsnotify.watcher.*."""
    return _process(key, _WATCHER_ROLE)


def details_key(ev: Event) -> tuple:
    """The key of what the kernel said about the event, but its name."""
    if ev.type == "inotify":
        return (ev.type, ev.i_mask, tuple(ev.i_mask_names), ev.i_wd, ev.i_cookie, ev.i_ino_dir)
    return (ev.type, ev.fa_mask, tuple(ev.fa_mask_names), ev.fa_type, ev.fa_response, ev.fa_pid,
            ev.fa_flags, ev.fa_f_flags)


def details_part(key: tuple) -> dict[str, Any]:
    """fsnotify.*: what the kernel said about the event (details_key)."""
    kind, m, names = key[:3]
    a: dict[str, Any] = {"fsnotify.type": kind, "fsnotify.mask": _i64(m)}
    if names:
        a["fsnotify.mask.names"] = list(names)
    a["fsnotify.action"] = action(m, fanotify=kind != "inotify")
    if kind == "inotify":
        wd, cookie, dir_ino = key[3:]
        a["fsnotify.inotify.wd"] = wd
        if cookie:
            a["fsnotify.inotify.cookie"] = _i64(cookie)
        if dir_ino:
            a["fsnotify.inotify.dir_inode"] = str(dir_ino)
    else:
        fa_type, response, fa_pid, flags, f_flags = key[3:]
        if fa_type:
            a["fsnotify.fanotify.type"] = fa_type
        a["fsnotify.fanotify.response"] = response
        if fa_pid:
            a["fsnotify.fanotify.pid"] = fa_pid
        if flags:
            a["fsnotify.fanotify.flags"] = _i64(flags)
        if f_flags:
            a["fsnotify.fanotify.f_flags"] = _i64(f_flags)
    return a


def link_key(ev: Event) -> tuple:
    return (ev.prio, ev.attribution)


def link_part(key: tuple) -> dict[str, Any]:
    """How the event was linked: its group's priority and the attribution."""
    return {"fsnotify.group.priority": key[0], "fsnotify.attribution": key[1]}


def rules_part(ids: tuple) -> dict[str, Any]:
    """semconv security_rule.* for the event's most severe rule; every id in
    fsnotify.rules."""
    a: dict[str, Any] = {"security_rule.uuid": ids[0]}
    name, ruleset = _RULES.get(ids[0], ("", ""))
    if name:
        a["security_rule.name"] = name
    if ruleset:
        a["security_rule.ruleset.name"] = ruleset
    a["fsnotify.rules"] = list(ids)
    return a


def file_part(ev: Event) -> dict[str, Any]:
    """file.* (semantic conventions)."""
    a: dict[str, Any] = {}
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
    if ev.host_path:  # the tracer is in another mount namespace (a container)
        a["fsnotify.host_path"] = ev.host_path
    if ev.i_ino and ev.type != "fim":  # watch mode's own file.inode is the file's after the change
        a["file.inode"] = str(ev.i_ino)
    return a


def record_parts(ev: Event, uid: str = "", command_line: str = "",
                 include_command_line: bool = False) -> list[tuple[Any, Any]]:
    """The record's attributes as parts, in the order sent: (build, key)
    where build(key) is the part's attributes, or (None, attributes) for a
    part of this event alone."""
    t = astuple(ev)
    parts: list[tuple[Any, Any]] = [(tracee_part, tracee_key(t))]
    if include_command_line and command_line:
        parts.append((None, {"process.command_line": command_line}))
    parts.append((None, file_part(ev)))
    if ev.type == "fim":
        parts.append((None, watched_file_part(ev)))
    else:
        parts.append((watcher_part, watcher_key(t)))
        parts.append((details_part, details_key(ev)))
        if ev.type == "inotify" and ev.name:
            parts.append((None, {"fsnotify.inotify.name": ev.name}))
        parts.append((link_part, link_key(ev)))
    if ev.rules:
        parts.append((rules_part, tuple(ev.rules)))
    if uid:
        parts.append((None, {"log.record.uid": uid}))
    return parts


def attributes(ev: Event, uid: str = "", command_line: str = "",
               include_command_line: bool = False) -> dict[str, Any]:
    """The record's attributes (the one place that decides them)."""
    a: dict[str, Any] = {}
    for build, key in record_parts(ev, uid, command_line, include_command_line):
        a.update(build(key) if build else key)
    return a


def resource_of(ev: Event) -> tuple[tuple[str, str], ...]:
    """The resource attributes this event adds to the agent's (its container);
    () outside any. Records are grouped by it."""
    if not ev.tracee_container_id:
        return ()
    return tuple((key, getattr(ev, field)) for field, key in CONTAINER if getattr(ev, field))


def watched_file_part(ev: Event) -> dict[str, Any]:
    """Watch mode: the file after the change (semconv file.*; hashes as
    ECS-style file.hash.<algo>, which semconv lacks) and what changed."""
    a: dict[str, Any] = {}
    if ev.file_mode or ev.file_ino:
        a["file.size"] = _i64(ev.file_size)
        a["file.mode"] = f"{ev.file_mode & 0o7777:04o}"
        a["file.owner.id"] = str(ev.file_uid)
        a["file.group.id"] = str(ev.file_gid)
        a["file.modified"] = _iso8601(ev.file_mtime)
        a["file.inode"] = str(ev.file_ino)
        a["fsnotify.file.type"] = _file_type(ev.file_mode)
    for algo, digest in ev.file_hashes.items():
        a[f"file.hash.{algo}"] = digest
    if ev.hash_skipped:
        a["fsnotify.hash_skipped"] = ev.hash_skipped
    a["fsnotify.type"] = "fim"
    a["fsnotify.action"] = ev.action
    a["fsnotify.origin"] = ev.origin
    if ev.old_path:
        a["fsnotify.old_path"] = ev.old_path
    if ev.tags:
        a["fsnotify.tags"] = list(ev.tags)
    if ev.fa_mask:
        a["fsnotify.mask"] = _i64(ev.fa_mask)
        a["fsnotify.mask.names"] = list(ev.fa_mask_names)
    a["fsnotify.attribution"] = ev.attribution
    return a


_FILE_TYPES = {0o100000: "file", 0o040000: "dir", 0o120000: "symlink", 0o020000: "char_device",
               0o060000: "block_device", 0o010000: "fifo", 0o140000: "socket"}


def _file_type(mode: int) -> str:
    return _FILE_TYPES.get(mode & 0o170000, "unknown")


def _iso8601(ns: int) -> str:
    secs, frac = divmod(ns, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{frac:09d}Z"


