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

import ctypes
import ctypes.util
import os
import struct
import time
from collections import deque

from .listeners import Watch

FAN_CLOEXEC, FAN_NONBLOCK, FAN_CLASS_NOTIF = 0x1, 0x2, 0x0
FAN_UNLIMITED_QUEUE = 0x10
FAN_REPORT_FID, FAN_REPORT_DIR_FID, FAN_REPORT_NAME = 0x200, 0x400, 0x800
FAN_MARK_ADD = 0x1
FAN_EVENT_ON_CHILD, FAN_ONDIR, FAN_Q_OVERFLOW = 0x08000000, 0x40000000, 0x4000
FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_DFID = 1, 2, 3
# inotify and fanotify share these event bits (IN_ACCESS .. IN_MOVE_SELF)
SHARED_EVENTS = 0x00000FFF
IN_ISDIR = 0x40000000
O_RDONLY, O_PATH, O_LARGEFILE = 0, 0o10000000, 0o100000

METADATA = struct.Struct("=IBBHQii")
INFO_HDR = struct.Struct("=BBH")

WINDOW_S = 5.0  # a mirror event can be matched this long after it was read
MAX_HITS = 200_000  # bound on remembered mirror events

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                ctypes.c_char_p]
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]


def _err(what: str) -> OSError:
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def mounts_by_dev() -> dict[int, str]:
    """kernel dev_t (major << 20 | minor) -> a mount point of that filesystem."""
    found: dict[int, str] = {}
    with open("/proc/self/mountinfo") as fh:
        for line in fh:
            parts = line.split()
            major, minor = (int(x) for x in parts[2].split(":"))
            dev = (major << 20) | minor
            # prefer a mount of the filesystem's root
            if dev not in found or parts[3] == "/":
                found[dev] = parts[4].replace("\\040", " ")
    return found


class Hit:
    __slots__ = ("when", "pid", "consumers")

    def __init__(self, when: float, pid: int):
        self.when = when
        self.pid = pid
        self.consumers: set = set()


class Mirror:
    def __init__(self):
        fd = _libc.fanotify_init(FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF | FAN_UNLIMITED_QUEUE
                                 | FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME,
                                 O_RDONLY | O_LARGEFILE)
        if fd < 0:
            raise _err("fanotify_init (mirror group)")
        self.fd = fd
        self._mounts = mounts_by_dev()
        self._mount_fds: dict[int, int] = {}
        # (handle_type, handle bytes) -> (ino, path of the watched object)
        self._objects: dict[tuple[int, bytes], tuple[int, str]] = {}
        self._marked: dict[tuple[int, int], int] = {}  # (sdev, ino) -> mask marked
        # (ino of watched object, name, event bit) -> deque of Hit
        self._hits: dict[tuple[int, str, int], deque] = {}
        self._order: deque = deque()  # (when, key) for expiry
        self.counters = {"mirror_overflow": 0, "mirror_mark_failed": 0, "mirror_events": 0}

    def close(self) -> None:
        for mfd in self._mount_fds.values():
            os.close(mfd)
        os.close(self.fd)

    # -- marks ------------------------------------------------------------------
    def _mount_fd(self, sdev: int) -> int:
        mfd = self._mount_fds.get(sdev)
        if mfd is None:
            path = self._mounts.get(sdev)
            if path is None:
                self._mounts = mounts_by_dev()
                path = self._mounts.get(sdev)
            if path is None:
                raise OSError(f"no mount for device {sdev >> 20}:{sdev & 0xFFFFF}")
            mfd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)  # not O_PATH: fdget() refuses those
            self._mount_fds[sdev] = mfd
        return mfd

    def path_of(self, watch: Watch) -> str:
        obj = self._objects.get((watch.handle_type, watch.handle))
        return obj[1] if obj else ""

    def mark(self, watch: Watch) -> bool:
        """Mirror one inotify watch; False (and counted) if it cannot be mirrored."""
        mask = (watch.mask & SHARED_EVENTS) | FAN_EVENT_ON_CHILD | FAN_ONDIR
        key = (watch.sdev, watch.ino)
        if self._marked.get(key, 0) & mask == mask:
            return True
        if not watch.handle:
            self.counters["mirror_mark_failed"] += 1
            return False
        try:
            mfd = self._mount_fd(watch.sdev)
            fh = struct.pack("=Ii", len(watch.handle), watch.handle_type) + watch.handle
            buf = ctypes.create_string_buffer(fh, len(fh))
            ofd = _libc.open_by_handle_at(mfd, buf, O_PATH)
            if ofd < 0:
                raise _err("open_by_handle_at")
            try:
                path = os.readlink(f"/proc/self/fd/{ofd}")
                # through the /proc magic link: with a NULL path fanotify_mark
                # wants a non-O_PATH dirfd, and opening the object for real
                # would itself be an open event for other listeners
                if _libc.fanotify_mark(self.fd, FAN_MARK_ADD, mask, -100,
                                       f"/proc/self/fd/{ofd}".encode()) < 0:
                    raise _err(f"fanotify_mark {path}")
            finally:
                os.close(ofd)
        except OSError:
            self.counters["mirror_mark_failed"] += 1
            return False
        self._objects[(watch.handle_type, watch.handle)] = (watch.ino, path)
        self._marked[key] = self._marked.get(key, 0) | mask
        return True

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
            off = 0
            while off + METADATA.size <= len(buf):
                event_len, _v, _r, mlen, mask, _fd, pid = METADATA.unpack_from(buf, off)
                if event_len < METADATA.size:
                    break
                if mask & FAN_Q_OVERFLOW:
                    self.counters["mirror_overflow"] += 1
                else:
                    self._record(now, mask, pid, buf[off + mlen: off + event_len])
                    n += 1
                off += event_len
        self.counters["mirror_events"] += n
        self.expire()
        return n

    def _record(self, now: float, mask: int, pid: int, info: bytes) -> None:
        keys = []
        pos = 0
        while pos + INFO_HDR.size <= len(info):
            itype, _pad, ilen = INFO_HDR.unpack_from(info, pos)
            if ilen < INFO_HDR.size:
                break
            rec = info[pos: pos + ilen]
            pos += ilen
            # header(4) fsid(8) handle_bytes(4) handle_type(4) f_handle[] [name\0]
            if len(rec) < 20:
                continue
            hbytes, htype = struct.unpack_from("=Ii", rec, 12)
            handle = bytes(rec[20: 20 + hbytes])
            obj = self._objects.get((htype, handle))
            if obj is None:
                continue
            name = ""
            if itype == FAN_EVENT_INFO_TYPE_DFID_NAME:
                name = rec[20 + hbytes:].split(b"\0", 1)[0].decode(errors="surrogateescape")
                if name == ".":
                    name = ""
            keys.append((obj[0], name))
        for ino, name in dict.fromkeys(keys):
            bit = 1
            while bit <= SHARED_EVENTS:
                if mask & bit:
                    key = (ino, name, bit)
                    self._hits.setdefault(key, deque()).append(Hit(now, pid))
                    self._order.append((now, key))
                bit <<= 1

    def expire(self) -> None:
        now = time.monotonic()
        while self._order and (now - self._order[0][0] > WINDOW_S or len(self._order) > MAX_HITS):
            when, key = self._order.popleft()
            hits = self._hits.get(key)
            if hits and hits[0].when == when:
                hits.popleft()
                if not hits:
                    del self._hits[key]

    def match(self, ino: int, name: str, mask: int, consumer) -> int:
        """The pid of the oldest mirror event of (ino, name, any bit of mask) this
        consumer (tracer pid, fd) has not matched yet; 0 if none."""
        bit = 1
        while bit <= SHARED_EVENTS:
            if mask & bit:
                for hit in self._hits.get((ino, name, bit), ()):
                    if consumer not in hit.consumers:
                        hit.consumers.add(consumer)
                        return hit.pid
            bit <<= 1
        return 0
