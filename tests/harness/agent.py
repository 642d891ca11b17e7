"""The real agent CLI as a long-running process, for the host and VM suites
and the benchmarks.

    agent = Agent(workdir, "--tracer-pid", "1")             # tracepoint, started
    agent = Agent(workdir, backend="kprobe", wait=False)     # several at once...
    agent.wait_started(600)                                  # ...then wait for each
    agent.wait_for(lambda e: e["tracer_pid"] == pid, n=4)    # events (dicts)
    stats = agent.stop()                                     # its exit stats line

With ``output="jsonl"`` (the default) the events go to ``workdir/events.jsonl``
(``--output-file``; the agent flushes each poll's events); ``output="otlp"``
takes the delivery flags in ``extra``. The agent's stderr is
``workdir/agent.err``. One agent at a time per workdir.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
STATS = "otel-fsnotify: stats "
FIM_READY = "otel-fsnotify: fim ready"


def cli() -> list[str]:
    """argv that runs the agent: the venv's console script, else `python -m otel_fsnotify`."""
    exe = Path(sys.executable).with_name("otel-fsnotify")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "otel_fsnotify"]


class Agent:
    """`otel-fsnotify run --backend B --output O --stats-interval 0 EXTRA...`.

    wait: return only once the agent says ``backend B started`` (else call
    wait_started()). patience: wait_for()'s default timeout in seconds, poll:
    how often it rereads the events. wrap: a command the agent is exec'd
    through (e.g. one that enters a cgroup first).
    """

    def __init__(self, workdir: str | os.PathLike, *extra: str, backend: str = "tracepoint",
                 output: str = "jsonl", wait: bool = True, patience: float = 10.0,
                 poll: float = 0.1, wrap: list[str] | None = None):
        workdir = Path(workdir)
        workdir.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.patience = patience
        self.poll = poll
        self.out = workdir / "events.jsonl"
        self.err = workdir / "agent.err"
        self.out.unlink(missing_ok=True)  # the agent appends: no earlier agent's events
        args = ["run", "--backend", backend, "--stats-interval", "0", "--output", output]
        if output == "jsonl":
            args += ["--output-file", str(self.out)]
        self._errfh = open(self.err, "wb")
        self.wrapped = bool(wrap)
        # its own process group: stop() signals the agent even behind a
        # wrapper that does not pass signals on (nsenter, which forks)
        self.proc = subprocess.Popen(list(wrap or ()) + cli() + args + list(extra), cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=self._errfh,
                                     start_new_session=True)
        if wait:
            self.wait_started()

    def wait_started(self, timeout: float = 300.0) -> "Agent":
        deadline = time.monotonic() + timeout
        marker = f"backend {self.backend} started".encode()
        while marker not in self.err.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent {self.backend} did not start: {self.stderr()}")
            time.sleep(0.1)
        return self

    def wait_ready(self, timeout: float = 120.0) -> str:
        """Watch mode: until the agent prints its `fim ready` line (marks in
        place, start-up scan done); returns that line."""
        deadline = time.monotonic() + timeout
        while True:
            for line in self.err.read_text(errors="replace").splitlines():
                if line.startswith(FIM_READY):
                    return line
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"watch mode did not get ready: {self.stderr()}")
            time.sleep(0.1)

    def stderr(self) -> str:
        """The agent's stderr so far (last 3000 characters), for failure messages."""
        try:
            return self.err.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

    def events(self) -> list[dict]:
        """Every complete event line written so far. The file is read once,
        to its end as it is now: iterating over it while the agent appends
        would give a line cut at that end, then its rest as a line of its own."""
        try:
            text = self.out.read_text()
        except FileNotFoundError:
            return []
        # split at "\n" only (a name may hold other line breaks, e.g. U+2028);
        # what follows the last one is a line still being written
        return [json.loads(line) for line in text.split("\n")[:-1]]

    def count(self, tracer_pid: int) -> int:
        """How many events of this tracer were written so far (counted in the
        raw lines, not decoded: fast on a storm's 100,000 lines)."""
        try:
            return self.out.read_bytes().count(f'"tracer_pid":{tracer_pid},'.encode())
        except FileNotFoundError:
            return 0

    def wait_for(self, pred, n: int = 1, timeout: float | None = None) -> list[dict]:
        """The events matching pred, once there are n of them or after timeout
        (default: patience), whichever comes first."""
        deadline = time.monotonic() + (self.patience if timeout is None else timeout)
        while True:
            got = [e for e in self.events() if pred(e)]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(self.poll)

    def wait_for_tracers(self, tracer_pids, pred=lambda e: True, timeout: float | None = None) -> list[dict]:
        """The events matching pred once each of these tracers has one of
        them (or after timeout). A count cannot stand in: one listener's
        events (or another agent's mirror reads) can make it first."""
        deadline = time.monotonic() + (self.patience if timeout is None else timeout)
        want = set(tracer_pids)
        while True:
            got = [e for e in self.events() if pred(e)]
            if want <= {e["tracer_pid"] for e in got} or time.monotonic() > deadline:
                return got
            time.sleep(self.poll)

    def marked_inodes(self) -> set[int]:
        """Inodes carrying one of the agent's fanotify marks (its mirror of
        the inotify watches), from its fdinfo."""
        return marked_inodes(self.proc.pid)

    def wait_marked(self, *paths, timeout: float = 20.0) -> None:
        """Until the agent mirrors the watches on paths (it does so after
        seeing the listener's inotify_add_watch): acting earlier would be
        unmatched. Objects by (dev, ino): a tmpfs root is inode 1 on every
        tmpfs. The agent's process tree is looked at: under a wrapper
        (nsenter) the agent is the wrapper's child."""
        want = {(st.st_dev, st.st_ino) for st in map(os.stat, paths)}
        deadline = time.monotonic() + timeout
        while not want <= self._marked_in_tree():
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent did not mirror the watches on {paths}")
            time.sleep(0.02)

    def _marked_in_tree(self) -> set[tuple[int, int]]:
        found = set()
        for pid in process_tree(self.proc.pid):
            try:
                found |= marked_objects(pid)
            except OSError:  # gone meanwhile
                pass
        return found

    def ready_for(self, path) -> None:
        """Until the agent can attribute events under a watch on path that a
        listener has just added: at once on the exact backends (the kernel
        record names the actor); the tracepoint backend must first mirror
        the watch (wait_marked)."""
        if self.backend == "tracepoint":
            self.wait_marked(path)

    def stop(self) -> dict:
        """SIGTERM (SIGKILL after 60 s); returns the stats line the agent
        prints at exit ({} if none). Stopping twice is harmless."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        deadline = time.monotonic() + 60  # a wrapped agent may outlive its wrapper a little
        while True:
            for line in self.err.read_text().splitlines():
                if line.startswith(STATS):
                    self._errfh.close()
                    return json.loads(line[len(STATS):])
            if time.monotonic() > deadline or not self.wrapped:
                self._errfh.close()
                return {}
            time.sleep(0.1)


def process_tree(pid: int) -> list[int]:
    """pid and its descendants, parents first."""
    out = [pid]
    for p in out:
        try:
            with open(f"/proc/{p}/task/{p}/children") as fh:
                out += [int(c) for c in fh.read().split()]
        except OSError:
            pass
    return out


def marked_inodes(pid: int) -> set[int]:
    """Inodes carrying one of pid's fanotify marks, from its fdinfo."""
    return {ino for _dev, ino in marked_objects(pid)}


def marked_objects(pid: int) -> set[tuple[int, int]]:
    """(st_dev, st_ino) of the inodes carrying one of pid's fanotify marks,
    from its fdinfo (`fanotify ino:<hex> sdev:<hex, the kernel's dev_t>`)."""
    found = set()
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                text = fh.read()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("fanotify ino:"):
                fields = dict(f.split(":", 1) for f in line.split()[1:3])
                sdev = int(fields["sdev"], 16)  # MAJOR << 20 | MINOR
                found.add((os.makedev(sdev >> 20, sdev & 0xFFFFF), int(fields["ino"], 16)))
    return found
