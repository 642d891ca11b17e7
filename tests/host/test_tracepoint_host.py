"""The tracepoint backend on this host's kernel, with real listeners and actors.

One agent (`otel-fsnotify run --backend tracepoint --output jsonl`) runs for the
module. An inotifywait started *before* it covers listeners already running.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.host.agent_proc import Agent, start_inotifywait, start_listener, stop

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    work = tmp_path_factory.mktemp("tp")
    early_dir = work / "early"
    early_dir.mkdir()
    early = start_inotifywait(str(early_dir), work / "early.log")  # before the agent
    agent = Agent(work)
    yield {"agent": agent, "work": work, "early": early, "early_dir": early_dir}
    stop(early)
    stats = agent.stop()
    print("agent stats:", stats)


def _run(*cmd) -> subprocess.CompletedProcess:
    return subprocess.run(list(cmd), capture_output=True, text=True)


def _touch(path) -> int:
    proc = subprocess.Popen(["touch", str(path)])
    proc.wait()
    return proc.pid


def _check_touch(agent, tracer, path, touch_pid):
    evs = agent.wait_for(lambda e: e["tracer_pid"] == tracer.pid and e["name"] == path.name, n=4)
    masks = [n for e in evs for n in e["i_mask_names"]]
    assert {"IN_CREATE", "IN_OPEN", "IN_ATTRIB", "IN_CLOSE_WRITE"} <= set(masks), evs
    for e in evs:
        assert e["type"] == "inotify"
        assert e["tracer_comm"] == "inotifywait"
        assert e["tracer_exe"].endswith("/inotifywait")
        assert e["tracee_comm"] == "touch", e
        assert e["tracee_pid"] == touch_pid
        assert e["tracee_exe"].endswith("/touch")
        assert e["attribution"] == "inferred"
        assert e["path"] == str(path)
        assert e["i_ino_dir"] == path.parent.stat().st_ino


def test_inotifywait_and_touch(env):
    d = env["work"] / "late"
    d.mkdir()
    iw = start_inotifywait(str(d), env["work"] / "late.log")
    try:
        env["agent"].wait_marked(d)  # mirrored after the agent saw inotify_add_watch
        pid = _touch(d / "hello")
        _check_touch(env["agent"], iw, d / "hello", pid)
    finally:
        stop(iw)


def test_listener_started_before_agent(env):
    pid = _touch(env["early_dir"] / "before")
    _check_touch(env["agent"], env["early"], env["early_dir"] / "before", pid)


def test_fanotify_listener_and_cat(env):
    d = env["work"] / "fan"
    d.mkdir()
    f = d / "data.txt"
    f.write_text("x")
    listener = start_listener("notify", str(d))
    try:
        cat = subprocess.Popen(["cat", str(f)], stdout=subprocess.DEVNULL)
        cat.wait()
        evs = env["agent"].wait_for(lambda e: e["tracer_pid"] == listener.pid
                                    and e["tracee_pid"] == cat.pid, n=1)
        assert evs, env["agent"].events()[-5:]
        names = {n for e in evs for n in e["fa_mask_names"]}
        assert "FAN_OPEN" in names
        for e in evs:
            assert e["type"] == "fanotify"
            assert e["tracee_comm"] == "cat"
            assert e["tracee_exe"].endswith("/cat")
            assert e["fa_pid"] == cat.pid
            assert e["attribution"] == "exact"
            assert e["path"] == str(f)
            assert e["fa_type"] == "FANOTIFY_EVENT_TYPE_PATH"
    finally:
        stop(listener)


def test_permission_deny(env):
    f = env["work"] / "secret"
    f.write_text("s")
    listener = start_listener("perm-deny", str(f))
    try:
        cat = subprocess.Popen(["cat", str(f)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
        _, err = cat.communicate(10)
        assert cat.returncode != 0 and "Operation not permitted" in err
        resp = env["agent"].wait_for(lambda e: e["type"] == "fa_resp" and e["tracer_pid"] == listener.pid)
        assert len(resp) == 1, resp
        e = resp[0]
        assert e["fa_response"] == "deny"
        assert e["tracee_pid"] == cat.pid and e["tracee_comm"] == "cat"
        assert e["fa_mask_names"] == ["FAN_OPEN_PERM"]
        assert e["path"] == str(f)
        assert e["prio"] > 0  # FAN_CLASS_CONTENT group
    finally:
        stop(listener)


def test_permission_allow(env):
    f = env["work"] / "open"
    f.write_text("o")
    listener = start_listener("perm-allow", str(f))
    try:
        cat = _run("cat", str(f))
        assert cat.returncode == 0 and cat.stdout == "o"
        resp = env["agent"].wait_for(lambda e: e["type"] == "fa_resp" and e["tracer_pid"] == listener.pid)
        assert [e["fa_response"] for e in resp] == ["allow"]
        assert resp[0]["tracee_comm"] == "cat"
    finally:
        stop(listener)
