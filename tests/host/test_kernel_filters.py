"""The filters on the tracepoint backend keep exactly the events they name:
--tracer-pid and --inotify-only / --fanotify-only in the kernel, --tracee-pid
after attribution in user space (counted as filtered_tracee). One agent per
filter, all watching the same scene: two inotify tracers and a fanotify
listener on one directory, a tracee that acts only once every agent runs.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.harness.actors import touch
from tests.harness.agent import Agent
from tests.harness.listeners import start_inotifywait, start_listener, stop

pytestmark = pytest.mark.host

FILTERS = {
    "tracer": lambda s: ("--tracer-pid", str(s["ino"].pid)),
    "tracee": lambda s: ("--tracee-pid", str(s["tracee"].pid)),
    "inotify": lambda s: ("--inotify-only",),
    "fanotify": lambda s: ("--fanotify-only",),
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    base = tmp_path_factory.mktemp("filters")
    wdir = base / "watched"
    wdir.mkdir()
    s = {"wdir": wdir, "ino": start_inotifywait(wdir), "other": start_inotifywait(wdir),
         "fan": start_listener("notify", str(wdir)),
         "tracee": subprocess.Popen(["sh", "-c", f"read x; exec touch {wdir}/from-tracee"],
                                    stdin=subprocess.PIPE)}
    agents = {name: Agent(base / f"agent-{name}", *flags(s), wait=False)
              for name, flags in FILTERS.items()}
    try:
        for name, agent in agents.items():
            agent.wait_started()
            if name != "fanotify":  # the mirror marks that attribute inotify events
                agent.wait_marked(wdir)
        s["tracee"].stdin.write(b"go\n")
        s["tracee"].stdin.close()
        s["tracee"].wait(30)
        s["bystander"] = touch(wdir / "from-bystander")
        s["agents"] = agents
        yield s
    finally:
        for agent in agents.values():
            agent.stop()
        for name in ("ino", "other", "fan"):
            stop(s[name])


def _events(agent: Agent, n: int) -> list[dict]:
    return agent.wait_for(lambda e: True, n=n, timeout=15)


def test_tracer_pid_keeps_only_that_tracers_events(scene):
    evs = _events(scene["agents"]["tracer"], 8)  # both touches, 4 events each
    assert len(evs) >= 8
    assert {e["tracer_pid"] for e in evs} == {scene["ino"].pid}


def test_tracee_pid_keeps_only_that_actors_events(scene):
    agent = scene["agents"]["tracee"]
    # the tracee's touch as read by both inotify tracers and the fanotify listener
    tracers = (scene["ino"].pid, scene["other"].pid, scene["fan"].pid)
    evs = agent.wait_for_tracers(tracers, timeout=15)
    assert {e["tracee_pid"] for e in evs} == {scene["tracee"].pid}
    assert {e["tracer_pid"] for e in evs} >= set(tracers)
    assert agent.stop()["filtered_tracee"] > 0  # the bystander's events, counted


@pytest.mark.parametrize("kind", ["inotify", "fanotify"])
def test_one_api_only(scene, kind):
    evs = _events(scene["agents"][kind], 4)
    assert len(evs) >= 4
    assert {e["type"] for e in evs} == {kind}
