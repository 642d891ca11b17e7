"""The filters a person names keep exactly what they name, against real
programs: --comm / --exclude-comm (the actor's command name), --tracer-comm
(the watcher's), --path (files under a directory), --uid (the actor's
effective uid). What they leave out is counted as filtered_selection.

One scene for two agents: directories a and b, inotifywait on each and a
second watcher of another name (the counting reader) on a; then cat and
head read files in both as root, and head reads one as uid 1234.
"""

from __future__ import annotations

import pytest

from tests.harness.actors import open_to_anyone, run
from tests.harness.agent import Agent
from tests.harness.listeners import start_inotify_reader, start_inotifywait, stop, stop_inotify_reader

pytestmark = pytest.mark.host

AS_1234 = ["setpriv", "--reuid", "1234", "--regid", "1234", "--clear-groups"]
AGENTS = {
    "only": ("--comm", "cat", "--path", "{a}", "--tracer-comm", "inotifywait", "--uid", "0"),
    "excluding": ("--exclude-comm", "cat", "--uid", "1234"),
}


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    base = tmp_path_factory.mktemp("selection")
    a, b = base / "a", base / "b"
    for d in (a, b):
        d.mkdir()
        open_to_anyone(d)
        for name in ("f1", "f2", "f3"):
            (d / name).write_text("some bytes\n")
    s = {"a": a, "b": b, "ino_a": start_inotifywait(a), "ino_b": start_inotifywait(b),
         "reader": start_inotify_reader(a)}
    agents = {name: Agent(base / f"agent-{name}", *(f.format(a=a) for f in flags), wait=False)
              for name, flags in AGENTS.items()}
    try:
        for agent in agents.values():
            agent.wait_started()
            agent.wait_marked(a)
            agent.wait_marked(b)
        s["cat"] = [run("cat", str(a / "f1")), run("cat", str(b / "f1"))]
        s["head"] = [run("head", str(a / "f2")), run("head", str(b / "f2"))]
        s["head_1234"] = run(*AS_1234, "head", str(a / "f3"))
        s["agents"] = agents
        yield s
    finally:
        for agent in agents.values():
            agent.stop()
        stop(s["ino_a"])
        stop(s["ino_b"])
        stop_inotify_reader(s["reader"], a / "f1")


def test_comm_path_tracer_comm_and_uid_keep_only_what_they_name(scene):
    agent = scene["agents"]["only"]
    # cat on a/f1 as inotifywait on a read it: open, access, close at least
    evs = agent.wait_for(lambda e: True, n=3, timeout=15)
    assert len(evs) >= 3
    for e in evs:
        assert (e["tracee_comm"], e["tracer_comm"], e["tracee_uid"]) == ("cat", "inotifywait", 0), e
        assert e["tracee_pid"] == scene["cat"][0] and e["tracer_pid"] == scene["ino_a"].pid, e
        assert e["path"].startswith(str(scene["a"]) + "/"), e
    stats = agent.stop()
    # left out: cat on b, head on both, the uid 1234 head, the reader's copies
    assert stats["filtered_selection"] >= 10, stats


def test_exclude_comm_and_uid_leave_only_the_other_users_head(scene):
    agent = scene["agents"]["excluding"]
    # head as uid 1234 on a/f3, read by inotifywait and by the counting reader
    evs = agent.wait_for_tracers((scene["ino_a"].pid, scene["reader"].pid), timeout=15)
    assert {e["tracee_pid"] for e in evs} == {scene["head_1234"]}
    assert {(e["tracee_comm"], e["tracee_uid"]) for e in evs} == {("head", 1234)}
    # both watchers of a; the other agent's mirror (a fanotify listener too) may add its reads
    assert {e["tracer_pid"] for e in evs} >= {scene["ino_a"].pid, scene["reader"].pid}
    assert {e["tracer_comm"] for e in evs} <= {"inotifywait", "python", "python3", "otel-fsnotify"}
    assert agent.stop()["filtered_selection"] >= 10
