"""Guest fixtures: the real agent CLI per backend, inside the VM (Debian's
5.10, 6.1 or 6.12: kprobes, fentry, tracepoints, BTF).

backend      each backend in turn, per module (VM_BACKENDS, default
             kprobe,fentry,tracepoint)
agent        that backend's agent, started once per module: compiling under
             TCG takes ~35 s, so many scenarios run against one agent
start_agent  start more agents the VM's way: returns at once (wait_started()
             to wait), wait_for() waits up to 30 s (TCG is slow)
scene        tracers and a tracee started before any agent of the module
wdir         a fresh directory under $TMPDIR for one test
"""

from __future__ import annotations

import json
import os
import subprocess
import tempfile
import time
from pathlib import Path

import pytest

from tests.harness.agent import Agent
from tests.harness.listeners import start_inotifywait, start_listener, stop

BACKENDS = (os.environ.get("VM_BACKENDS") or "kprobe,fentry,tracepoint").split(",")
ON_CHILD = 0x08000000  # FS_EVENT_ON_CHILD


def attribution_of(backend: str) -> str:
    """How a backend names an inotify event's actor (README, backends table)."""
    return "inferred" if backend == "tracepoint" else "exact"


def on_child(backend: str) -> int:
    """The kernel's FS_EVENT_ON_CHILD bit as the backend reports it in i_mask
    (the exact backends report the kernel mask, the tracepoint backend the
    mask the listener read, which never has it)."""
    return 0 if backend == "tracepoint" else ON_CHILD


def vm_agent(backend: str, workdir: Path, *extra: str, output: str = "jsonl",
             wrap: list[str] | None = None) -> Agent:
    return Agent(workdir, *extra, backend=backend, output=output, wait=False, patience=30.0,
                 poll=0.2, wrap=wrap)


@pytest.fixture(scope="module", params=BACKENDS)
def backend(request) -> str:
    return request.param


@pytest.fixture(scope="module")
def agent(backend, tmp_path_factory):
    a = vm_agent(backend, tmp_path_factory.mktemp(f"agent-{backend}")).wait_started()
    yield a
    stats = a.stop()
    print(f"\n[{backend}] agent stats at exit: {json.dumps(stats)}")


@pytest.fixture(scope="session")
def start_agent():
    return vm_agent


class Scene:
    """Started before any agent: an inotifywait and a fanotify listener on
    one directory, and a tracee (sh) that touches `fromS` there once act()
    releases it."""

    def __init__(self, base: Path):
        self.wdir = base / "watched"
        self.wdir.mkdir()
        self.ino = start_inotifywait(self.wdir)
        self.fan = start_listener("notify", str(self.wdir))
        self.tracee = subprocess.Popen(["sh", "-c", f"read x; exec touch {self.wdir}/fromS"],
                                       stdin=subprocess.PIPE)

    def act(self) -> None:
        """The tracee touches fromS, then a touch of `other`; 3 s to be seen."""
        self.tracee.stdin.write(b"go\n")
        self.tracee.stdin.close()
        self.tracee.wait(30)
        subprocess.run(["touch", str(self.wdir / "other")], check=True)
        time.sleep(3)

    def stop(self) -> None:
        stop(self.ino), stop(self.fan)


@pytest.fixture(scope="module")
def scene(backend, tmp_path_factory):
    s = Scene(tmp_path_factory.mktemp(f"scene-{backend}"))
    yield s
    s.stop()


@pytest.fixture
def wdir():
    d = tempfile.mkdtemp(prefix="fsn-")  # $TMPDIR: the scratch disk where tmpfs has no fsid
    yield Path(d)
