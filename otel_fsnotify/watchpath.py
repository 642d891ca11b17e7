"""Path of the object an inotify watch is on, for the exact backends.

The kernel hands the tracer only a watch descriptor (wd) and a name; the
watched directory's path is known to the tracer's inotify fd. This resolves it
from user space, as the kernel exposes it in /proc/<tracer>/fdinfo/<fd>:
`inotify wd:.. ino:.. sdev:.. ... f_handle:..` per watch. The file handle is
opened with open_by_handle_at(2) on a mount of that device and the path read
back from /proc/self/fd (so it is the path in the agent's mount namespace).

Results are cached per (sdev, ino) of the watched object and per (tracer pid,
wd) for a few seconds (a renamed directory shows its new path after that).
Unresolvable cases give "" (never a guess): the tracer exited before the
agent looked, a filesystem without file handles (no export operations, e.g.
9p), a deleted directory, or no mount of the device in the agent's namespace.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct
import time

from . import listeners
from .mirror import mounts_by_dev

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
O_PATH = 0o10000000


class WatchPaths:
    TTL = 5.0          # seconds a resolved (or unresolvable) answer is reused
    MAX = 8192         # entries per cache; cleared when full (bounded memory)
    RESCAN = 0.2       # a wd missing from a tracer's last scan: rescan if older than this

    def __init__(self):
        self._by_wd: dict[tuple[int, int, int], tuple[float, str]] = {}   # (pid, wd, hint ino)
        self._by_obj: dict[tuple[int, int], tuple[float, str]] = {}        # (sdev, ino)
        # tracer pid -> (when scanned, {wd: [Watch, ...]}): one fdinfo scan serves
        # every wd of a tracer with many watches
        self._scans: dict[int, tuple[float, dict[int, list[listeners.Watch]]]] = {}
        self._mounts: dict[int, str] | None = None
        self._mount_fds: dict[int, int] = {}
        self.unresolved = 0

    def close(self) -> None:
        for fd in self._mount_fds.values():
            os.close(fd)
        self._mount_fds.clear()

    def dir_path(self, tracer_pid: int, wd: int, ino_dir: int, ino: int) -> str:
        """Path of the object watched by `wd` of `tracer_pid` ("" if unknown).

        ino_dir / ino (from the event) pick the right watch when the tracer
        has several inotify fds using the same wd number.
        """
        key = (tracer_pid, wd, ino_dir or ino)
        now = time.monotonic()
        hit = self._by_wd.get(key)
        if hit and now - hit[0] < self.TTL:
            path = hit[1]
        else:
            path = self._resolve(tracer_pid, wd, (ino_dir, ino), now)
            if len(self._by_wd) >= self.MAX:
                self._by_wd.clear()
            self._by_wd[key] = (now, path)
        if not path:
            self.unresolved += 1  # events left without a path
        return path

    def _resolve(self, pid: int, wd: int, inos: tuple[int, int], now: float) -> str:
        scan = self._scans.get(pid)
        if scan is None or (wd not in scan[1] and now - scan[0] > self.RESCAN) or now - scan[0] > self.TTL:
            by_wd: dict[int, list[listeners.Watch]] = {}
            for lst in listeners.scan_pid(pid):
                if lst.kind == "inotify":
                    for w in lst.watches.values():
                        by_wd.setdefault(w.wd, []).append(w)
            if len(self._scans) >= self.MAX:
                self._scans.clear()
            scan = self._scans[pid] = (now, by_wd)
        candidates = scan[1].get(wd, [])
        if len(candidates) > 1:
            candidates = [w for w in candidates if w.ino in inos] or candidates[:0]
        if not candidates:
            return ""
        watch = candidates[0]
        okey = (watch.sdev, watch.ino)
        hit = self._by_obj.get(okey)
        if hit and now - hit[0] < self.TTL:
            return hit[1]
        path = self._open_path(watch) if watch.handle else ""
        if len(self._by_obj) >= self.MAX:
            self._by_obj.clear()
        self._by_obj[okey] = (now, path)
        return path

    def _mount_fd(self, sdev: int) -> int:
        fd = self._mount_fds.get(sdev)
        if fd is not None:
            return fd
        if self._mounts is None or sdev not in self._mounts:
            self._mounts = mounts_by_dev()
        mnt = self._mounts.get(sdev)
        if mnt is None:
            return -1
        try:
            # not O_PATH: open_by_handle_at's fdget() refuses O_PATH mount fds
            fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError:
            return -1
        self._mount_fds[sdev] = fd
        return fd

    def _open_path(self, watch: listeners.Watch) -> str:
        mfd = self._mount_fd(watch.sdev)
        if mfd < 0:
            return ""
        fh = struct.pack("=Ii", len(watch.handle), watch.handle_type) + watch.handle
        buf = ctypes.create_string_buffer(fh, len(fh))
        ofd = _libc.open_by_handle_at(mfd, buf, O_PATH | os.O_CLOEXEC)
        if ofd < 0:
            return ""
        try:
            path = os.readlink(f"/proc/self/fd/{ofd}")
            st = os.fstat(ofd)
        except OSError:
            return ""
        finally:
            os.close(ofd)
        if st.st_ino != watch.ino or path.endswith(" (deleted)") or not path.startswith("/"):
            return ""
        return path
