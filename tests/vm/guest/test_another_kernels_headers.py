"""bcc compiling against another kernel's headers than the one booted
(`--kernel-headers`): every offset the BPF programs read comes from the
running kernel's BTF, so attribution holds. One backend per kernel (the
host side picks it: tests/vm/test_guest_suite_per_kernel.py HEADER_RUNS),
so each backend runs once on headers that are not its kernel's: 6.1's on
5.10 and 6.12, 6.12's on 6.1.
"""

from __future__ import annotations

import glob
import os
import re
import subprocess

from tests.harness.actors import run
from tests.harness.kernels import REPO
from tests.harness.listeners import start_inotifywait, start_listener, stop
from tests.vm.guest.conftest import attribution_of, vm_agent


def other_kernels_headers() -> str:
    """A linux-headers-<version>-amd64 tree of a kernel series not booted: the
    host's (seen through the shared root) or one the VM cache unpacked."""
    booted = ".".join(os.uname().release.split(".")[:2])
    trees = sorted(glob.glob("/usr/src/linux-headers-*-amd64")
                   + glob.glob(f"{REPO}/vm-cache/kernels/*/usr/src/linux-headers-*-amd64"))
    for tree in trees:
        version = re.match(r"linux-headers-(\d+\.\d+)", os.path.basename(tree))
        if version and version.group(1) != booted and os.path.isdir(f"{tree}/include/generated"):
            return tree
    raise AssertionError(f"no headers tree of a kernel other than {booted} among {trees}")


def test_bcc_compiles_against_another_kernels_headers_and_attribution_holds(backend, tmp_path):
    headers = other_kernels_headers()
    views = set(glob.glob("/tmp/otel-fsnotify-headers-*"))
    agent = vm_agent(backend, tmp_path / "agent", "--kernel-headers", headers).wait_started(600)
    watched = tmp_path / "watched"
    watched.mkdir()
    secret = watched / "secret.txt"
    secret.write_text("x")
    try:
        assert f"kernel headers: {headers} through a private view" in agent.stderr(), agent.stderr()
        tracer = start_inotifywait(watched)
        agent.ready_for(watched)
        listener = start_listener("notify", str(watched))
        try:
            subprocess.run(["touch", str(watched / "made")], check=True)
            cat = run("cat", str(secret))
            ino = agent.wait_for(lambda e: e["tracer_pid"] == tracer.pid and e["name"] == "made", n=4)
            fan = agent.wait_for(lambda e: e["tracer_pid"] == listener.pid and e["tracee_pid"] == cat, n=2)
        finally:
            stop(tracer), stop(listener)
    finally:
        agent.stop()
    assert ino and all(e["tracee_comm"] == "touch" and e["attribution"] == attribution_of(backend)
                       for e in ino), [(e["tracee_comm"], e["attribution"]) for e in ino]
    assert fan and all(e["tracee_comm"] == "cat" and e["path"] == str(secret) for e in fan), fan
    # the view of the headers was the agent's alone: gone with it; /lib/modules untouched
    assert set(glob.glob("/tmp/otel-fsnotify-headers-*")) == views
