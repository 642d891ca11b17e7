"""Processes: small readers of /proc/<pid>, and the process table fed by the
sched tracepoints (fork, exec, exit), seeded from /proc.

Every reader returns "" / 0 / None when the process is gone or the field is
unreadable: unknown values are never invented. The table lets the agent name
a tracee that exited before anyone looked at /proc (a `touch` lives for a
millisecond): exited entries are kept for a grace period so events read
after the exit still resolve.
"""

from __future__ import annotations

import os
import re
import time
from collections import deque
from typing import NamedTuple

import msgspec

PROC = "/proc"

# A container's cgroup, as runtimes and the kubelet name it: a 64-hex-digit
# component, bare (cgroupfs driver: /kubepods/<qos>/pod<uid>/<id>) or with the
# runtime's prefix and .scope (systemd driver: .../kubepods-<qos>-pod<uid with _
# for ->.slice/cri-containerd-<id>.scope; crio-, docker-, libpod- likewise).
_CONTAINER = re.compile(r"(?:^|/)(?:([a-z][a-z-]*?)-)?([0-9a-f]{64})(?:\.scope)?(?:/|$)")
_POD_UID = re.compile(r"pod([0-9a-f]{8}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{4}[-_][0-9a-f]{12})")
_RUNTIMES = {"cri-containerd": "containerd", "containerd": "containerd", "crio": "cri-o",
             "docker": "docker", "libpod": "podman"}


class Container(NamedTuple):
    """Where a process runs, from its cgroups ("" when not in a container)."""

    id: str = ""
    runtime: str = ""  # containerd, cri-o, docker, podman; "" when the path does not say
    pod_uid: str = ""  # the Kubernetes pod's metadata uid, with dashes
    cgroup: str = ""  # its cgroup v2 path (as its cgroup namespace shows it to the agent)


NO_CONTAINER = Container()


def container_of_cgroup(path: str) -> Container:
    """The container a cgroup v2 path names (the last one when nested)."""
    found = list(_CONTAINER.finditer(path))
    if not found:
        return NO_CONTAINER
    m = found[-1]
    pod = _POD_UID.search(path[: m.start(2)])
    return Container(m.group(2), _RUNTIMES.get(m.group(1) or "", ""),
                     pod.group(1).replace("_", "-") if pod else "")


def command_line(pid: int) -> str:
    """The process's command line, arguments joined by spaces ("" if gone)."""
    try:
        with open(f"{PROC}/{pid}/cmdline", "rb") as fh:
            raw = fh.read()
    except OSError:
        return ""
    return raw.rstrip(b"\0").replace(b"\0", b" ").decode("utf-8", "replace")


def exe_path(pid: int) -> str:
    """Full path of the process's executable, "" if unknown (gone, kernel thread)."""
    try:
        path = os.readlink(f"{PROC}/{pid}/exe")
    except OSError:
        return ""
    return path[: -len(" (deleted)")] if path.endswith(" (deleted)") else path


def container_of(pid: int) -> Container:
    """The container and cgroup v2 path of a process, from /proc/<pid>/cgroup;
    NO_CONTAINER when it is gone."""
    try:
        with open(f"{PROC}/{pid}/cgroup") as fh:
            text = fh.read()
    except OSError:
        return NO_CONTAINER
    found, v2 = NO_CONTAINER, ""
    for line in text.splitlines():
        hierarchy, _, rest = line.partition(":")
        path = rest.partition(":")[2]
        if hierarchy == "0":
            v2 = path
        if not found.id:
            found = container_of_cgroup(path)
    return found._replace(cgroup=v2)


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

GRACE_S = 30.0  # keep exited processes this long
MAX_EXECS_KEPT = 4  # identities kept per pid from before its latest execs
MAX_EXITED = 65536  # bound on remembered exited processes
MAX_THREADS = 65536  # bound on remembered tid -> tgid (oldest forgotten first)


class Proc(msgspec.Struct):
    pid: int
    ppid: int = 0
    uid: int = 0  # effective
    gid: int = 0  # effective
    ruid: int = 0  # real
    suid: int = 0  # saved
    mntns_id: int = 0
    comm: str = ""
    exe: str = ""
    container: Container = NO_CONTAINER
    exited_at: float = 0.0  # monotonic seconds, 0 while alive


def _ids(status_: dict[str, str], key: str) -> list[int]:
    """The four ids of a Uid:/Gid: status line (real, effective, saved, fs)."""
    ids = [int(x) for x in status_.get(key, "0 0 0 0").split()]
    return ids + [ids[-1]] * (4 - len(ids))


def _exec_path(pid: int, filename: str) -> str:
    """The executable an exec record names: /proc/<pid>/exe while it still
    shows that program (resolved in the process's own mount namespace),
    else the record's own path resolved here (the process may have exec'd
    again since)."""
    now = exe_path(pid)
    if now and os.path.basename(now) == os.path.basename(filename):
        return now
    if filename.startswith("/"):
        return os.path.realpath(filename)
    return now


class ProcTable:
    def __init__(self):
        self._procs: dict[int, Proc] = {}
        self._exited: deque[tuple[float, int]] = deque()  # (exit time, pid), oldest first
        self.misses = 0  # lookups of pids nobody knew (counted, reported)
        self._threads: dict[int, int] = {}  # tid -> tgid of threads (not leaders)
        # (pid namespace inum, number in it) -> tid, for tasks born outside the agent's
        self._ns_tasks: dict[tuple[int, int], int] = {}
        # pid -> [[exec time, the identity it had until then, how many of its
        # events were waiting in the agent's watch group at the exec]], oldest
        # first: an event is attributed to the identity current when it happened
        self._before_exec: dict[int, list[list]] = {}

    def seed(self) -> None:
        """Load every process running now."""
        for pid in pids():
            self._from_proc(pid)

    def _from_proc(self, pid: int) -> Proc | None:
        st = status(pid)
        if not st or st.get("Tgid", str(pid)) != str(pid):
            return None  # gone, or a thread id (/proc/<tid> answers too): not a process
        try:
            uids = _ids(st, "Uid")
            proc = Proc(
                pid=pid,
                ppid=int(st.get("PPid", "0")),
                uid=uids[1],  # Uid: real effective saved filesystem
                gid=_ids(st, "Gid")[1],
                ruid=uids[0],
                suid=uids[2],
                mntns_id=mntns_id(pid),
                comm=st.get("Name", ""),
                exe=exe_path(pid),
                container=container_of(pid),
            )
        except (ValueError, IndexError):
            return None
        self._procs[pid] = proc
        return proc

    # -- feed from the sched tracepoints --------------------------------------
    def fork(self, pid: int, ppid: int, comm: str, uid: int, gid: int, mntns_id: int,
             ruid: int | None = None, suid: int | None = None,
             container: Container | None = None) -> None:
        """A new process (uid, gid effective; ruid, suid default to uid;
        container: where the kernel said it is, else its parent's)."""
        parent = self._procs.get(ppid)
        self._before_exec.pop(pid, None)  # a new process: a reused pid's past is not its own
        if container is None:
            container = parent.container if parent else NO_CONTAINER
        self._procs[pid] = Proc(pid=pid, ppid=ppid, uid=uid, gid=gid, mntns_id=mntns_id, comm=comm,
                                ruid=uid if ruid is None else ruid, suid=uid if suid is None else suid,
                                exe=parent.exe if parent else "", container=container)

    def exec(self, pid: int, ppid: int, comm: str, uid: int, gid: int, mntns_id: int,
             filename: str, at_ns: int = 0, queued: int = 0, ruid: int | None = None,
             suid: int | None = None, container: Container | None = None) -> None:
        """The process exec'd `filename` at at_ns (CLOCK_MONOTONIC): a new
        identity from then on; the one before is kept for events before it
        (and for the `queued` watch-group events it left unread)."""
        old = self._procs.get(pid)
        if old is not None and at_ns:
            history = self._before_exec.setdefault(pid, [])
            history.append([at_ns, old, queued])
            del history[:-MAX_EXECS_KEPT]
            if len(self._before_exec) > MAX_EXITED:
                del self._before_exec[next(iter(self._before_exec))]
        if container is None:  # not said by the kernel: as before, or as /proc says now
            container = old.container if old and old.container.id else container_of(pid)
        self._procs[pid] = Proc(pid=pid, ppid=ppid, uid=uid, gid=gid, mntns_id=mntns_id, comm=comm,
                                ruid=uid if ruid is None else ruid, suid=uid if suid is None else suid,
                                exe=_exec_path(pid, filename), container=container)

    def creds(self, pid: int, uid: int, gid: int, ruid: int, suid: int, at_ns: int,
              queued: int = 0) -> None:
        """The process changed its ids at at_ns (set*id): a new identity from
        then on; the one before is kept for its earlier events, as for exec; `queued` of its events were made before (as for exec)."""
        old = self._procs.get(pid)
        if old is None or (old.uid, old.gid, old.ruid, old.suid) == (uid, gid, ruid, suid):
            return
        history = self._before_exec.setdefault(pid, [])
        history.append([at_ns, old, queued])
        del history[:-MAX_EXECS_KEPT]
        self._procs[pid] = msgspec.structs.replace(old, uid=uid, gid=gid, ruid=ruid, suid=suid)

    def thread(self, tid: int, tgid: int) -> None:
        """A new thread (from the sched fork tracepoint)."""
        self._threads.pop(tid, None)
        self._threads[tid] = tgid
        if len(self._threads) > MAX_THREADS:
            del self._threads[next(iter(self._threads))]

    def ns_task(self, pidns: int, nspid: int, tid: int) -> None:
        """A task born in pid namespace pidns as number nspid (sched fork):
        events read by a listener in that namespace carry nspid."""
        key = (pidns, nspid)
        self._ns_tasks.pop(key, None)
        self._ns_tasks[key] = tid
        if len(self._ns_tasks) > MAX_THREADS:
            del self._ns_tasks[next(iter(self._ns_tasks))]

    def from_ns(self, pidns: int, nspid: int) -> int:
        """The task (pid or tid, agent numbering) that is nspid in pidns, 0 if
        not seen born. Kept after its exit (bounded, oldest first), so a
        short-lived actor still resolves; a reused number overwrites it."""
        return self._ns_tasks.get((pidns, nspid), 0)

    def tgid_of(self, tid: int) -> int:
        """The process a thread id belongs to; 0 if unknown."""
        if tid <= 0:
            return 0
        tgid = self._threads.get(tid)
        if tgid is not None:
            return tgid
        if tid in self._procs:
            return tid  # a process's main thread
        st = status(tid)  # /proc/<tid> answers for any live thread
        try:
            tgid = int(st.get("Tgid", "0"))
        except ValueError:
            tgid = 0
        if tgid and tgid != tid:
            self.thread(tid, tgid)
        return tgid

    def exit(self, pid: int) -> None:
        proc = self._procs.get(pid)
        if proc and not proc.exited_at:
            now = time.monotonic()
            proc.exited_at = now
            self._exited.append((now, pid))
        self.expire()

    def expire(self, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        while self._exited and (now - self._exited[0][0] > GRACE_S or len(self._exited) > MAX_EXITED):
            _, pid = self._exited.popleft()
            proc = self._procs.get(pid)
            if proc and proc.exited_at and now - proc.exited_at >= 0:
                del self._procs[pid]
                self._before_exec.pop(pid, None)

    # -- lookups ---------------------------------------------------------------
    def get(self, pid: int, at_ns: int = 0) -> Proc | None:
        """The process, from the table or (first sight) from /proc; None if
        unknown. at_ns (CLOCK_MONOTONIC): as it was then, before any later exec."""
        if pid <= 0:
            return None
        if at_ns:
            for exec_ns, before, _queued in self._before_exec.get(pid, ()):
                if at_ns < exec_ns:
                    return before
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._from_proc(pid)
            if proc is None:
                self.misses += 1
        elif not proc.exe and not proc.exited_at:
            proc.exe = exe_path(pid)
        return proc

    def queued(self, pid: int) -> Proc | None:
        """The process as it was when it caused the next event the agent
        reads from its watch group: the identity before an exec that found
        events of it still queued (the kernel counted them), else as now."""
        history = self._before_exec.get(pid, ())
        for i, entry in enumerate(history):
            if entry[2] > 0:
                for later in history[i:]:  # still queued at each later exec too
                    if later[2] > 0:
                        later[2] -= 1
                return entry[1]
        return self.get(pid)

    def __len__(self) -> int:
        return len(self._procs)
