"""Kubernetes pods as a container runtime lays them out, for real on this
machine: cgroup v2 directories named like the kubelet's (systemd driver,
containerd), and processes moved into them before they run.

    pod = Pod()                           # kubepods-besteffort-pod<uid>.slice
    app = pod.container()                 # cri-containerd-<id>.scope
    subprocess.run(app.enter + ["sh", "-c", "..."])
    pod.remove()

With `base` (a directory), the pod also gets what a runtime gives it: a
pause process holding new pid and mount namespaces (with its own /proc),
`vol` — a private tmpfs no other mount namespace sees — and `data`, the
host directory `emptydir` bind-mounted the way the kubelet mounts an
emptyDir (so the pod's path and the host's differ). Its containers then run
in those namespaces.
"""

from __future__ import annotations

import os
import secrets
import subprocess
import time
import uuid
from pathlib import Path

from otel_fsnotify.enrich.scope import cgroup2_root

QOS = "besteffort"


class Container:
    def __init__(self, pod: "Pod"):
        self.id = secrets.token_hex(32)
        self.dir = pod.dir / f"cri-containerd-{self.id}.scope"
        self.dir.mkdir()
        self.cgroup = "/" + str(self.dir.relative_to(pod.root))
        # a shell that moves itself into the container's cgroup, then becomes
        # the command (in the pod's namespaces when it has them)
        into = f"nsenter -t {pod.ns_pid} -p -m -- " if pod.ns_pid else ""
        self.enter = ["sh", "-c", f'echo $$ > {self.dir}/cgroup.procs && exec {into}"$@"', "enter"]
        # the cgroup only: a container sharing the host's namespaces (hostPID)
        self.join = ["sh", "-c", f'echo $$ > {self.dir}/cgroup.procs && exec "$@"', "join"]


class Pod:
    def __init__(self, base: Path | None = None, root: str | None = None):
        self.root = Path(root or cgroup2_root())
        self.uid = str(uuid.uuid4())
        self.dir = (self.root / "kubepods.slice" / f"kubepods-{QOS}.slice"
                    / f"kubepods-{QOS}-pod{self.uid.replace('-', '_')}.slice")
        self.dir.mkdir(parents=True)
        self.containers: list[Container] = []
        self.ns_pid = 0  # the process holding the pod's namespaces, if it has its own
        if base is not None:
            self._namespaces(Path(base) / f"pod-{self.uid[:8]}")

    def _namespaces(self, top: Path) -> None:
        self.vol, self.data, self.emptydir = top / "vol", top / "data", top / "emptydir"
        for d in (self.vol, self.data, self.emptydir):
            d.mkdir(parents=True)
        ready = top / "ready"
        pause = Container(self)  # the pause container: it holds the namespaces
        self.containers.append(pause)
        self.pause = subprocess.Popen(
            ["sh", "-c", f'echo $$ > {pause.dir}/cgroup.procs && exec unshare --pid --mount --fork '
             f'--propagation private --mount-proc sh -c "$0"',
             f"mount -t tmpfs podvol {self.vol} && mount --bind {self.emptydir} {self.data} "
             f"&& touch {ready} && exec sleep infinity"])
        deadline = time.monotonic() + 10
        while not ready.exists():
            assert self.pause.poll() is None and time.monotonic() < deadline, "the pod's namespaces"
            time.sleep(0.02)
        # nsenter -t wants the process holding the namespaces: unshare's child
        self.ns_pid = int(open(f"/proc/{self.pause.pid}/task/{self.pause.pid}/children").read().split()[0])

    def container(self) -> Container:
        c = Container(self)
        self.containers.append(c)
        return c

    def remove(self, timeout: float = 10.0) -> None:
        """Kill the pod's processes, rmdir the cgroups once they are gone
        (deepest first)."""
        deadline = time.monotonic() + timeout
        for c in self.containers:
            try:
                (c.dir / "cgroup.kill").write_text("1")  # 5.14+
            except OSError:
                for pid in (c.dir / "cgroup.procs").read_text().split():
                    try:
                        os.kill(int(pid), 9)
                    except OSError:
                        pass
        for d in [c.dir for c in self.containers] + [self.dir]:
            while d.exists():
                try:
                    d.rmdir()
                except OSError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        for d in (self.dir.parent, self.dir.parent.parent):
            try:
                d.rmdir()  # only when no other pod is left in it
            except OSError:
                pass


def cgroup_v2_available() -> bool:
    root = cgroup2_root()
    return bool(root) and os.access(root, os.W_OK)
