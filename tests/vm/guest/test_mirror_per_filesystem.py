"""The tracepoint backend's mirror on a tmpfs of its own, on every kernel:
fully attributed where fanotify gets file handles there (6.1, 6.12), by
opens and closes with one warning where it does not (5.10)
(tests/harness/mirror_suite.py; tests/host/test_watch_mirror.py runs it on
this host). Only the tracepoint backend has a mirror."""

from __future__ import annotations

import pytest

from tests.harness.mirror_suite import *  # noqa: F401,F403 (the suite's test runs here)
from tests.vm.guest.conftest import BACKENDS


@pytest.fixture(scope="module", params=[b for b in BACKENDS if b == "tracepoint"])
def backend(request) -> str:
    return request.param


@pytest.fixture
def tracepoint_agent(agent):
    return agent
