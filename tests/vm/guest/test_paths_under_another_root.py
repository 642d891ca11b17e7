"""Paths as a listener in a chroot sees them, every backend: the shared
suite (tests/harness/root_suite.py) against the module's agent.
(tests/host/test_paths_under_another_root.py: this host's tracepoint backend.)
"""

from __future__ import annotations

from tests.harness.root_suite import *  # noqa: F401,F403 (the suite's tests run here)
