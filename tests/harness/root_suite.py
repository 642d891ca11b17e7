"""Paths as a listener under another root sees them: a chroot (a VM's init
that chroots instead of switching root, systemd's RootDirectory=, build
sandboxes). The jail is a plain directory with the system bound in, so the
listeners in it are real inotifywait and fanotify listeners; a process
outside writes into the jail's /work. The agent's `path` must be the one the
listener itself resolves (the fanotify listener prints the readlink of its
event fd), with the path from the namespace's root beside it in `host_path`.
Imported by tests/host/test_paths_under_another_root.py and
tests/vm/guest/test_paths_under_another_root.py, which provide `agent`: a
running agent.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.harness.listeners import REPO, stop

BOUND = ("usr", "etc", "dev")  # with /proc, /tmp and the repository: what the listeners need
LINKED = ("bin", "lib", "lib64", "sbin")  # merged /usr: links into usr/


class Jail:
    """A directory to chroot into, with the system bound in and its own /work."""

    def __init__(self, base: Path):
        self.root = base / "jail"
        self.work = self.root / "work"
        self._mounts: list[Path] = []
        self.work.mkdir(parents=True)
        for name in LINKED:
            if os.path.islink(f"/{name}"):
                os.symlink(os.readlink(f"/{name}"), self.root / name)
        self._bind("/usr", "/etc", "/dev", "/tmp", str(REPO))
        (self.root / "proc").mkdir()
        self._mount(["mount", "-t", "proc", "proc"], self.root / "proc")

    def _bind(self, *paths: str) -> None:
        for path in paths:
            if not os.path.isdir(path):
                continue
            target = self.root / path.lstrip("/")
            target.mkdir(parents=True, exist_ok=True)
            self._mount(["mount", "--rbind", path], target)

    def _mount(self, argv: list[str], target: Path) -> None:
        subprocess.run(argv + [str(target)], check=True)
        self._mounts.append(target)

    def command(self, *argv: str) -> list[str]:
        """argv run inside the jail, from the repository's directory."""
        return ["chroot", str(self.root), "sh", "-c",
                f"cd {shlex.quote(str(REPO))} && exec {shlex.join(argv)}"]

    def remove(self) -> None:
        for target in reversed(self._mounts):
            subprocess.run(["umount", "-l", str(target)], check=True)


@pytest.fixture
def jail(tmp_path):
    j = Jail(tmp_path)
    yield j
    j.remove()


def test_a_listener_in_a_chroot_gets_the_path_it_resolves_and_the_namespace_path_beside_it(agent, jail):
    fan = subprocess.Popen(jail.command(sys.executable, "-m", "tests.harness.fanotify_listener",
                                        "notify", "/work"), stdout=subprocess.PIPE, text=True)
    ino = subprocess.Popen(jail.command("inotifywait", "-m", "/work"), stdout=subprocess.DEVNULL,
                           stderr=subprocess.PIPE, text=True)
    try:
        assert fan.stdout.readline().strip() == "READY"
        for line in ino.stderr:
            if "Watches established" in line:
                break
        agent.ready_for(jail.work)
        (jail.work / "x").write_text("written from outside the jail")
        seen = fan.stdout.readline().split()
        mine = lambda e: e["name"] in ("x", "/work/x") and e["tracee_pid"] == os.getpid()  # noqa: E731
        # each listener's first (inotifywait gets several events per write)
        for tracer in (fan, ino):
            agent.wait_for(lambda e: mine(e) and e["tracer_pid"] == tracer.pid)
        evs = [e for e in agent.events() if mine(e) and e["tracer_pid"] in (fan.pid, ino.pid)]
    finally:
        stop(fan), stop(ino)
    resolved = dict(kv.split("=", 1) for kv in seen[1:])["path"]
    assert resolved == "/work/x", seen  # what the listener itself resolves from its event fd
    outside = str(jail.work / "x")
    fan_evs = [e for e in evs if e["tracer_pid"] == fan.pid]
    ino_evs = [e for e in evs if e["tracer_pid"] == ino.pid]
    assert fan_evs and ino_evs, [(e["tracer_comm"], e["path"]) for e in evs]
    for e in fan_evs + ino_evs:
        assert (e["path"], e["host_path"]) == (resolved, outside), (e["type"], e["path"], e["host_path"])
    assert all(e["name"] == resolved for e in fan_evs)
