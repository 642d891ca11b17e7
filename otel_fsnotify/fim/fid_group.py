"""The agent's own fanotify group for watch mode, in file-handle mode.

One `FAN_MARK_FILESYSTEM` per filesystem holding a watched path: no inotify
watch and no per-directory mark, so a tree of any size costs one mark, and a
directory created after start is covered from its first file. Events carry
the directory's file handle and the entry's name (`FAN_REPORT_DFID_NAME`,
5.9); a rename is one event with both names (`FAN_RENAME`, 5.17) or, before
that, a `FAN_MOVED_FROM` followed by a `FAN_MOVED_TO` (paired in changes.py).

Everything else on those filesystems arrives too: the monitor drops it by
path before any other work. The kernel merges events of one object and one
process while they wait in the queue (`FAN_CREATE|FAN_MODIFY|FAN_CLOSE_WRITE`
as one event), which the session logic expects.
"""

from __future__ import annotations

import errno
import os
from typing import NamedTuple

from ..kernel.abi import (
    FAN_ATTRIB, FAN_CLASS_NOTIF, FAN_CLOEXEC, FAN_CLOSE_WRITE, FAN_CREATE, FAN_DELETE,
    FAN_DELETE_SELF, FAN_EVENT_INFO_TYPE_DFID, FAN_EVENT_INFO_TYPE_DFID_NAME,
    FAN_EVENT_INFO_TYPE_NEW_DFID_NAME, FAN_EVENT_INFO_TYPE_OLD_DFID_NAME, FAN_INFO_HDR,
    FAN_MARK_ADD, FAN_MARK_FILESYSTEM, FAN_METADATA, FAN_MODIFY, FAN_MOVE_SELF, FAN_MOVED_FROM,
    FAN_MOVED_TO, FAN_NONBLOCK, FAN_ONDIR, FAN_RENAME, FAN_REPORT_DFID_NAME, FILE_HANDLE_HDR,
    O_LARGEFILE, O_RDONLY, fanotify_init, fanotify_mark, fsid)

# what a change to a watched file can look like
CHANGE_EVENTS = (FAN_CREATE | FAN_DELETE | FAN_MODIFY | FAN_CLOSE_WRITE | FAN_ATTRIB
                 | FAN_DELETE_SELF | FAN_MOVE_SELF | FAN_ONDIR)
READ_BYTES = 256 * 1024


class WatchUnavailable(RuntimeError):
    """This kernel or filesystem cannot give watch mode (one line)."""


class Handle(NamedTuple):
    """A directory as fanotify names it: filesystem id, handle type, handle."""

    fsid: bytes
    htype: int
    handle: bytes


class RawChange(NamedTuple):
    """One event as read: the kernel's mask, the actor's pid, and where."""

    mask: int
    pid: int
    dir: Handle | None  # the directory holding name (or the object itself: name ".")
    name: str
    old_dir: Handle | None = None  # FAN_RENAME: where it came from
    old_name: str = ""


def _dfid_name(buf: bytes, pos: int, end: int) -> tuple[Handle, str]:
    """An info record's (directory handle, name) (struct
    fanotify_event_info_fid: header, fsid, struct file_handle, name)."""
    fs = bytes(buf[pos + 4: pos + 12])
    size, htype = FILE_HANDLE_HDR.unpack_from(buf, pos + 12)
    start = pos + 12 + FILE_HANDLE_HDR.size
    handle = bytes(buf[start: start + size])
    raw = bytes(buf[start + size: end])
    name = os.fsdecode(raw.split(b"\0", 1)[0])
    return Handle(fs, htype, handle), name


def parse(buf: bytes) -> list[RawChange]:
    """The events of one read(2), in queue order."""
    out = []
    off = 0
    unpack = FAN_METADATA.unpack_from
    while off + FAN_METADATA.size <= len(buf):
        event_len, _v, _r, mlen, mask, _fd, pid = unpack(buf, off)
        if event_len < FAN_METADATA.size or off + event_len > len(buf):
            break
        pos, end = off + mlen, off + event_len
        where = old = None
        name = old_name = ""
        while pos + FAN_INFO_HDR.size <= end:
            itype, _p, ilen = FAN_INFO_HDR.unpack_from(buf, pos)
            if ilen < FAN_INFO_HDR.size or pos + ilen > end:
                break
            if itype in (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_NEW_DFID_NAME,
                         FAN_EVENT_INFO_TYPE_DFID):
                where, name = _dfid_name(buf, pos, pos + ilen)
                if itype == FAN_EVENT_INFO_TYPE_DFID:
                    name = "."
            elif itype == FAN_EVENT_INFO_TYPE_OLD_DFID_NAME:
                old, old_name = _dfid_name(buf, pos, pos + ilen)
            pos += ilen
        out.append(RawChange(mask, pid, where, name, old, old_name))
        off += event_len
    return out


class FidGroup:
    """The group, its marks (one per filesystem), and reading it."""

    def __init__(self):
        try:
            self.fd = fanotify_init(FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_DFID_NAME,
                                    O_RDONLY | O_LARGEFILE)
        except OSError as exc:
            if exc.errno == errno.EINVAL:
                raise WatchUnavailable("watch mode needs fanotify FAN_REPORT_DFID_NAME (Linux 5.9 or "
                                       "later); this kernel refuses it") from None
            if exc.errno == errno.EPERM:
                raise WatchUnavailable("watch mode needs CAP_SYS_ADMIN (fanotify filesystem marks)") from None
            raise WatchUnavailable(f"watch mode: {exc.strerror}") from None
        self.rename_event = True  # FAN_RENAME, learnt at the first mark
        self.fsids: dict[bytes, str] = {}  # filesystem id -> the watched path marked for it

    @property
    def mask(self) -> int:
        moves = FAN_RENAME if self.rename_event else FAN_MOVED_FROM | FAN_MOVED_TO
        return CHANGE_EVENTS | moves

    def mark(self, path: str) -> bytes:
        """Mark the filesystem holding path (once per filesystem); its id.
        WatchUnavailable (one line) when it refuses file-handle marks."""
        fs = fsid(path)
        if fs in self.fsids:
            return fs
        try:
            fanotify_mark(self.fd, FAN_MARK_ADD | FAN_MARK_FILESYSTEM, self.mask, path)
        except OSError as exc:
            if exc.errno == errno.EINVAL and self.rename_event:
                self.rename_event = False  # before 5.17: FAN_MOVED_FROM + FAN_MOVED_TO
                return self.mark(path)
            raise WatchUnavailable(_mark_refused(path, exc)) from None
        self.fsids[fs] = path
        return fs

    def read(self) -> list[RawChange]:
        """What is queued now (never blocks)."""
        out: list[RawChange] = []
        while True:
            try:
                buf = os.read(self.fd, READ_BYTES)
            except BlockingIOError:
                return out
            if not buf:
                return out
            out.extend(parse(buf))
            if len(buf) < READ_BYTES // 2:
                return out

    def close(self) -> None:
        if self.fd >= 0:
            os.close(self.fd)
            self.fd = -1


def _mark_refused(path: str, exc: OSError) -> str:
    why = {
        errno.ENODEV: "its filesystem has no filesystem id (tmpfs before 5.13, some FUSE)",
        errno.EOPNOTSUPP: "its filesystem cannot encode file handles",
        errno.EXDEV: "it is on a filesystem that reports no events here (a subvolume or overlay)",
        errno.ENOENT: "no such file or directory",
        errno.EPERM: "needs CAP_SYS_ADMIN",
    }.get(exc.errno, exc.strerror)
    return f"cannot watch {path}: {why} ({errno.errorcode.get(exc.errno, exc.errno)})"
