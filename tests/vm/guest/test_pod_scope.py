"""A sidecar scoped to its pod on the exact backends (fentry, kprobe): the
shared suite (tests/harness/pod_suite.py); the tracee's cgroup comes from the
kernel record of each event here.
(tests/host/test_pod_scope.py: the same suite on this host's tracepoint backend.)
"""

from __future__ import annotations

import pytest

from tests.harness.pod_suite import *  # noqa: F401,F403 (the suite's tests run here)
from tests.vm.guest.conftest import vm_agent


@pytest.fixture
def scope_in_kernel() -> bool:
    return True


@pytest.fixture
def start_sidecar(backend):
    def start(workdir, *extra, wrap, output="jsonl"):
        return vm_agent(backend, workdir, *extra, output=output, wrap=wrap)
    return start
