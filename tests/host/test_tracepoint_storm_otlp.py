"""Storm accounting and OTLP export for the tracepoint backend (own agent runs)."""

from __future__ import annotations

import subprocess
import sys
import time

import pytest

from tests.host.agent_proc import Agent, start_inotifywait, stop

pytestmark = pytest.mark.host

STORM_FILES = 20_000
LOSS_KEYS = ("ringbuf_lost", "read_truncated", "pending_map_full", "mirror_overflow")


def test_storm_every_event_emitted_or_counted(tmp_path):
    d = tmp_path / "storm"
    d.mkdir()
    agent = Agent(tmp_path)
    iw = start_inotifywait(str(d), tmp_path / "iw.log")
    time.sleep(0.5)
    # one actor, many creates: IN_CREATE, IN_OPEN, IN_CLOSE_WRITE per file
    actor = subprocess.Popen([sys.executable, "-c",
                              f"import os\nfor i in range({STORM_FILES}):\n"
                              f"    os.close(os.open('{d}/f%d' % i, os.O_CREAT | os.O_WRONLY))"])
    assert actor.wait() == 0
    time.sleep(2)
    stop(iw)
    stats = agent.stop()
    read_by_tracer = sum(1 for _ in open(tmp_path / "iw.log", "rb"))
    evs = [e for e in agent.events() if e["tracer_pid"] == iw.pid]
    inferred = sum(e["attribution"] == "inferred" for e in evs)
    lost = {k: stats.get(k, 0) for k in LOSS_KEYS}
    print(f"\nstorm: tracer read {read_by_tracer} events, agent emitted {len(evs)} "
          f"({inferred} inferred, {stats['inotify_unmatched']} unknown), losses {lost}")
    assert read_by_tracer >= STORM_FILES
    if not any(lost.values()):
        assert len(evs) == read_by_tracer  # nothing lost silently
    else:
        assert len(evs) < read_by_tracer
    assert inferred + stats["inotify_unmatched"] >= len(evs) - 1  # every event says how it was attributed
    assert all(e["tracee_pid"] == actor.pid for e in evs if e["attribution"] == "inferred")


def test_events_exported_over_otlp(tmp_path, rotel):
    d = tmp_path / "otlp"
    d.mkdir()
    work = tmp_path / "agent"
    work.mkdir()
    agent = Agent(work, "--output", "otlp", "--endpoint", rotel.grpc_endpoint, "--protocol", "grpc",
                  "--insecure", "--spool-dir", str(work / "spool"))
    iw = start_inotifywait(str(d), tmp_path / "iw.log")
    try:
        time.sleep(0.5)
        touch = subprocess.Popen(["touch", str(d / "sent")])
        touch.wait()
        time.sleep(1.0)
    finally:
        stop(iw)
        agent.stop()
    recs = [r for r in rotel.wait_for_records(4, timeout=20)
            if r.attributes.get("file.name") == "sent"]
    assert len(recs) >= 4, recs
    for r in recs:
        assert r.event_name == "fsnotify.inotify"
        assert r.attributes["process.pid"] == touch.pid
        assert r.attributes["process.executable.name"] == "touch"
        assert r.attributes["fsnotify.watcher.executable.name"] == "inotifywait"
        assert r.attributes["fsnotify.watcher.pid"] == iw.pid
        assert r.attributes["fsnotify.attribution"] == "inferred"
        assert r.attributes["file.path"] == str(d / "sent")
