"""The agent's own fanotify group mirroring inotify watches, to find the actor.

inotify events do not say which process caused them. For every inotify watch
found (fdinfo: ino, sdev, file handle), the agent opens the same object with
open_by_handle_at and puts a fanotify mark on it with the watch's events, in a
group reporting the directory file handle + name and the object's file handle
(FAN_REPORT_DFID_NAME | FAN_REPORT_FID). fanotify events carry the actor's pid,
so an inotify event a tracer reads is matched to the mirror event of the same
object, name and event bit: attribution "inferred".
"""

from __future__ import annotations

import os
import struct
import time
from bisect import bisect_left
from collections import deque

from ..kernel.abi import (
    FAN_CLASS_NOTIF, FAN_CLOEXEC, FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_FID,
    FAN_EVENT_ON_CHILD, FAN_INFO_HANDLE_AT, FAN_INFO_HDR, FAN_MARK_ADD, FAN_MARK_REMOVE,
    FAN_METADATA, FAN_NONBLOCK, FAN_ONDIR, FAN_Q_OVERFLOW, FAN_REPORT_DIR_FID, FAN_REPORT_FID,
    FAN_REPORT_NAME, FAN_REPORT_TARGET_FID, FAN_REPORT_TID, FAN_UNLIMITED_QUEUE, FILE_HANDLE_HDR,
    O_LARGEFILE, O_PATH, O_RDONLY, SHARED_EVENTS, errno_error, libc)
from .mounts import MountViews
from .watches import Watch

_U32 = struct.Struct("=I")
NO_MATCH = (0, 0, 0, 0)
_U64 = struct.Struct("=Q")

# Where file handles keep the inode number, by encoder: u32 first
# (FILEID_INO32_GEN: ext2/3/4, the generic exportfs encoder); u64 first
# (FILEID_INO64_GEN); generation first then the inode as two u32 (tmpfs).
# A filesystem's layout is recognised from a watched object whose inode is
# known from fdinfo; handles of other encoders yield no inode (0).
HANDLE_LAYOUTS = (
    lambda h: _U32.unpack_from(h, 0)[0],
    lambda h: _U64.unpack_from(h, 0)[0],
    lambda h: _U32.unpack_from(h, 4)[0] | (_U32.unpack_from(h, 8)[0] << 32),
)

WINDOW_S = 5.0  # a mirror event can be matched this long after it was read
MAX_HITS = 200_000  # bound on remembered mirror events
MAX_MARKS = 65_536  # bound on mirror marks (more are refused, counted as mirror_mark_limit)

_BITS: dict[int, tuple[int, ...]] = {}


def bits_of(mask: int) -> tuple[int, ...]:
    """The shared event bits set in mask, low first (cached per mask)."""
    bits = _BITS.get(mask)
    if bits is None:
        bits = tuple(1 << i for i in range(12) if mask & (1 << i))
        if len(_BITS) < 4096:
            _BITS[mask] = bits
    return bits


class Series:
    """Mirror events of one (object inode, name, event bit), oldest first.

    Each consumer (tracer pid, fd) has a cursor: the sequence number of the
    next event it may match, so matching is FIFO per consumer and O(log n)
    even when one file gets thousands of events inside the window.
    """

    __slots__ = ("seqs", "hits", "start", "cursors", "run")

    def __init__(self):
        self.seqs: list[int] = []
        # (pid, tid, child inode, when drained: CLOCK_MONOTONIC ns), 0 when unknown
        self.hits: list[tuple[int, int, int, int]] = []
        self.start = 0  # entries before start have expired
        self.cursors: dict = {}
        self.run = 0  # index where the last run of entries of one actor (pid, tid) begins

    def add(self, seq: int, hit: tuple[int, int, int, int]) -> None:
        hits = self.hits
        if hits and hits[-1][:2] != hit[:2]:
            self.run = len(hits)
        self.seqs.append(seq)
        hits.append(hit)

    def match(self, consumer) -> tuple[tuple[int, int, int, int], bool] | None:
        """(the oldest entry this consumer has not matched yet, whether it is
        certain), None if none.

        Positional matching drifts when inotify merged identical consecutive
        events (same wd, mask, name: e.g. two processes touching one file
        while the listener did not read) that the mirror keeps apart: the
        consumer's true entry is then a later one. It is certain only when
        every entry from the cursor to the newest has the same actor (the
        mirror is drained before a read is decoded, so the true entry is
        among them)."""
        seqs = self.seqs
        i = bisect_left(seqs, self.cursors.get(consumer, 0), self.start)
        if i >= len(seqs):
            return None
        self.cursors[consumer] = seqs[i] + 1
        return self.hits[i], i >= self.run

    def drop_oldest(self) -> bool:
        """Expire the oldest entry; True when the series is empty."""
        self.start += 1
        if self.start >= len(self.seqs):
            return True
        if self.start > 512 and self.start * 2 > len(self.seqs):
            del self.seqs[: self.start]
            del self.hits[: self.start]
            self.run = max(0, self.run - self.start)
            self.start = 0
        return False


class Mirror:
    def __init__(self, report_tid: bool = False):
        self.report_tid = report_tid
        flags = ((FAN_REPORT_TID if report_tid else 0) | FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF
                 | FAN_UNLIMITED_QUEUE | FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME)
        # FAN_REPORT_TARGET_FID (5.17+) adds the child's file handle to create,
        # delete and move events, for i_ino; older kernels refuse it (EINVAL)
        fd = libc.fanotify_init(flags | FAN_REPORT_TARGET_FID, O_RDONLY | O_LARGEFILE)
        if fd < 0:
            fd = libc.fanotify_init(flags, O_RDONLY | O_LARGEFILE)
        if fd < 0:
            raise errno_error("fanotify_init (mirror group)")
        self.fd = fd
        self.views = MountViews()
        # (handle_type, handle bytes) -> (ino, its path in its filesystem, handle layout)
        self._objects: dict[tuple[int, bytes], tuple[int, str, object]] = {}
        # (handle_type, handle bytes, listener pid) -> the object's path as that listener sees it
        self._paths: dict[tuple[int, bytes, int], str] = {}
        self._marked: dict[tuple[int, int], int] = {}  # (sdev, ino) -> mask marked
        # (sdev, ino) -> {listener key: wd}: who needs the mark
        self._owners: dict[tuple[int, int], dict] = {}
        # (ino of watched object, name, event bit) -> Series
        self._hits: dict[tuple[int, str, int], Series] = {}
        self._order: deque = deque()  # (when, key) per Series entry, for expiry
        self._seq = 0
        self.counters = {"mirror_overflow": 0, "mirror_mark_failed": 0, "mirror_events": 0,
                         "mirror_mark_limit": 0, "mirror_marks_added": 0,
                         "mirror_marks_removed": 0, "mirror_marks_gone": 0}

    def close(self) -> None:
        self.views.close()
        os.close(self.fd)

    # -- marks ------------------------------------------------------------------
    def path_of(self, watch: Watch, pid: int) -> str:
        """The watched object's path as listener pid sees it ("" unknown)."""
        key = (watch.handle_type, watch.handle, pid)
        path = self._paths.get(key)
        if path is None:
            obj = self._objects.get(key[:2])
            if obj is None:
                return ""
            path = self.views.view_of(pid, watch.sdev, obj[1]) if obj[1] else ""
            if len(self._paths) >= MAX_MARKS:
                self._paths.clear()
            self._paths[key] = path
        return path

    def _open_object(self, watch: Watch, pid: int) -> tuple[int, str]:
        """An O_PATH fd of the watched object from its file handle (through
        listener pid's mounts if the agent has none of that filesystem), and
        the object's path in its filesystem."""
        return self.views.open_handle(watch.sdev, watch.handle_type, watch.handle,
                                      O_PATH | os.O_CLOEXEC, pid)

    def _fanotify_mark(self, flags: int, mask: int, ofd: int) -> None:
        # through the /proc magic link: with a NULL path fanotify_mark wants a
        # non-O_PATH dirfd, and opening the object for real would itself be an
        # open event for other listeners
        if libc.fanotify_mark(self.fd, flags, mask, -100, f"/proc/self/fd/{ofd}".encode()) < 0:
            raise errno_error("fanotify_mark")

    def mark(self, watch: Watch, owner=None) -> bool:
        """Mirror one inotify watch for owner (a listener key); False (and
        counted) if it cannot be mirrored."""
        mask = (watch.mask & SHARED_EVENTS) | FAN_EVENT_ON_CHILD | FAN_ONDIR
        key = (watch.sdev, watch.ino)
        owners = self._owners.get(key)
        if owners is not None and owners.get(owner, -1) == watch.wd \
                and self._marked.get(key, 0) & mask == mask:
            return True
        if not watch.handle:
            self.counters["mirror_mark_failed"] += 1
            return False
        if key not in self._marked and len(self._marked) >= MAX_MARKS:
            self.counters["mirror_mark_limit"] += 1
            return False
        if self._marked.get(key, 0) & mask != mask:
            try:
                ofd, path = self._open_object(watch, owner[0] if owner else 0)
                try:
                    self._fanotify_mark(FAN_MARK_ADD, mask, ofd)
                finally:
                    os.close(ofd)
            except OSError:
                self.counters["mirror_mark_failed"] += 1
                return False
            if key not in self._marked:
                self.counters["mirror_marks_added"] += 1
            self._objects[(watch.handle_type, watch.handle)] = (
                watch.ino, path, self._layout(watch.handle, watch.ino))
            self._marked[key] = self._marked.get(key, 0) | mask
        self._owners.setdefault(key, {})[owner] = watch.wd
        if owner:
            self.path_of(watch, owner[0])  # its view now, while it surely is alive
        return True

    def unmark(self, watch: Watch, owner=None) -> None:
        """owner no longer watches this object: remove the mirror mark when
        nobody does (a mark the kernel already dropped with its deleted object
        is forgotten, counted as mirror_marks_gone)."""
        key = (watch.sdev, watch.ino)
        owners = self._owners.get(key)
        if owners is None or owners.get(owner, -1) != watch.wd:
            return
        del owners[owner]
        if owner:
            self._paths.pop((watch.handle_type, watch.handle, owner[0]), None)
        if owners:
            return
        del self._owners[key]
        self._marked.pop(key, None)
        self._objects.pop((watch.handle_type, watch.handle), None)
        try:
            ofd, _path = self._open_object(watch, owner[0] if owner else 0)
            try:
                self._fanotify_mark(FAN_MARK_REMOVE,
                                    SHARED_EVENTS | FAN_EVENT_ON_CHILD | FAN_ONDIR, ofd)
            finally:
                os.close(ofd)
        except OSError:
            self.counters["mirror_marks_gone"] += 1
            return
        self.counters["mirror_marks_removed"] += 1

    def marks(self) -> int:
        """Mirror marks in place now."""
        return len(self._marked)

    # -- events -----------------------------------------------------------------
    def drain(self) -> int:
        """Read every pending mirror event; returns how many."""
        n = 0
        while True:
            try:
                buf = os.read(self.fd, 256 * 1024)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            if not buf:
                break
            now = time.monotonic()
            seen_ns = time.monotonic_ns()  # the actor acted before this
            off = 0
            while off + FAN_METADATA.size <= len(buf):
                event_len, _v, _r, mlen, mask, _fd, pid = FAN_METADATA.unpack_from(buf, off)
                if event_len < FAN_METADATA.size:
                    break
                if mask & FAN_Q_OVERFLOW:
                    self.counters["mirror_overflow"] += 1
                else:
                    self._record(now, seen_ns, mask, pid, buf[off + mlen: off + event_len])
                    n += 1
                off += event_len
        self.counters["mirror_events"] += n
        self.expire()
        return n

    def _record(self, now: float, seen_ns: int, mask: int, pid: int, info: bytes) -> None:
        """Remember one mirror event under every (watched object, name, bit) it is for."""
        keys, child_ino = self._objects_of(info)
        if not keys:
            return
        seq = self._seq
        self._seq = seq + 1
        hits, order = self._hits, self._order
        tid = pid if self.report_tid else 0
        bits = bits_of(mask)
        for ino, name in keys:
            # the child's inode belongs to events naming a child only
            hit = (pid, tid, child_ino if name else 0, seen_ns)
            for bit in bits:
                key = (ino, name, bit)
                series = hits.get(key)
                if series is None:
                    series = hits[key] = Series()
                series.add(seq, hit)
                order.append((now, key))

    def _objects_of(self, info: bytes) -> tuple[list[tuple[int, str]], int]:
        """From an event's info records: ([(inode of a mirrored object, name
        relative to it)], the child's inode or 0)."""
        keys = []
        child = None
        layout, layout_type = -1, 0
        pos = 0
        objects = self._objects
        while pos + FAN_INFO_HDR.size <= len(info):
            itype, _pad, ilen = FAN_INFO_HDR.unpack_from(info, pos)
            if ilen < FAN_INFO_HDR.size:
                break
            rec_end = pos + ilen
            # header(4) fsid(8) handle_bytes(4) handle_type(4) f_handle[] [name\0]
            if ilen >= 20:
                hbytes, htype = FILE_HANDLE_HDR.unpack_from(info, pos + FAN_INFO_HANDLE_AT)
                handle = info[pos + 20: pos + 20 + hbytes]
                if itype == FAN_EVENT_INFO_TYPE_FID:
                    child = (htype, handle)
                obj = objects.get((htype, handle))
                if obj is not None:
                    layout, layout_type = obj[2], htype
                    name = ""
                    if itype == FAN_EVENT_INFO_TYPE_DFID_NAME:
                        name = info[pos + 20 + hbytes: rec_end].split(b"\0", 1)[0].decode(
                            errors="surrogateescape")
                        if name == ".":
                            name = ""
                    keys.append((obj[0], name))
            pos = rec_end
        if len(keys) > 1:
            keys = list(dict.fromkeys(keys))
        # the child's inode, decoded with the layout that gave the watched
        # object's own handle its known inode (same filesystem, same encoder)
        child_ino = 0
        if child is not None and layout >= 0 and child[0] == layout_type:
            try:
                child_ino = HANDLE_LAYOUTS[layout](child[1])
            except struct.error:
                child_ino = 0
        return keys, child_ino

    @staticmethod
    def _layout(handle: bytes, ino: int) -> int:
        """Which HANDLE_LAYOUTS entry decodes this handle to ino (-1: none)."""
        for i, decode in enumerate(HANDLE_LAYOUTS):
            try:
                if decode(handle) == ino:
                    return i
            except struct.error:
                pass
        return -1

    def expire(self) -> None:
        order = self._order
        if not order:
            return
        limit = time.monotonic() - WINDOW_S
        hits = self._hits
        while order and (order[0][0] < limit or len(order) > MAX_HITS):
            _when, key = order.popleft()
            series = hits.get(key)
            if series is not None and series.drop_oldest():
                del hits[key]

    def match(self, ino: int, name: str, mask: int, consumer) -> tuple[tuple[int, int, int, int], bool]:
        """((pid, tid, child inode, when drained), certain) of the oldest
        mirror event of (ino, name, any bit of mask) this consumer (tracer
        pid, fd) has not matched yet; (NO_MATCH, False) if none. tid and
        child inode are 0 when unknown; certain: see Series.match."""
        hits = self._hits
        for bit in bits_of(mask):
            series = hits.get((ino, name, bit))
            if series is not None:
                got = series.match(consumer)
                if got is not None:
                    return got
        return NO_MATCH, False
