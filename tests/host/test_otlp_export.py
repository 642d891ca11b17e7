"""OTLP export, tracepoint backend: what a real tracer read reaches a real
collector (rotel) with its attribution.
(tests/vm/guest/test_otlp_export.py: the same for the exact backends.)
"""

from __future__ import annotations

import pytest

from tests.harness.actors import touch
from tests.harness.agent import Agent
from tests.harness.listeners import start_inotifywait, stop
from tests.harness.poll import lines, until_stable

pytestmark = pytest.mark.host


def test_events_exported_over_otlp(tmp_path, rotel):
    d = tmp_path / "otlp"
    d.mkdir()
    work = tmp_path / "agent"
    agent = Agent(work, "--endpoint", rotel.grpc_endpoint, "--protocol", "grpc",
                  "--insecure", "--spool-dir", str(work / "spool"), output="otlp")
    iw = start_inotifywait(d, tmp_path / "iw.log")
    try:
        agent.wait_marked(d)
        touch_pid = touch(d / "sent")
        # inotifywait has read the 4 events (the agent reads them with it;
        # stop() drains and exports what is pending)
        assert until_stable(lambda: lines(tmp_path / "iw.log"), 4) >= 4
    finally:
        stop(iw)
        agent.stop()
    # only what this inotifywait read: another fanotify listener on the host
    # (a leftover of an earlier test, a system daemon) may report "sent" too
    recs = [r for r in rotel.wait_for_records(4, timeout=20)
            if r.attributes.get("file.name") == "sent"
            and r.attributes.get("fsnotify.watcher.pid") == iw.pid]
    assert len(recs) >= 4, recs
    for r in recs:
        assert r.event_name == "fsnotify.inotify"
        assert r.attributes["process.pid"] == touch_pid
        assert r.attributes["process.executable.name"] == "touch"
        assert r.attributes["fsnotify.watcher.executable.name"] == "inotifywait"
        assert r.attributes["fsnotify.watcher.pid"] == iw.pid
        assert r.attributes["fsnotify.attribution"] == "inferred"
        assert r.attributes["file.path"] == str(d / "sent")


def test_a_second_sigterm_cuts_the_drain_short_and_still_prints_the_stats_line(tmp_path):
    """The collector is away and the drain would wait a minute: a second
    SIGTERM ends it at once, the events stay in the spool, and the exit
    stats line is printed all the same."""
    import signal
    import time

    from tests.harness.collector import free_port

    d = tmp_path / "away"
    d.mkdir()
    work = tmp_path / "agent"
    agent = Agent(work, "--endpoint", f"http://127.0.0.1:{free_port()}", "--protocol", "http/json",
                  "--spool-dir", str(work / "spool"), output="otlp")
    iw = start_inotifywait(d)
    try:
        agent.wait_marked(d)
        touch(d / "kept")
        time.sleep(1)
        agent.proc.send_signal(signal.SIGTERM)
        time.sleep(1)  # now draining towards the unreachable collector (drain_timeout 60 s)
        assert agent.proc.poll() is None
        agent.proc.send_signal(signal.SIGTERM)
        agent.proc.wait(15)
    finally:
        stop(iw)
    stats = agent.stop()
    assert stats, agent.stderr()
    assert stats["spool_pending"] >= 4 and stats["delivered"] == 0
