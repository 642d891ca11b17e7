"""`--output table`: events as a person reads them.

By default each row shows what applies to its type, in seven columns:

    TIME          TYPE      TRACER               TRACEE               EVENT                       ATTRIB    PATH
    14:02:11.483  inotify   inotifywait[812]     touch[9120]          IN_CLOSE_WRITE              inferred  /etc/motd

TRACER and TRACEE are comm[pid]; EVENT is the mask by name (inotify's
IN_*, fanotify's FAN_* and its verdict, watch mode's action); PATH is the
full path (inotify's name when the path is unknown). `--fields` picks any
event field instead (masks by name, lists joined with `|`), and these
columns by name too; `--fields help` lists them all. On a terminal the
columns fit its width and are coloured (not with NO_COLOR set).
"""

from __future__ import annotations

import os
import time
from typing import IO

from . import masks
from .event import FIELD_NAMES, PROCESS_FIELDS, TRACEE_ONLY_FIELDS, Event, utf8_text

# the table's own columns, made from several fields: name -> (width, help)
COLUMNS: dict[str, tuple[int, str]] = {
    "time": (12, "local time the event happened, to the millisecond"),
    "tracer": (20, "the watcher that read the event, comm[pid]"),
    "tracee": (20, "the process whose file operation caused it (the actor), comm[pid]; ?[0] when unknown"),
    "event": (26, "what happened, by name: IN_* (inotify), FAN_* and the verdict (fanotify), "
                  "the action (watch mode)"),
    "attrib": (9, "how the actor was found: exact, inferred or unknown"),
}
DEFAULT_COLUMNS = ("time", "type", "tracer", "tracee", "event", "attrib", "path")
MASK_FIELDS = {"i_mask": False, "fa_mask": True}  # field -> fanotify names
WIDE_FIELDS = {"name", "path", "host_path", "old_path", "tracer_exe", "tracee_exe", "tracee_cgroup"}
MIN_LAST = 24  # the last column keeps at least this many characters

# one line per event field, for --fields help (the process fields once per role)
_PROCESS_HELP = {
    "pid": "process id (thread group id)", "tid": "thread id", "ppid": "parent's pid",
    "uid": "effective uid", "gid": "effective gid", "ruid": "real uid", "suid": "saved set-user-id",
    "mntns_id": "mount namespace inode", "comm": "command name (15 bytes at most)",
    "pcomm": "the parent's command name", "exe": "full path of the executable",
    "container_id": "container id, from the cgroup path", "container_runtime": "containerd, cri-o, docker...",
    "pod_uid": "Kubernetes pod uid", "pod_namespace": "Kubernetes pod namespace", "pod_name": "Kubernetes pod name",
    "cgroup": "cgroup v2 path",
}
_EVENT_HELP = {
    "timestamp": "ns since the epoch when the actor caused it",
    "type": "inotify, fanotify, fa_resp (a permission verdict) or fim (watch mode)",
    "prio": "the fsnotify group's priority", "i_wd": "inotify watch descriptor (-1: queue overflow)",
    "i_mask": "inotify mask (shown by name)", "i_cookie": "inotify rename cookie",
    "i_ino": "inode of the file", "i_ino_dir": "inode of the watched directory",
    "i_mask_names": "inotify mask names", "fa_type": "fanotify event class",
    "fa_mask": "fanotify mask (shown by name)", "fa_pid": "pid fanotify reported",
    "fa_flags": "fanotify_init flags of the group", "fa_f_flags": "fanotify_init event_f_flags",
    "fa_mask_names": "fanotify mask names", "fa_response": "permission verdict: allow, deny, interrupted, na",
    "name": "inotify: name in the watched directory; fanotify: full path",
    "path": "full path as the watcher sees it", "host_path": "the same path in the agent's mount namespace",
    "attribution": "exact, inferred or unknown", "action": "watch mode: created, modified, deleted, renamed, attributes",
    "origin": "watch mode: live or scan", "old_path": "renamed: the path before",
    "file_size": "size after the change", "file_mode": "st_mode", "file_uid": "file owner uid",
    "file_gid": "file group id", "file_mtime": "ns since the epoch", "file_ino": "inode number",
    "file_hashes": "content hashes by algorithm", "hash_skipped": "why no hash: too_large, vanished...",
    "tags": "the watched path's tags", "severity": "the record's severity when not the default",
    "rules": "ids of the Sigma rules the event matched",
}


def field_help() -> dict[str, str]:
    """Every name --fields takes, with one line each."""
    out = {name: help_ for name, (_w, help_) in COLUMNS.items()}
    for role in ("tracer", "tracee"):
        for name, _t, _d in PROCESS_FIELDS + (TRACEE_ONLY_FIELDS if role == "tracee" else ()):
            out[f"{role}_{name}"] = f"{role}: {_PROCESS_HELP[name]}"
    for name in FIELD_NAMES:
        out.setdefault(name, _EVENT_HELP.get(name, ""))
    return out


TABLE_FIELDS = tuple(field_help())  # every name --fields accepts


# C0 and C1 control characters and DEL, as \xNN: a file name is anyone's to
# choose, and an escape sequence in one must not move the cursor or forge rows
_CONTROLS = {c: f"\\x{c:02x}" for c in (*range(0x20), 0x7F, *range(0x80, 0xA0))}


def printable(text: str) -> str:
    """text safe to write to a terminal: bytes that were not UTF-8 and
    control characters written as \\xNN."""
    if text.isprintable() and text.isascii():
        return text
    return utf8_text(text).translate(_CONTROLS)


def _who(comm: str, pid: int) -> str:
    return f"{comm or '?'}[{pid}]"


def _event_text(ev: Event) -> str:
    if ev.type == "inotify":
        return "|".join(ev.i_mask_names) or f"0x{ev.i_mask:x}"
    if ev.type == "fim":
        return ev.action + (f" from {ev.old_path}" if ev.old_path else "")
    text = "|".join(ev.fa_mask_names) or f"0x{ev.fa_mask:x}"
    return text if ev.fa_response == "na" else f"{text} {ev.fa_response}"


def cell(ev: Event, field: str) -> str:
    """One column's text for an event, printable."""
    return printable(_text(ev, field))


def _text(ev: Event, field: str) -> str:
    if field == "time":
        secs, ns = divmod(ev.timestamp, 1_000_000_000)
        return time.strftime("%H:%M:%S", time.localtime(secs)) + f".{ns // 1_000_000:03d}"
    if field == "tracer":
        return _who(ev.tracer_comm, ev.tracer_pid)
    if field == "tracee":
        return _who(ev.tracee_comm, ev.tracee_pid)
    if field == "event":
        return _event_text(ev)
    if field == "attrib":
        return ev.attribution
    if field == "path":
        return ev.path or ev.name
    value = getattr(ev, field)
    if field in MASK_FIELDS:
        return "|".join(masks.names(value, MASK_FIELDS[field])) if value else "0"
    if isinstance(value, list):
        return "|".join(value)
    if isinstance(value, dict):
        return ",".join(f"{k}:{v}" for k, v in value.items())
    return str(value)


# ANSI SGR codes
_RED, _GREEN, _YELLOW, _CYAN, _MAGENTA, _DIM, _BOLD = "31", "32", "33", "36", "35", "2", "1"
_TYPE_COLOR = {"inotify": _CYAN, "fanotify": _MAGENTA, "fa_resp": _MAGENTA, "fim": _YELLOW}
_ACTION_COLOR = {"created": _GREEN, "deleted": _RED, "renamed": _YELLOW, "modified": _YELLOW}


def _color(ev: Event, field: str) -> str:
    if field == "type":
        return _TYPE_COLOR.get(ev.type, "")
    if field == "event":
        if ev.fa_response == "deny":
            return _RED
        return _ACTION_COLOR.get(ev.action, "") if ev.type == "fim" else ""
    if field in ("attrib", "attribution") and ev.attribution == "unknown":
        return _DIM
    if field in ("path", "name") and ev.rules:
        return _BOLD + ";" + _RED  # a rule matched: the row a person looks for
    return ""


def wants_color(fh: IO) -> bool:
    """Colour on a terminal, unless NO_COLOR is set (no-color.org) or TERM=dumb."""
    return (hasattr(fh, "isatty") and fh.isatty() and not os.environ.get("NO_COLOR")
            and os.environ.get("TERM") != "dumb")


def _columns(fh: IO) -> int:
    """The width of fh's terminal: COLUMNS when set, else the terminal's own
    (120 when it says 0, as a terminal of no size does)."""
    try:
        return int(os.environ.get("COLUMNS", "")) or 120
    except ValueError:
        pass
    try:
        return os.get_terminal_size(fh.fileno()).columns or 120
    except (OSError, ValueError, AttributeError):
        return 120


def _fit(text: str, width: int, left: bool) -> str:
    """text cut to width with "…" (paths keep their end: the file's name)."""
    if len(text) <= width:
        return text
    return "…" + text[len(text) - width + 1:] if left else text[: width - 1] + "…"


class Table:
    """Rows of columns for one stream: widths fixed per column, the last
    one taking what the terminal has left."""

    def __init__(self, fields: list[str], fh: IO):
        self.fields = list(fields) if fields else list(DEFAULT_COLUMNS)
        self.widths = [self._width(f) for f in self.fields]
        self.tty = hasattr(fh, "isatty") and fh.isatty()
        self.color = wants_color(fh)
        self.last_width = 0
        if self.tty:
            self._fit_to(_columns(fh) - 1)

    def _fit_to(self, columns: int) -> None:
        """Narrow the widest columns (not below their header, nor time's)
        until the last keeps MIN_LAST; it takes what is left."""
        w = self.widths
        floor = [12 if f == "time" else max(len(f), 6) for f in self.fields]
        over = sum(w[:-1]) + len(w) - 1 + MIN_LAST - columns
        while over > 0:
            i = max(range(len(w) - 1), key=lambda k: w[k] - floor[k], default=None)
            if i is None or w[i] <= floor[i]:
                break
            w[i] -= 1
            over -= 1
        self.last_width = max(MIN_LAST, columns - sum(w[:-1]) - (len(w) - 1))

    @staticmethod
    def _width(field: str) -> int:
        if field in COLUMNS:
            return max(len(field), COLUMNS[field][0])
        if field == "type":
            return 8
        return max(len(field), 34 if field in WIDE_FIELDS else 20 if "mask" in field else 8)

    def header(self) -> str:
        return self._join([f.upper() for f in self.fields], None)

    def row(self, ev: Event) -> str:
        return self._join([cell(ev, f) for f in self.fields], ev)

    def _join(self, cells: list[str], ev: Event | None) -> str:
        last = len(cells) - 1
        parts = []
        for i, (text, width) in enumerate(zip(cells, self.widths)):
            field = self.fields[i]
            if i == last:
                if self.last_width:
                    text = _fit(text, self.last_width, field in WIDE_FIELDS)
                pad = text
            else:
                text = _fit(text, width, field in WIDE_FIELDS)
                pad = text.ljust(width)
            if self.color:
                code = _color(ev, field) if ev is not None else _BOLD
                if code:
                    pad = f"\x1b[{code}m{text}\x1b[0m" + pad[len(text):]
            parts.append(pad)
        return " ".join(parts)
