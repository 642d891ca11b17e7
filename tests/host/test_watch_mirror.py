"""The agent's mirror of inotify watches, tracepoint backend: its fanotify
marks go away with the watches they mirror; on a filesystem of its own it
attributes what the kernel lets it (tests/harness/mirror_suite.py)."""

from __future__ import annotations

import pytest

from tests.harness.agent import Agent
from tests.harness.listeners import start_inotifywait, stop
from tests.harness.poll import until

pytestmark = pytest.mark.host


def test_mirror_marks_removed_with_the_watch(tmp_path):
    """A listener that exits, and a watch the kernel removes (IN_IGNORED after
    its directory is deleted): the agent's mirror marks go away with them."""
    a = Agent(tmp_path)
    try:
        dirs = [tmp_path / f"m{i}" for i in range(3)]
        for d in dirs:
            d.mkdir()
        inos = [d.stat().st_ino for d in dirs]
        iws = [start_inotifywait(d, tmp_path / f"iw{i}.log") for i, d in enumerate(dirs)]
        for d in dirs:
            a.wait_marked(d)
        dirs[0].rmdir()  # IN_DELETE_SELF then IN_IGNORED (the kernel drops the mark too)
        stop(iws[1])  # exits: its watch goes with it
        marked = until(lambda: a.marked_inodes() if not {inos[0], inos[1]} & a.marked_inodes()
                       else None)
        assert marked and inos[2] in marked, marked  # still watched
        stop(iws[2])
        assert until(lambda: inos[2] not in a.marked_inodes()), a.marked_inodes()
        stop(iws[0])
    finally:
        stats = a.stop()
    assert stats["mirror_marks_removed"] >= 2, stats


@pytest.fixture
def tracepoint_agent(tmp_path):
    a = Agent(tmp_path / "agent")
    yield a
    a.stop()


from tests.harness.mirror_suite import *  # noqa: E402,F401,F403 (the suite's test runs here)
