"""A sidecar scoped to its pod on every backend: the shared suite
(tests/harness/pod_suite.py). The exact backends test the scope in the
kernel, the tracepoint backend in user space.
(tests/host/test_pod_scope.py: the same suite on this host's tracepoint backend.)
"""

from __future__ import annotations

import pytest

from tests.harness.pod_suite import *  # noqa: F401,F403 (the suite's tests run here)
from tests.vm.guest.conftest import vm_agent


@pytest.fixture
def scope_in_kernel(backend) -> bool:
    return backend != "tracepoint"


@pytest.fixture
def start_sidecar(backend):
    def start(workdir, *extra, wrap, output="jsonl"):
        return vm_agent(backend, workdir, *extra, output=output, wrap=wrap)
    return start
