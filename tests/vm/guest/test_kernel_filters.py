"""Filters, every backend (in the kernel where the backend can): an agent
per filter sees only the tracer, tracee, group or kind it was told to. The
tracers and the tracee start before the agents (the scene); one agent per
filter and backend for the module. On the tracepoint backend each agent's
own fanotify mirror group is a listener too: the other agents' groups are
left out of what the scene's tracers must be."""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

import pytest

TRACEFS = "/sys/kernel/tracing"
_PROBE = "otelfsn_group"


def group_of(tracer_pid: int, trigger) -> int:
    """The struct fsnotify_group address a tracer reads from, as the kernel shows it.

    A tracefs kprobe event on fsnotify_remove_first_event(group) records its first
    argument; `trigger()` makes the tracer read one event. No BPF, no agent: an
    independent witness of the address that --tracer-group filters on.
    """
    def define(line: str) -> None:
        # O_APPEND without O_TRUNC: truncating would remove every kprobe event
        # (tracefs refuses the seek of Python's "a" mode with EINVAL)
        fd = os.open(f"{TRACEFS}/kprobe_events", os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode())
        finally:
            os.close(fd)

    define(f"p:{_PROBE} fsnotify_remove_first_event group=%di:x64\n")
    enable = Path(TRACEFS, "events/kprobes", _PROBE, "enable")
    try:
        Path(TRACEFS, "trace").write_text("")  # clear the trace buffer
        enable.write_text("1")
        trigger()
        deadline = time.monotonic() + 20
        pattern = re.compile(rf"-{tracer_pid}\s+\[.*{_PROBE}:.*group=(0x[0-9a-f]+)")
        while time.monotonic() < deadline:
            m = pattern.search(Path(TRACEFS, "trace").read_text())
            if m:
                return int(m.group(1), 16)
            time.sleep(0.2)
        raise RuntimeError(f"no {_PROBE} hit for pid {tracer_pid}: "
                           + Path(TRACEFS, "trace").read_text()[-1500:])
    finally:
        enable.write_text("0")
        define(f"-:{_PROBE}\n")


@pytest.fixture(scope="module")
def filtered(backend, scene, start_agent, tmp_path_factory):
    """One agent per filter, started once the scene is set, then the scene acts."""
    base = tmp_path_factory.mktemp(f"filters-{backend}")
    # the inotifywait's group address, witnessed by a tracefs kprobe (before any agent runs)
    group = group_of(scene.ino.pid, lambda: (scene.wdir / "probe").touch())
    agents = {
        "group": start_agent(backend, base / "a-group", "--tracer-group", hex(group)),
        "tracer": start_agent(backend, base / "a-tracer", "--tracer-pid", str(scene.ino.pid)),
        "tracee": start_agent(backend, base / "a-tracee", "--tracee-pid", str(scene.tracee.pid)),
        "inotify": start_agent(backend, base / "a-inotify", "--inotify-only"),
        "fanotify": start_agent(backend, base / "a-fanotify", "--fanotify-only"),
        # by name and uid: the kernel drops the fanotify listener's copies on
        # every backend (the reader is named there); the actor's name and uid
        # in the kernel on the exact backends, in user space on tracepoint
        "names": start_agent(backend, base / "a-names", "--tracer-comm", "inotifywait", "--comm", "touch",
                             "--exclude-comm", "sh", "--uid", str(os.geteuid())),
    }
    for a in agents.values():
        a.wait_started(600)
    scene.act()
    yield {"agents": agents, "group": group}
    for a in agents.values():
        a.stop()


def _wait(agent, n=1):
    return agent.wait_for(lambda e: True, n=n)


def _scene_tracers(filtered, evs) -> set[int]:
    """The tracers of evs that are not one of the module's agents."""
    agents = {a.proc.pid for a in filtered["agents"].values()}
    return {e["tracer_pid"] for e in evs} - agents


def test_filter_tracer_pid(filtered, scene):
    evs = _wait(filtered["agents"]["tracer"], 8)
    assert evs and {e["tracer_pid"] for e in evs} == {scene.ino.pid}
    assert {e["name"] for e in evs} == {"fromS", "other"}


def test_filter_tracee_pid(filtered, scene):
    evs = filtered["agents"]["tracee"].wait_for_tracers((scene.ino.pid, scene.fan.pid))
    assert evs and {e["tracee_pid"] for e in evs} == {scene.tracee.pid}
    # seen through both tracers
    assert _scene_tracers(filtered, evs) == {scene.ino.pid, scene.fan.pid}


def test_filter_inotify_only(filtered):
    evs = _wait(filtered["agents"]["inotify"], 8)
    assert evs and {e["type"] for e in evs} == {"inotify"}


def test_filter_fanotify_only(filtered, scene):
    evs = filtered["agents"]["fanotify"].wait_for_tracers((scene.fan.pid,))
    assert evs and {e["type"] for e in evs} == {"fanotify"}
    assert _scene_tracers(filtered, evs) == {scene.fan.pid}


def test_filter_tracer_group(filtered, scene):
    a = filtered["agents"]["group"]
    evs = _wait(a, 8)
    assert evs, a.stderr()
    # only what the inotifywait's group queued: not the fanotify listener's copies
    assert {e["tracer_pid"] for e in evs} == {scene.ino.pid}, (hex(filtered["group"]), evs[:4])
    assert {e["name"] for e in evs} == {"fromS", "other"}
    assert {e["type"] for e in evs} == {"inotify"}


def test_filter_by_watcher_and_actor_name_and_uid(filtered, scene, backend):
    a = filtered["agents"]["names"]
    evs = _wait(a, 8)
    assert evs, a.stderr()
    assert {e["tracer_pid"] for e in evs} == {scene.ino.pid}
    assert {(e["tracee_comm"], e["tracee_uid"]) for e in evs} == {("touch", os.geteuid())}
    assert {e["name"] for e in evs} == {"fromS", "other"}
    stats = a.stop()
    if backend != "tracepoint":  # the listener's copies, left out in the kernel and counted
        assert stats["filtered"] >= 2, stats
