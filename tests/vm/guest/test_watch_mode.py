"""Watch mode on Debian's kernel with the exact backends (fentry, kprobe):
the shared suite (tests/harness/watch_suite.py), its actors linked in the
kernel from the agent's own reads of its watch group.
(tests/host/test_watch_mode.py: the same suite on this host's tracepoint backend.)
"""

from __future__ import annotations

import pytest

from tests.harness.watch_suite import *  # noqa: F401,F403 (the suite's tests run here)
from tests.harness.watch_suite import Watch
from tests.vm.guest.conftest import vm_agent


@pytest.fixture
def start_agent(backend):
    return lambda workdir, *extra: vm_agent(backend, workdir, *extra)


@pytest.fixture(scope="module")
def watch(backend, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"watch-{backend}")
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    agent = vm_agent(backend, base / "agent", "--watch", str(root), "--exclude", "*.swp",
                     "--exclude", "**/cache/**", "--state-dir", str(base / "state"))
    agent.wait_started()
    agent.wait_ready(300)
    yield Watch(agent, root, outside)
    agent.stop()
