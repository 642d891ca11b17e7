"""Run the real agent CLI (`otel-fsnotify run --backend tracepoint`) for host tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
LISTENER = str(ROOT / "tests" / "tools" / "fanotify_listener.py")


def cli() -> list[str]:
    exe = Path(sys.executable).with_name("otel-fsnotify")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "otel_fsnotify"]


class Agent:
    def __init__(self, workdir: Path, *extra: str):
        self.out = workdir / "events.jsonl"
        self.err = workdir / "agent.err"
        self._errfh = open(self.err, "wb")
        self._outfh = open(self.out, "wb")
        # jsonl on stdout: the output writes and flushes each poll's events
        self.proc = subprocess.Popen(
            cli() + ["run", "--backend", "tracepoint", "--output", "jsonl",
                     "--stats-interval", "0", *extra],
            stdout=self._outfh, stderr=self._errfh, cwd=ROOT)
        deadline = time.monotonic() + 60
        while b"backend tracepoint started" not in self.err.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("agent did not start: " + self.err.read_text())
            time.sleep(0.1)

    def events(self) -> list[dict]:
        if not self.out.exists():
            return []
        with open(self.out) as fh:
            return [json.loads(line) for line in fh if line.endswith("\n")]

    def wait_for(self, pred, n: int = 1, timeout: float = 10.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.events() if pred(e)]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.1)

    def marked_inodes(self) -> set[int]:
        """Inodes carrying one of the agent's fanotify marks (its mirror of
        the inotify watches), from its fdinfo."""
        found = set()
        pid = self.proc.pid
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            try:
                with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                    text = fh.read()
            except OSError:
                continue
            for line in text.splitlines():
                if line.startswith("fanotify ino:"):
                    found.add(int(line.split()[1].split(":")[1], 16))
        return found

    def wait_marked(self, path, timeout: float = 20.0) -> None:
        """Until the agent mirrors a watch on path (it does so after seeing
        the listener's inotify_add_watch): acting earlier would be unmatched."""
        ino = os.stat(path).st_ino
        deadline = time.monotonic() + timeout
        while ino not in self.marked_inodes():
            if time.monotonic() > deadline:
                raise AssertionError(f"the agent did not mirror the watch on {path}")
            time.sleep(0.02)

    def stop(self) -> dict:
        """SIGTERM; returns the stats line the agent prints at exit."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(30)
        self._errfh.close()
        self._outfh.close()
        for line in self.err.read_text().splitlines():
            if line.startswith("otel-fsnotify: stats "):
                return json.loads(line[len("otel-fsnotify: stats "):])
        return {}


def start_listener(*args: str) -> subprocess.Popen:
    """tests/tools/fanotify_listener.py, once it printed READY."""
    proc = subprocess.Popen([sys.executable, LISTENER, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "READY"
    return proc


def start_inotifywait(path: str, log: Path) -> subprocess.Popen:
    fh = open(log, "wb")
    proc = subprocess.Popen(["inotifywait", "-m", path], stdout=fh, stderr=subprocess.PIPE)
    for line in proc.stderr:
        if b"Watches established" in line:
            break
    return proc


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

