"""cgroup v2 ids (what the BPF programs read: bpf_get_current_cgroup_id(),
the inode number of the cgroup's directory) -> the cgroup's path and the
container it names.

The ids are learnt by walking the cgroup v2 hierarchy; a new id (a container
started since) walks it again, at most once per RESCAN_S. Paths are relative
to the hierarchy's root as this agent sees it, as /proc/<pid>/cgroup shows
them to a process in the root cgroup namespace.
"""

from __future__ import annotations

import os
import time

from .procs import NO_CONTAINER, Container, container_of_cgroup
from .scope import cgroup2_root

RESCAN_S = 1.0
MAX_CGROUPS = 1 << 16


class CgroupPaths:
    def __init__(self, root: str | None = None):
        self.root = cgroup2_root() if root is None else root
        self._paths: dict[int, str] = {}
        self._containers: dict[int, Container] = {}
        self._walked = 0.0
        self.unknown = 0  # ids no walk could name (a cgroup gone before it was looked up)

    def _walk(self) -> None:
        self._walked = time.monotonic()
        if not self.root:
            return
        paths: dict[int, str] = {}
        stack = [(self.root, "/")]
        while stack and len(paths) < MAX_CGROUPS:
            directory, rel = stack.pop()
            try:
                paths[os.stat(directory).st_ino] = rel
                with os.scandir(directory) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            stack.append((e.path, rel.rstrip("/") + "/" + e.name))
            except OSError:
                continue  # removed while walking
        self._paths = paths
        self._containers.clear()

    def path(self, cgroup_id: int) -> str:
        """The cgroup's path ("" when unknown)."""
        if not cgroup_id:
            return ""
        got = self._paths.get(cgroup_id)
        if got is None and time.monotonic() - self._walked >= RESCAN_S:
            self._walk()
            got = self._paths.get(cgroup_id)
        if got is None:
            self.unknown += 1
            return ""
        return got

    def container(self, cgroup_id: int) -> Container:
        """The container (and cgroup path) a cgroup id names."""
        hit = self._containers.get(cgroup_id)
        if hit is not None:
            return hit
        path = self.path(cgroup_id)
        if not path:
            return NO_CONTAINER
        got = container_of_cgroup(path)._replace(cgroup=path)
        self._containers[cgroup_id] = got
        return got
