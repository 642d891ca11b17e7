"""Tracepoint backend: what a listener reads is reported as read, nothing
invented. Real listeners and actors on this host's kernel, one agent per test
(the counters checked are the agent's totals)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.host.agent_proc import Agent, start_listener, stop

pytestmark = pytest.mark.host

MAX_FAN_PATHS = 64  # bpf/fsnotify_tracepoint.bpf.c


def _open_files(d, n: int, prefix: str = "f") -> int:
    """A process that opens (and closes) n files in d; returns its pid."""
    code = (f"import os\nfor i in range({n}):\n"
            f"    os.close(os.open('{d}/{prefix}%d' % i, os.O_RDONLY))\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    assert proc.wait() == 0
    return proc.pid


def _listener_events(proc: subprocess.Popen) -> list[dict]:
    """Every EVENT line the (stopped) test listener printed, as dicts."""
    return [dict(kv.split("=", 1) for kv in line.split()[1:])
            for line in proc.stdout.read().splitlines() if line.startswith("EVENT ")]


def test_fanotify_paths_past_the_kernel_walk_are_empty_not_guessed(tmp_path):
    """One read of far more events than the kernel walks paths for: each path
    is the listener's own file or empty (counted), never another file's."""
    d = tmp_path / "many"
    d.mkdir()
    n_files = 150
    for i in range(n_files):
        (d / f"f{i}").write_text("x")
        (d / f"g{i}").write_text("x")
    agent = Agent(tmp_path)
    listener = start_listener("notify", str(d))
    try:
        os.kill(listener.pid, signal.SIGSTOP)  # events pile up: one big read later
        actor = _open_files(d, n_files)
        os.kill(listener.pid, signal.SIGCONT)
        # at once a second burst: the listener's next read reuses the fd
        # numbers of the first for other files (what a late readlink would see)
        _open_files(d, n_files, "g")
        # one event per file (fanotify merges its open and close while queued)
        evs = agent.wait_for(lambda e: e["tracer_pid"] == listener.pid and e["tracee_pid"] == actor,
                             n=n_files)
    finally:
        os.kill(listener.pid, signal.SIGCONT)
        stop(listener)
        stats = agent.stop()
    seen = [e for e in _listener_events(listener) if int(e["pid"]) == actor]
    assert len(evs) == len(seen) >= n_files
    empty = 0
    for ours, theirs in zip(evs, seen):
        assert ours["fa_pid"] == int(theirs["pid"]) and ours["fa_mask"] == int(theirs["mask"], 16)
        if ours["path"]:
            assert ours["path"] == theirs["path"] and ours["name"] == ours["path"]
        else:
            empty += 1
            assert ours["name"] == ""
    assert 0 < empty <= len(seen) - MAX_FAN_PATHS, empty
    # the counter covers both bursts; every event it counts came out without a path
    all_empty = sum(not e["path"] for e in agent.events() if e["tracer_pid"] == listener.pid)
    assert stats["fanotify_path_unresolved"] == all_empty, stats


def test_fid_listener_name_is_relative_and_path_left_empty(tmp_path):
    """A FAN_REPORT_DFID_NAME listener reads names relative to a directory
    handle: `name` is that name, `path` is not pretended."""
    d = tmp_path / "fid"
    d.mkdir()
    agent = Agent(tmp_path)
    listener = start_listener("notify", str(d), "--fid", "--mask", "0x100")  # FAN_CREATE
    try:
        touch = subprocess.Popen(["touch", str(d / "created")])
        touch.wait()
        evs = agent.wait_for(lambda e: e["tracer_pid"] == listener.pid)
    finally:
        stop(listener)
        agent.stop()
    assert len(evs) == 1, evs
    e = evs[0]
    assert e["fa_mask_names"] == ["FAN_CREATE"] and e["fa_type"] == "FANOTIFY_EVENT_TYPE_FID_NAME"
    assert e["name"] == "created" and e["path"] == "", e
    assert e["tracee_pid"] == touch.pid and e["tracee_comm"] == "touch"
    assert e["attribution"] == "exact"
