"""Guest fixtures: the real agent CLI per exact backend, started once per backend.

Runs inside the VM (Debian 6.1 kernel: kprobes, fentry, BTF). Compiling under
TCG takes ~35 s, so each backend's agent is started once per module and many
scenarios run against it.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
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

    def stderr(self) -> str:
        """The agent's stderr so far (last 3000 characters), for failure messages."""
        try:
            return self.err.read_text(errors="replace")[-3000:]
        except FileNotFoundError:
            return ""

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
    proc = subprocess.Popen([sys.executable, "-m", "tests.harness.fanotify_listener", *args], cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
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


TRACEFS = "/sys/kernel/tracing"
_PROBE = "otelfsn_group"


def group_of(tracer_pid: int, trigger) -> int:
    """The struct fsnotify_group address a tracer reads from, as the kernel shows it.

    A tracefs kprobe event on fsnotify_remove_first_event(group) records its first
    argument; `trigger()` makes the tracer read one event. No BPF, no agent: an
    independent witness of the address that --tracer-group filters on.
    """
    def define(line: str) -> None:
        # O_APPEND without O_TRUNC: truncating would remove every kprobe event
        # (tracefs refuses the seek of Python's "a" mode with EINVAL)
        fd = os.open(f"{TRACEFS}/kprobe_events", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    define(f"p:{_PROBE} fsnotify_remove_first_event group=%di:x64\n")
    enable = Path(TRACEFS, "events/kprobes", _PROBE, "enable")
    try:
        Path(TRACEFS, "trace").write_text("")  # clear the trace buffer
        enable.write_text("1")
        trigger()
        deadline = time.monotonic() + 20
        pattern = re.compile(rf"-{tracer_pid}\s+\[.*{_PROBE}:.*group=(0x[0-9a-f]+)")
        while time.monotonic() < deadline:
            m = pattern.search(Path(TRACEFS, "trace").read_text())
            if m:
                return int(m.group(1), 16)
            time.sleep(0.2)
        raise RuntimeError(f"no {_PROBE} hit for pid {tracer_pid}: "
                           + Path(TRACEFS, "trace").read_text()[-1500:])
    finally:
        enable.write_text("0")
        define(f"-:{_PROBE}\n")
