"""Process table fed by sched tracepoints (fork, exec, exit), seeded from /proc.

Lets the agent name a tracee that exited before anyone looked at /proc (a
`touch` lives for a millisecond). Exited entries are kept for a grace period
so events read after the exit still resolve.
"""

from __future__ import annotations

import time
from collections import deque

import msgspec

from . import procfs

GRACE_S = 30.0  # keep exited processes this long
MAX_EXITED = 65536  # bound on remembered exited processes
MAX_THREADS = 65536  # bound on remembered tid -> tgid (oldest forgotten first)


class Proc(msgspec.Struct):
    pid: int
    ppid: int = 0
    uid: int = 0
    gid: int = 0
    mntns: int = 0
    comm: str = ""
    exe: str = ""
    container_id: str = ""
    exited_at: float = 0.0  # monotonic seconds, 0 while alive


class ProcTable:
    def __init__(self):
        self._procs: dict[int, Proc] = {}
        self._exited: deque[tuple[float, int]] = deque()  # (exit time, pid), oldest first
        self.misses = 0  # lookups of pids nobody knew (counted, reported)
        self._threads: dict[int, int] = {}  # tid -> tgid of threads (not leaders)
        # (pid namespace inum, number in it) -> tid, for tasks born outside the agent's
        self._ns_tasks: dict[tuple[int, int], int] = {}

    def seed(self) -> None:
        """Load every process running now."""
        for pid in procfs.pids():
            self._from_proc(pid)

    def _from_proc(self, pid: int) -> Proc | None:
        st = procfs.status(pid)
        if not st or st.get("Tgid", str(pid)) != str(pid):
            return None  # gone, or a thread id (/proc/<tid> answers too): not a process
        try:
            proc = Proc(
                pid=pid,
                ppid=int(st.get("PPid", "0")),
                uid=int(st.get("Uid", "0").split()[0]),
                gid=int(st.get("Gid", "0").split()[0]),
                mntns=procfs.mntns_id(pid),
                comm=st.get("Name", ""),
                exe=procfs.exe_path(pid),
                container_id=procfs.container_id(pid),
            )
        except (ValueError, IndexError):
            return None
        self._procs[pid] = proc
        return proc

    # -- feed from the sched tracepoints --------------------------------------
    def fork(self, pid: int, ppid: int, comm: str, uid: int, gid: int, mntns: int) -> None:
        parent = self._procs.get(ppid)
        self._procs[pid] = Proc(pid=pid, ppid=ppid, uid=uid, gid=gid, mntns=mntns, comm=comm,
                                exe=parent.exe if parent else "",
                                container_id=parent.container_id if parent else "")

    def exec(self, pid: int, ppid: int, comm: str, uid: int, gid: int, mntns: int,
             filename: str) -> None:
        old = self._procs.get(pid)
        exe = procfs.exe_path(pid) or (filename if filename.startswith("/") else "")
        cid = (old.container_id if old else "") or procfs.container_id(pid)
        self._procs[pid] = Proc(pid=pid, ppid=ppid, uid=uid, gid=gid, mntns=mntns, comm=comm,
                                exe=exe, container_id=cid)

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
        st = procfs.status(tid)  # /proc/<tid> answers for any live thread
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

    # -- lookups ---------------------------------------------------------------
    def get(self, pid: int) -> Proc | None:
        """The process, from the table or (first sight) from /proc; None if unknown."""
        if pid <= 0:
            return None
        proc = self._procs.get(pid)
        if proc is None:
            proc = self._from_proc(pid)
            if proc is None:
                self.misses += 1
        elif not proc.exe and not proc.exited_at:
            proc.exe = procfs.exe_path(pid)
        return proc

    def comm(self, pid: int) -> str:
        proc = self.get(pid)
        return proc.comm if proc else ""

    def __len__(self) -> int:
        return len(self._procs)
