"""inotify and fanotify listeners, what they watch, and where that is.

Listeners are found in /proc/*/fdinfo (those running before the agent, and one
process rescanned after its inotify_add_watch(2)). The kernel hands a tracer
only a watch descriptor (wd) and a name; the watched object's path comes from
the watch's file handle in fdinfo (`inotify wd:.. ino:.. sdev:.. ...
f_handle:..`), opened with open_by_handle_at(2) on a mount of that device and
placed in the tracer's own view of the mounts (mounts.py: a watcher in a
container sees its volume where the container mounts it). Unresolvable cases
give "" (never a guess): the tracer exited before the agent looked, a
filesystem without file handles (no export operations, e.g. 9p), a deleted
directory, or no mount of the device in the agent's or the tracer's view.
"""

from __future__ import annotations

import os
import re
import time

import msgspec

from ..kernel.abi import O_PATH
from .mounts import MountViews

PROC = "/proc"

_WATCH = re.compile(
    r"inotify wd:(?P<wd>[0-9a-f]+) ino:(?P<ino>[0-9a-f]+) sdev:(?P<sdev>[0-9a-f]+) "
    r"mask:(?P<mask>[0-9a-f]+) ignored_mask:[0-9a-f]+"
    r"(?: fhandle-bytes:(?P<hbytes>[0-9a-f]+) fhandle-type:(?P<htype>[0-9a-f]+) f_handle:(?P<handle>[0-9a-f]+))?")
_FAN = re.compile(r"fanotify flags:(?P<flags>[0-9a-f]+) event-flags:(?P<eflags>[0-9a-f]+)")
# a fanotify group's marks, one line each: on an inode (with its handle), a
# mount (by mount id) or a filesystem (by device)
_FAN_MARK = re.compile(
    r"fanotify (?:ino:(?P<ino>[0-9a-f]+) sdev:(?P<sdev>[0-9a-f]+)|mnt_id:(?P<mnt>[0-9a-f]+)|sdev:(?P<sb>[0-9a-f]+)) "
    r"mflags:(?P<mflags>[0-9a-f]+) mask:(?P<mask>[0-9a-f]+) ignored_mask:(?P<ignored>[0-9a-f]+)"
    r"(?: fhandle-bytes:(?P<hbytes>[0-9a-f]+) fhandle-type:(?P<htype>[0-9a-f]+) f_handle:(?P<handle>[0-9a-f]+))?")


class Watch(msgspec.Struct, frozen=True):
    wd: int
    ino: int
    sdev: int  # kernel-internal dev_t: major << 20 | minor
    mask: int
    handle_type: int = 0
    handle: bytes = b""  # exportfs file handle, as the kernel encodes it


class FanMark(msgspec.Struct, frozen=True):
    """One mark of a fanotify group (its fdinfo line)."""

    kind: str  # "inode" | "mount" | "filesystem"
    mask: int
    ignored_mask: int = 0
    ino: int = 0  # inode marks
    sdev: int = 0  # inode and filesystem marks: kernel-internal dev_t
    mnt_id: int = 0  # mount marks
    handle_type: int = 0
    handle: bytes = b""


class Listener(msgspec.Struct):
    pid: int
    fd: int
    kind: str  # "inotify" | "fanotify"
    watches: dict[int, Watch] = {}  # wd -> Watch (inotify)
    fan_flags: int = 0  # fanotify_init flags (fanotify)
    fan_event_flags: int = 0  # fanotify_init event_f_flags
    marks: tuple[FanMark, ...] = ()  # (fanotify)


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
                        fan_event_flags=int(m["eflags"], 16), marks=tuple(_fan_marks(text)))
    return None


def _fan_marks(text: str):
    for m in _FAN_MARK.finditer(text):
        hexint = lambda key: int(m[key] or "0", 16)  # noqa: E731
        kind = "inode" if m["ino"] else "mount" if m["mnt"] else "filesystem"
        yield FanMark(kind=kind, mask=hexint("mask"), ignored_mask=hexint("ignored"), ino=hexint("ino"),
                      sdev=hexint("sdev") or hexint("sb"), mnt_id=hexint("mnt"),
                      handle_type=hexint("htype"), handle=bytes.fromhex(m["handle"] or ""))


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
    kind = _fd_kind(pid, str(fd))
    if not kind:
        return None
    try:
        with open(f"{PROC}/{pid}/fdinfo/{fd}") as fh:
            found = parse_fdinfo(pid, fd, fh.read())
    except OSError:
        return None
    # an inotify instance without watches prints no line of its own
    return found if found is not None or kind != "inotify" else Listener(pid=pid, fd=fd, kind="inotify")


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


class Listeners:
    """The listeners the agent knows, by (pid, fd), with a mirror (mirror.py)
    kept marking what the inotify ones watch: a watch that appears is
    marked, one that goes (inotify_rm_watch, IN_IGNORED, the process's exit)
    is unmarked."""

    def __init__(self, mirror=None):
        self.mirror = mirror
        self._by_key: dict[tuple[int, int], Listener] = {}
        self._pids: set[int] = set()

    def get(self, pid: int, fd: int) -> Listener | None:
        return self._by_key.get((pid, fd))

    def add(self, listener: Listener) -> None:
        key = (listener.pid, listener.fd)
        old = self._by_key.get(key)
        self._by_key[key] = listener
        self._pids.add(listener.pid)
        if listener.kind != "inotify" or self.mirror is None:
            return
        for watch in listener.watches.values():
            self.mirror.mark(watch, key)
        if old is not None:  # watches gone since the last look (inotify_rm_watch...)
            for wd, watch in old.watches.items():
                if wd not in listener.watches:
                    self.mirror.unmark(watch, key)

    def refresh(self, pid: int, fd: int) -> Listener | None:
        """Read one listener again (a new watch, or an fd not seen yet)."""
        listener = read_listener(pid, fd)
        if listener:
            self.add(listener)
        return listener

    def watch_gone(self, listener: Listener, wd: int) -> None:
        """The kernel dropped a watch (IN_IGNORED): so is the need for its mark."""
        watch = listener.watches.get(wd)
        if watch is None:
            return
        listener.watches = {k: v for k, v in listener.watches.items() if k != wd}
        if self.mirror is not None:
            self.mirror.unmark(watch, (listener.pid, listener.fd))

    def exited(self, pid: int) -> None:
        """A process exited: its inotify watches no longer need mirror marks."""
        if pid not in self._pids:
            return
        self._pids.discard(pid)
        for key in [k for k in self._by_key if k[0] == pid]:
            listener = self._by_key.pop(key)
            if self.mirror is not None:
                for watch in listener.watches.values():
                    self.mirror.unmark(watch, key)


class WatchPaths:
    """The path of the object an inotify watch is on, for the exact backends
    (which see a tracer's wd, not its watch): resolved from the tracer's
    fdinfo, cached per (sdev, ino) and per (tracer pid, wd) for a few seconds
    (a renamed directory shows its new path after that)."""

    TTL = 5.0          # seconds a resolved (or unresolvable) answer is reused
    MAX = 8192         # entries per cache; cleared when full (bounded memory)
    RESCAN = 0.2       # a wd missing from a tracer's last scan: rescan if older than this

    def __init__(self):
        self._by_wd: dict[tuple[int, int, int], tuple[float, str]] = {}   # (pid, wd, hint ino)
        self._by_obj: dict[tuple[int, int], tuple[float, str]] = {}        # (sdev, ino) -> fs path
        # tracer pid -> (when scanned, {wd: [Watch, ...]}): one fdinfo scan serves
        # every wd of a tracer with many watches
        self._scans: dict[int, tuple[float, dict[int, list[Watch]]]] = {}
        self.views = MountViews()
        self.unresolved = 0

    def close(self) -> None:
        self.views.close()

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
            by_wd: dict[int, list[Watch]] = {}
            for lst in scan_pid(pid):
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
            fs_path = hit[1]
        else:
            fs_path = self._fs_path(watch, pid) if watch.handle else ""
            if len(self._by_obj) >= self.MAX:
                self._by_obj.clear()
            self._by_obj[okey] = (now, fs_path)
        return self.views.view_of(pid, watch.sdev, fs_path) if fs_path else ""

    def _fs_path(self, watch: Watch, pid: int) -> str:
        """The watched object's path in its filesystem ("" if unknown)."""
        try:
            ofd, fs_path = self.views.open_handle(watch.sdev, watch.handle_type, watch.handle,
                                                  O_PATH | os.O_CLOEXEC, pid)
        except OSError:
            return ""
        try:
            st = os.fstat(ofd)
        except OSError:
            return ""
        finally:
            os.close(ofd)
        return fs_path if st.st_ino == watch.ino else ""
