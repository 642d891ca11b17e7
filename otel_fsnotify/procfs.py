"""Small readers of /proc/<pid>: exe path, container id, status fields.

Every reader returns "" / 0 / None when the process is gone or the field is
unreadable: unknown values are never invented. Shared by all backends.
"""

from __future__ import annotations

import os
import re

PROC = "/proc"

# A container id is a 64-hex-digit component in the cgroup path, as written by
# docker, containerd, cri-o and podman (e.g. .../docker-<id>.scope, /kubepods/.../<id>).
_CONTAINER_ID = re.compile(r"(?:^|[/\-:])([0-9a-f]{64})(?:\.scope)?(?:/|$)")


def exe_path(pid: int) -> str:
    """Full path of the process's executable, "" if unknown (gone, kernel thread)."""
    try:
        path = os.readlink(f"{PROC}/{pid}/exe")
    except OSError:
        return ""
    return path[: -len(" (deleted)")] if path.endswith(" (deleted)") else path


def cgroup_path(pid: int) -> str:
    """The cgroup v2 path ("0::/..." line), or the first v1 path, "" if unknown."""
    try:
        with open(f"{PROC}/{pid}/cgroup") as fh:
            lines = fh.read().splitlines()
    except OSError:
        return ""
    for line in lines:
        if line.startswith("0::"):
            return line[3:]
    return lines[0].split(":", 2)[2] if lines and lines[0].count(":") >= 2 else ""


def container_id(pid: int) -> str:
    """The container id from /proc/<pid>/cgroup, "" when not in a container."""
    try:
        with open(f"{PROC}/{pid}/cgroup") as fh:
            text = fh.read()
    except OSError:
        return ""
    for line in text.splitlines():
        m = _CONTAINER_ID.search(line.split(":", 2)[-1])
        if m:
            return m.group(1)
    return ""


def comm(pid: int) -> str:
    try:
        with open(f"{PROC}/{pid}/comm") as fh:
            return fh.read().rstrip("\n")
    except OSError:
        return ""


def status(pid: int) -> dict[str, str]:
    """/proc/<pid>/status as a dict of raw strings ({} if gone)."""
    try:
        with open(f"{PROC}/{pid}/status") as fh:
            return dict(line.split(":\t", 1) for line in fh.read().splitlines() if ":\t" in line)
    except OSError:
        return {}


def mntns_id(pid: int) -> int:
    """Inode number of the process's mount namespace, 0 if unknown."""
    try:
        return os.stat(f"{PROC}/{pid}/ns/mnt").st_ino
    except OSError:
        return 0


def pids() -> list[int]:
    return [int(d) for d in os.listdir(PROC) if d.isdigit()]


def pidns_id(pid: int) -> int:
    """Inode number of the process's pid namespace, 0 if unknown."""
    try:
        return os.stat(f"{PROC}/{pid}/ns/pid").st_ino
    except OSError:
        return 0


def ns_pids(path: str) -> list[int]:
    """The NSpid line of <path>/status (outermost namespace first), [] if unknown."""
    try:
        with open(f"{path}/status") as fh:
            for line in fh:
                if line.startswith("NSpid:"):
                    return [int(x) for x in line.split()[1:]]
    except (OSError, ValueError):
        pass
    return []


def pid_from_ns(pidns: int, nspid: int, thread: bool = False) -> int:
    """The pid (tid when thread) in /proc's namespace of the task numbered
    nspid in pid namespace pidns; 0 when no live task matches."""
    for pid in pids():
        if pidns_id(pid) != pidns:
            continue
        if not thread:
            got = ns_pids(f"{PROC}/{pid}")
            if got and got[-1] == nspid:
                return pid
            continue
        try:
            tids = os.listdir(f"{PROC}/{pid}/task")
        except OSError:
            continue
        for tid in tids:
            got = ns_pids(f"{PROC}/{pid}/task/{tid}")
            if got and got[-1] == nspid:
                return int(tid)
    return 0
