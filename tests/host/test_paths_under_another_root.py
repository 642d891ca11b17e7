"""Paths as a listener in a chroot sees them, on this host's backend
(tracepoint): the shared suite (tests/harness/root_suite.py).
(tests/vm/guest/test_paths_under_another_root.py: every backend on every VM kernel.)
"""

from __future__ import annotations

import pytest

from tests.harness.agent import Agent
from tests.harness.root_suite import *  # noqa: F401,F403 (the suite's tests run here)

pytestmark = pytest.mark.host


@pytest.fixture
def agent(tmp_path):
    a = Agent(tmp_path / "agent")
    yield a
    a.stop()
