"""Mount tables: a path as a listener sees it, and as the agent (the host) does.

A watcher in a container sees its volume at, say, /data; the same directory
is /var/lib/kubelet/pods/<uid>/volumes/.../data on the node, and a private
tmpfs of the pod is on no host path at all. Each process's view is its mount
table (/proc/<pid>/mountinfo: device, the directory of the filesystem a mount
shows, and where): a path in one view is translated to another through the
filesystem-relative path the two share.

File handles of a filesystem the agent has no mount of (the pod's tmpfs) are
opened through a mount of the listener's, reached by /proc/<pid>/root.
"""

from __future__ import annotations

import os
import re
import time
from typing import NamedTuple

import msgspec

from ..kernel.abi import open_by_handle_at
from .procs import mntns_id

_ESCAPE = re.compile(r"\\([0-7]{3})")


def unescape(field: str) -> str:
    """A mountinfo path field with its octal escapes (\\040 for a space...) undone."""
    return _ESCAPE.sub(lambda m: chr(int(m[1], 8)), field) if "\\" in field else field


class Mount(NamedTuple):
    dev: int  # kernel dev_t: major << 20 | minor
    root: str  # the directory of the filesystem this mount shows
    point: str  # where, in the reading process's view
    fstype: str = ""  # after the " - " separator: tmpfs, ext4, 9p...


def read_mounts(pid: int | str = "self") -> list[Mount]:
    """The mount table of a process, in mount order; OSError if it is gone."""
    mounts = []
    with open(f"/proc/{pid}/mountinfo") as fh:
        for line in fh:
            parts = line.split(" ", 6)
            major, minor = parts[2].split(":")
            fstype = (" " + parts[6]).partition(" - ")[2].split(" ", 1)[0] if len(parts) > 6 else ""
            mounts.append(Mount((int(major) << 20) | int(minor), unescape(parts[3]), unescape(parts[4]),
                                fstype))
    return mounts


def _under(path: str, top: str) -> str | None:
    """path relative to top ("" for top itself, "/x/y" below it); None if not under it."""
    if top == "/":
        return path if path != "/" else ""
    if path == top:
        return ""
    if path.startswith(top) and path[len(top)] == "/":
        return path[len(top):]
    return None


class MountTable:
    """One process's view of the filesystems."""

    def __init__(self, mounts: list[Mount]):
        self.mounts = mounts

    def of_dev(self, dev: int) -> list[Mount]:
        """The mounts of one filesystem, those showing its root first."""
        found = [m for m in self.mounts if m.dev == dev]
        found.sort(key=lambda m: m.root != "/")
        return found

    def describe(self, dev: int) -> str:
        """The filesystem of dev for a person: "tmpfs at /tmp" (its first mount)."""
        found = self.of_dev(dev)
        if not found:
            return f"the filesystem of device {dev >> 20}:{dev & 0xFFFFF}"
        return f"{found[0].fstype or 'the filesystem'} at {found[0].point}"

    def locate(self, path: str) -> tuple[Mount, str] | None:
        """The mount a path is on (the deepest mount point above it; the last
        one mounted there) and the path relative to that mount."""
        best = None
        for m in self.mounts:
            rel = _under(path, m.point)
            if rel is not None and (best is None or len(m.point) >= len(best[0].point)):
                best = (m, rel)
        return best

    def view(self, dev: int, fs_path: str, under: str = "/") -> str:
        """Where this view shows a filesystem-relative path ("" if nowhere),
        below `under` (a chrooted process's root) only. Where bind mounts
        show it more than once, the shortest path: the others go through
        a bind of a directory above it (an alias)."""
        best = ""
        for m in self.mounts:
            if m.dev != dev:
                continue
            rel = _under(fs_path, m.root)
            if rel is None:
                continue
            path = (m.point.rstrip("/") + rel) or "/"
            if (not best or len(path) < len(best)) and (under == "/" or _under(path, under) is not None):
                best = path
        return best

    def fs_path(self, path: str) -> tuple[int, str] | None:
        """(device, path relative to its filesystem) of a path in this view."""
        found = self.locate(path)
        if found is None:
            return None
        m, rel = found
        return m.dev, (m.root.rstrip("/") + rel) or "/"


class MountViews:
    """The agent's mount table and its listeners', cached; mount fds to open
    file handles against, from the agent's own mounts or else a listener's."""

    TTL = 5.0
    MAX = 1024
    IDLE_S = 600.0  # a listener's mount fd unused this long is closed (opening one is an open event)

    def __init__(self):
        self.own_ns = mntns_id("self")
        self._own: tuple[float, MountTable] | None = None
        self._by_ns: dict[int, tuple[float, MountTable]] = {}
        self._fds: dict[int, tuple[int, str, Mount]] = {}  # dev -> mount fd, its path, the mount
        self._foreign: set[int] = set()  # devs whose mount fd is a listener's, not the agent's
        self._used: dict[int, float] = {}  # dev -> when its mount fd was last used
        self._roots: dict[int, tuple[float, str]] = {}  # pid -> (when read, its root)

    def close(self) -> None:
        for fd, _p, _m in self._fds.values():
            os.close(fd)
        self._fds.clear()
        self._used.clear()
        self._foreign.clear()

    def own(self, fresh: bool = False) -> MountTable:
        now = time.monotonic()
        if fresh or self._own is None or now - self._own[0] > self.TTL:
            self._own = (now, MountTable(read_mounts("self")))
        return self._own[1]

    def of(self, pid: int, ns: int = 0, fresh: bool = False) -> MountTable | None:
        """The mount table of pid's namespace (None when it is gone)."""
        ns = ns or mntns_id(pid)
        if not ns:
            return None
        if ns == self.own_ns:
            return self.own(fresh)
        now = time.monotonic()
        hit = self._by_ns.get(ns)
        if hit is None or fresh or now - hit[0] > self.TTL:
            try:
                table = MountTable(read_mounts(pid))
            except OSError:
                return hit[1] if hit else None
            if len(self._by_ns) >= self.MAX:
                self._by_ns.clear()
            hit = self._by_ns[ns] = (now, table)
        return hit[1]

    def to_host(self, pid: int, ns: int, path: str) -> str:
        """A path in pid's view (namespace ns) as the agent sees it; "" when
        the agent has no mount showing it."""
        if ns == self.own_ns:
            return path
        table = self.of(pid, ns)
        where = table.fs_path(path) if table else None
        return self.own().view(*where) if where else ""

    def _mount_fd(self, dev: int, pid: int) -> tuple[int, str, Mount]:
        """A mount of device dev to open handles against (any mount of a
        filesystem opens all its handles): the agent's, else the listener's
        (through /proc/<pid>/root); OSError if neither has one."""
        now = time.monotonic()
        hit = self._fds.get(dev)
        if hit is not None:
            self._used[dev] = now
            return hit
        self._expire(now)
        mounts = self.own().of_dev(dev) or self.own(fresh=True).of_dev(dev)
        prefix = ""
        if not mounts and pid:
            table = self.of(pid)
            mounts = table.of_dev(dev) if table else []
            prefix = f"/proc/{pid}/root"
            self._foreign.add(dev)
        if not mounts:
            raise OSError(f"no mount of device {dev >> 20}:{dev & 0xFFFFF} here or in pid {pid}'s view")
        # not O_PATH: open_by_handle_at's fdget() refuses O_PATH mount fds
        fd = os.open(prefix + mounts[0].point, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        hit = self._fds[dev] = (fd, os.readlink(f"/proc/self/fd/{fd}"), mounts[0])
        self._used[dev] = now
        return hit

    def _expire(self, now: float) -> None:
        # an open mount fd keeps its filesystem alive: a listener's (a pod's
        # tmpfs) is let go once it has gone unused for a while
        for dev in [d for d in self._foreign if now - self._used.get(d, now) > self.IDLE_S]:
            self._foreign.discard(dev)
            self._used.pop(dev, None)
            hit = self._fds.pop(dev, None)
            if hit is not None:
                os.close(hit[0])

    def open_handle(self, dev: int, handle_type: int, handle: bytes, flags: int,
                    pid: int = 0) -> tuple[int, str]:
        """(fd, filesystem-relative path) of the object a file handle names
        (OSError); the path is "" when the object is not below the mount
        it was opened through (then only the fd is of use)."""
        mfd, mpath, m = self._mount_fd(dev, pid)
        fd = open_by_handle_at(mfd, handle_type, handle, flags)
        try:
            link = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            link = ""
        rel = _under(link, mpath) if not link.endswith(" (deleted)") else None
        return fd, ((m.root.rstrip("/") + rel) or "/") if rel is not None else ""

    def root_of(self, pid: int) -> str:
        """pid's root directory (chroot, RootDirectory=) as the agent sees
        it: "/" when it shares the agent's, "" when it is gone or out of
        the agent's sight. Cached for TTL."""
        now = time.monotonic()
        hit = self._roots.get(pid)
        if hit is None or now - hit[0] > self.TTL:
            try:
                root = os.readlink(f"/proc/{pid}/root")
            except OSError:
                root = hit[1] if hit else ""
            if len(self._roots) >= self.MAX:
                self._roots.clear()
            hit = self._roots[pid] = (now, root)
        return hit[1]

    def view_of(self, pid: int, dev: int, fs_path: str) -> str:
        """Where pid sees a filesystem-relative path ("" nowhere), below its
        own root. A listener already gone (its events are read after it
        exits) has no view left: the agent's stands in, as the view every
        path had before namespaces."""
        table = (self.of(pid) if pid else None) or self.own()
        if not pid or table is not self._own[1]:
            # another namespace's mountinfo is already relative to the pid's root
            return table.view(dev, fs_path)
        # the agent's namespace: a chrooted listener sees the part below its root
        root = self.root_of(pid) or "/"
        path = table.view(dev, fs_path, root)
        if root != "/" and path:
            path = _under(path, root) or "/"
        return path


class HostPaths:
    """Puts the agent's (the host's) path beside the tracer's on events whose
    tracer is in another mount namespace or under another root (a chroot,
    RootDirectory=): Event.host_path. A path on a filesystem the agent has
    no mount of (a pod's private tmpfs) has none: counted as
    host_path_unmounted. fanotify events come with it from the kernel's walk."""

    def __init__(self):
        self.views = MountViews()
        self.own_ns = self.views.own_ns
        self.unmounted = 0

    def __call__(self, ev):
        ns = ev.tracer_mntns_id
        if not ns or not ev.path or ev.host_path:
            return ev
        if ns == self.own_ns:
            root = self.views.root_of(ev.tracer_pid)
            if root in ("/", "") or ev.type != "inotify":
                return ev
            return msgspec.structs.replace(ev, host_path=root.rstrip("/") + ev.path)
        host = self.views.to_host(ev.tracer_pid, ns, ev.path)
        if not host:
            self.unmounted += 1
            return ev
        return msgspec.structs.replace(ev, host_path=host)

    def close(self) -> None:
        self.views.close()
