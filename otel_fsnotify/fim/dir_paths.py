"""Directory file handles -> paths, for the watch group's events.

fanotify names a directory by its file handle; `open_by_handle_at` on a
descriptor of the same filesystem gives it back, and /proc/self/fd its path.
That costs three syscalls, so paths are cached per handle and kept right as
directories move (`moved`) and go (`gone`). The scan primes the cache for
every watched directory, so the children of a directory removed before its
events are read (`rm -r`) still resolve. A removed directory's entry stays
(harmless: its handle is never reused) until the cache is cleared.
"""

from __future__ import annotations

import os

from ..kernel.abi import O_PATH, name_to_handle_at, open_by_handle_at
from .fid_group import Handle

MAX_CACHED = 1 << 18  # directories remembered (cleared past it: they resolve again)
_DELETED = " (deleted)"


class DirPaths:
    def __init__(self):
        self._mounts: dict[bytes, int] = {}  # fsid -> an O_PATH fd on that filesystem
        self._paths: dict[Handle, str] = {}
        self.unresolved = 0  # handles that named nothing any more (counted)

    def add_filesystem(self, fs: bytes, path: str) -> None:
        if fs not in self._mounts:
            self._mounts[fs] = os.open(path, O_PATH | os.O_CLOEXEC)

    def learn(self, fs: bytes, path: str) -> None:
        """Remember a directory's handle (the scan, a new directory)."""
        try:
            htype, handle = name_to_handle_at(path)
        except OSError:
            return
        self._remember(Handle(fs, htype, handle), path)

    def _remember(self, h: Handle, path: str) -> None:
        if len(self._paths) >= MAX_CACHED:
            self._paths.clear()
        self._paths[h] = path

    def path(self, h: Handle) -> str:
        """The directory's path now, "" when it cannot be found."""
        hit = self._paths.get(h)
        if hit is not None:
            return hit
        mount = self._mounts.get(h.fsid)
        if mount is None:
            self.unresolved += 1
            return ""
        try:
            fd = open_by_handle_at(mount, h.htype, h.handle, O_PATH | os.O_CLOEXEC)
        except OSError:
            self.unresolved += 1  # gone and forgotten by the kernel (ESTALE)
            return ""
        try:
            path = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            path = ""
        finally:
            os.close(fd)
        if path.endswith(_DELETED):  # removed, still known by its old name
            return path[: -len(_DELETED)]
        if path.startswith("/"):
            self._remember(h, path)
            return path
        self.unresolved += 1
        return ""

    def moved(self, old: str, new: str) -> None:
        """A directory was renamed: it and everything below follow."""
        prefix = old + "/"
        for h, p in list(self._paths.items()):
            if p == old:
                self._paths[h] = new
            elif p.startswith(prefix):
                self._paths[h] = new + p[len(old):]

    def __len__(self) -> int:
        return len(self._paths)

    def close(self) -> None:
        for fd in self._mounts.values():
            os.close(fd)
        self._mounts.clear()
