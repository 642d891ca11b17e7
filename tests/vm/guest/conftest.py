"""Guest fixtures: the real agent CLI per exact backend, inside the VM
(Debian 6.1 kernel: kprobes, fentry, BTF).

backend      each exact backend in turn, per module (VM_BACKENDS, default
             kprobe,fentry)
agent        that backend's agent, started once per module: compiling under
             TCG takes ~35 s, so many scenarios run against one agent
start_agent  start more agents the VM's way: returns at once (wait_started()
             to wait), wait_for() waits up to 30 s (TCG is slow)
scene        tracers and a tracee started before any agent of the module
wdir         a fresh directory under /tmp for one test
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

BACKENDS = os.environ.get("VM_BACKENDS", "kprobe,fentry").split(",")


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
    d = tempfile.mkdtemp(prefix="fsn-", dir="/tmp")
    yield Path(d)
