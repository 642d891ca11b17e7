"""Find inotify / fanotify listeners and their watches in /proc/*/fdinfo.

Covers listeners that were already running when the agent started, and lets
the agent rescan one process after an inotify_add_watch(2).
"""

from __future__ import annotations

import os
import re

import msgspec

PROC = "/proc"

_WATCH = re.compile(
    r"inotify wd:(?P<wd>[0-9a-f]+) ino:(?P<ino>[0-9a-f]+) sdev:(?P<sdev>[0-9a-f]+) "
    r"mask:(?P<mask>[0-9a-f]+) ignored_mask:[0-9a-f]+"
    r"(?: fhandle-bytes:(?P<hbytes>[0-9a-f]+) fhandle-type:(?P<htype>[0-9a-f]+) f_handle:(?P<handle>[0-9a-f]+))?")
_FAN = re.compile(r"fanotify flags:(?P<flags>[0-9a-f]+) event-flags:(?P<eflags>[0-9a-f]+)")


class Watch(msgspec.Struct, frozen=True):
    wd: int
    ino: int
    sdev: int  # kernel-internal dev_t: major << 20 | minor
    mask: int
    handle_type: int = 0
    handle: bytes = b""  # exportfs file handle, as the kernel encodes it


class Listener(msgspec.Struct):
    pid: int
    fd: int
    kind: str  # "inotify" | "fanotify"
    watches: dict[int, Watch] = {}  # wd -> Watch (inotify)
    fan_flags: int = 0  # fanotify_init flags (fanotify)
    fan_event_flags: int = 0  # fanotify_init event_f_flags


def parse_fdinfo(pid: int, fd: int, text: str) -> Listener | None:
    """A Listener from the text of /proc/<pid>/fdinfo/<fd>, None if it is neither."""
    if "inotify wd:" in text:
        watches = {}
        for m in _WATCH.finditer(text):
            watches[int(m["wd"], 16)] = Watch(
                wd=int(m["wd"], 16), ino=int(m["ino"], 16), sdev=int(m["sdev"], 16),
                mask=int(m["mask"], 16), handle_type=int(m["htype"] or "0", 16),
                handle=bytes.fromhex(m["handle"] or ""))
        return Listener(pid=pid, fd=fd, kind="inotify", watches=watches)
    m = _FAN.search(text)
    if m:
        return Listener(pid=pid, fd=fd, kind="fanotify", fan_flags=int(m["flags"], 16),
                        fan_event_flags=int(m["eflags"], 16))
    return None


def _fd_kind(pid: int, fd: str) -> str | None:
    try:
        target = os.readlink(f"{PROC}/{pid}/fd/{fd}")
    except OSError:
        return None
    if target == "anon_inode:inotify":
        return "inotify"
    if target == "anon_inode:[fanotify]":
        return "fanotify"
    return None


def read_listener(pid: int, fd: int) -> Listener | None:
    """Re-read one listener fd (after inotify_add_watch), None if gone."""
    if not _fd_kind(pid, str(fd)):
        return None
    try:
        with open(f"{PROC}/{pid}/fdinfo/{fd}") as fh:
            return parse_fdinfo(pid, fd, fh.read())
    except OSError:
        return None


def scan_pid(pid: int) -> list[Listener]:
    try:
        fds = os.listdir(f"{PROC}/{pid}/fd")
    except OSError:
        return []
    found = []
    for fd in fds:
        if _fd_kind(pid, fd):
            listener = read_listener(pid, int(fd))
            if listener:
                found.append(listener)
    return found


def scan(skip_pid: int = 0) -> list[Listener]:
    """Every inotify / fanotify fd of every process (but skip_pid)."""
    found = []
    for entry in os.listdir(PROC):
        if entry.isdigit() and int(entry) != skip_pid:
            found.extend(scan_pid(int(entry)))
    return found
