"""Kubernetes pods as a container runtime lays them out, for real on this
machine: cgroup v2 directories named like the kubelet's (systemd driver,
containerd), and processes moved into them before they run.

    pod = Pod(root)                       # kubepods-besteffort-pod<uid>.slice
    app = pod.container()                 # cri-containerd-<id>.scope
    subprocess.run(app.enter + ["sh", "-c", "..."])
    pod.remove()
"""

from __future__ import annotations

import os
import secrets
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
        # a shell that moves itself into the container's cgroup, then becomes the command
        self.enter = ["sh", "-c", f'echo $$ > {self.dir}/cgroup.procs && exec "$@"', "enter"]


class Pod:
    def __init__(self, root: str | None = None):
        self.root = Path(root or cgroup2_root())
        self.uid = str(uuid.uuid4())
        self.dir = (self.root / "kubepods.slice" / f"kubepods-{QOS}.slice"
                    / f"kubepods-{QOS}-pod{self.uid.replace('-', '_')}.slice")
        self.dir.mkdir(parents=True)
        self.containers: list[Container] = []

    def container(self) -> Container:
        c = Container(self)
        self.containers.append(c)
        return c

    def remove(self, timeout: float = 10.0) -> None:
        """rmdir the cgroups once their processes are gone (deepest first)."""
        deadline = time.monotonic() + timeout
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
