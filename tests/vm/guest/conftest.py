"""Guest fixtures: the real agent CLI per exact backend, started once per backend.

Runs inside the VM (Debian 6.1 kernel: kprobes, fentry, BTF). Compiling under
TCG takes ~35 s, so each backend's agent is started once per module and many
scenarios run against it.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
LISTENER = str(REPO / "tests" / "tools" / "fanotify_listener.py")
BACKENDS = os.environ.get("VM_BACKENDS", "kprobe,fentry").split(",")
STATS = "otel-fsnotify: stats "


def agent_cmd() -> list[str]:
    exe = Path(sys.executable).with_name("otel-fsnotify")
    return [str(exe)] if exe.exists() else [sys.executable, "-m", "otel_fsnotify"]


class Agent:
    """`otel-fsnotify run --backend B --output jsonl` as a long-running process."""

    def __init__(self, backend: str, workdir: Path, *extra: str, output: str = "jsonl"):
        workdir.mkdir(parents=True, exist_ok=True)
        self.backend = backend
        self.out = workdir / "events.jsonl"
        self.err = workdir / "agent.err"
        args = ["run", "--backend", backend, "--stats-interval", "0", "--output", output]
        if output == "jsonl":
            args += ["--output-file", str(self.out)]
        self._errfh = open(self.err, "wb")
        self.proc = subprocess.Popen(agent_cmd() + args + list(extra), cwd=REPO,
                                     stdout=subprocess.DEVNULL, stderr=self._errfh)

    def wait_started(self, timeout: float = 300) -> "Agent":
        deadline = time.monotonic() + timeout
        marker = f"backend {self.backend} started".encode()
        while marker not in self.err.read_bytes():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"agent {self.backend} did not start: {self.err.read_text()[-2000:]}")
            time.sleep(0.2)
        return self

    def events(self) -> list[dict]:
        try:
            with open(self.out) as fh:
                return [json.loads(line) for line in fh if line.endswith("\n")]
        except FileNotFoundError:
            return []

    def wait_for(self, pred, n: int = 1, timeout: float = 30.0) -> list[dict]:
        deadline = time.monotonic() + timeout
        while True:
            got = [e for e in self.events() if pred(e)]
            if len(got) >= n or time.monotonic() > deadline:
                return got
            time.sleep(0.2)

    def stop(self) -> dict:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._errfh.close()
        for line in self.err.read_text().splitlines():
            if line.startswith(STATS):
                return json.loads(line[len(STATS):])
        return {}

    def stats_now(self) -> dict:
        """Counters so far: SIGUSR1 is not wired, so stop and report."""
        return self.stop()


@pytest.fixture(scope="module", params=BACKENDS)
def agent(request, tmp_path_factory):
    a = Agent(request.param, tmp_path_factory.mktemp(f"agent-{request.param}")).wait_started()
    yield a
    stats = a.stop()
    print(f"\n[{request.param}] agent stats at exit: {json.dumps(stats)}")


@pytest.fixture
def wdir():
    d = tempfile.mkdtemp(prefix="fsn-", dir="/tmp")
    yield Path(d)


def start_listener(*args: str) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, LISTENER, *args], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line == "READY", f"fanotify listener said {line!r}"
    return proc


def start_inotifywait(path: Path) -> subprocess.Popen:
    proc = subprocess.Popen(["inotifywait", "-m", str(path)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    for line in proc.stderr:
        if b"Watches established" in line:
            return proc
    raise RuntimeError("inotifywait did not start")


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
