"""Which actors' events the agent reports: a cgroup, a container, a pod, or
the agent's own pod (`--cgroup`, `--container-id`, `--pod-uid`,
`--this-pod`). Each is a test on the tracee's container fields (read from
its cgroup path, procs.container_of); several given must all hold.

`--this-pod` is the agent's pod uid: from its own cgroup path where the
kubelet's naming shows it, else from $POD_UID (the downward API's
metadata.uid; in a private cgroup namespace, containerd's default on cgroup
v2, /proc/self/cgroup reads `0::/`).
"""

from __future__ import annotations

import os
from typing import NamedTuple

from ..event import Event
from .procs import container_of


class ScopeError(ValueError):
    """A scope that cannot be resolved (one line: what and why)."""


class Scope(NamedTuple):
    cgroup: str = ""  # cgroup v2 path, as /proc/<pid>/cgroup shows it: this and below
    container_id: str = ""
    pod_uid: str = ""

    def __bool__(self) -> bool:
        return bool(self.cgroup or self.container_id or self.pod_uid)

    def holds(self, ev: Event) -> bool:
        """Whether the event's actor is in scope (an unknown actor is not)."""
        if self.pod_uid and ev.tracee_pod_uid != self.pod_uid:
            return False
        if self.container_id and ev.tracee_container_id != self.container_id:
            return False
        if self.cgroup:
            got = ev.tracee_cgroup
            return bool(got) and (got == self.cgroup or got.startswith(self.cgroup.rstrip("/") + "/"))
        return True


def cgroup2_root(mountinfo: str = "/proc/self/mountinfo") -> str:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or
    /sys/fs/cgroup/unified on hybrid hosts); "" if nowhere."""
    try:
        with open(mountinfo) as fh:
            for line in fh:
                fields = line.split()
                sep = fields.index("-") if "-" in fields else -1
                if sep > 0 and fields[sep + 1] == "cgroup2":
                    return fields[4]
    except OSError:
        pass
    return ""


def resolve(cgroup: str = "", container_id: str = "", pod_uid: str = "", this_pod: bool = False,
            environ=os.environ) -> Scope:
    """The scope the flags name; ScopeError (one line) when one cannot be."""
    path = ""
    if cgroup:
        root = cgroup2_root()
        if not root:
            raise ScopeError("--cgroup: no cgroup v2 hierarchy is mounted here (no cgroup2 in "
                             "/proc/self/mountinfo)")
        path = cgroup[len(root):] or "/" if cgroup.startswith(root.rstrip("/") + "/") else cgroup
        if not path.startswith("/") or not os.path.isdir(root.rstrip("/") + path):
            raise ScopeError(f"--cgroup {cgroup}: no such cgroup under {root} (give its directory, "
                             f"or its path as /proc/<pid>/cgroup shows it)")
    if container_id and not (len(container_id) == 64 and all(c in "0123456789abcdef" for c in container_id)):
        raise ScopeError(f"--container-id {container_id!r}: a container id is 64 lowercase hex digits")
    if this_pod:
        pod_uid = pod_uid or own_pod_uid(environ)
    return Scope(path, container_id, pod_uid.replace("_", "-").lower())


def own_pod_uid(environ=os.environ) -> str:
    own = container_of(os.getpid())
    if own.pod_uid:
        return own.pod_uid
    uid = environ.get("POD_UID", "")
    if uid:
        return uid
    where = own.cgroup or "unknown"
    raise ScopeError(f"--this-pod: the agent's cgroup ({where}) names no Kubernetes pod and POD_UID "
                     "is not set: pass the pod's uid with the downward API (env POD_UID from "
                     "fieldRef metadata.uid)")


MAX_DEPTH = 6  # cgroup levels searched for a pod or container directory


def kernel_cgroup(scope: Scope) -> str:
    """The cgroup v2 directory the kernel can test an actor against (the
    most specific the scope names: container, cgroup, pod), "" when this
    agent cannot see it (another cgroup namespace, or not created yet): the
    scope is then applied in user space only."""
    root = cgroup2_root()
    if not root or not scope:
        return ""
    if scope.cgroup and not scope.container_id:
        return root.rstrip("/") + scope.cgroup if scope.cgroup != "/" else root
    if scope.container_id:
        want = lambda name: scope.container_id in name  # noqa: E731
    else:
        uid = scope.pod_uid
        want = lambda name: "pod" + uid in name or "pod" + uid.replace("-", "_") in name  # noqa: E731
    level = [root]
    for _ in range(MAX_DEPTH):
        below = []
        for d in level:
            try:
                with os.scandir(d) as it:
                    for e in it:
                        if e.is_dir(follow_symlinks=False):
                            if want(e.name):
                                return e.path
                            below.append(e.path)
            except OSError:
                continue
        level = below
    return ""
