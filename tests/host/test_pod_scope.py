"""A sidecar scoped to its pod on this host's backend (tracepoint): the
shared suite (tests/harness/pod_suite.py), and `--this-pod` outside a pod.
(tests/vm/guest/test_pod_scope.py: the same suite on the exact backends.)
"""

from __future__ import annotations

import subprocess

import pytest

from tests.harness.agent import Agent
from tests.harness.pod_suite import *  # noqa: F401,F403 (the suite's tests run here)

pytestmark = pytest.mark.host


@pytest.fixture
def scope_in_kernel() -> bool:
    return False


@pytest.fixture
def start_sidecar():
    """The sidecar agent on this host's backend, started inside `wrap`."""
    def start(workdir, *extra, wrap, output="jsonl"):
        return Agent(workdir, *extra, output=output, wrap=wrap)
    return start


def test_this_pod_outside_any_pod_says_what_is_missing(tmp_path):
    proc = subprocess.run(Agent.__init__.__globals__["cli"]() + ["run", "--this-pod", "--output", "jsonl"],
                          capture_output=True, text=True, timeout=60, env={"PATH": "/usr/bin:/bin"})
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "otel-fsnotify: error: --this-pod: the agent's cgroup (/) names no Kubernetes pod and POD_UID is "
        "not set: pass the pod's uid with the downward API (env POD_UID from fieldRef metadata.uid)"]
