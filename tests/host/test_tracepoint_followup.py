"""Tracepoint backend: verdicts nobody gave, the child's inode, mirror marks
that follow watches away. Real listeners, real actors, this host's kernel."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.host.agent_proc import Agent, start_inotifywait, start_listener, stop

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    work = tmp_path_factory.mktemp("tpf")
    a = Agent(work)
    yield a
    print("agent stats:", a.stop())


def _blocked_cat(agent, path) -> subprocess.Popen:
    """A cat whose open(2) waits for a verdict (the listener never answers),
    once the agent has seen the listener read its permission event."""
    cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert agent.wait_for(lambda e: e["type"] == "fanotify" and e["tracee_pid"] == cat.pid)
    assert cat.poll() is None, "cat was not held by the stalled listener"
    return cat


def test_tracee_killed_while_waiting_is_interrupted(agent, tmp_path):
    f = tmp_path / "held"
    f.write_text("h")
    listener = start_listener("stall", str(f))
    try:
        cat = _blocked_cat(agent, f)  # the listener read the event: it is pending now
        cat.kill()
        cat.wait()
        resp = agent.wait_for(lambda e: e["type"] == "fa_resp" and e["tracee_pid"] == cat.pid)
        assert [e["fa_response"] for e in resp] == ["interrupted"], resp
        e = resp[0]
        assert e["tracee_comm"] == "cat" and e["attribution"] == "exact"
        assert e["tracer_pid"] == listener.pid
        assert e["fa_mask_names"] == ["FAN_OPEN_PERM"] and e["path"] == str(f)
    finally:
        stop(listener)


def test_listener_gone_without_answer_is_interrupted(agent, tmp_path):
    f = tmp_path / "orphan"
    f.write_text("o")
    listener = start_listener("stall", str(f))
    cat = _blocked_cat(agent, f)
    stop(listener)  # exits without answering: the kernel allows the open itself
    assert cat.wait(10) == 0
    resp = agent.wait_for(lambda e: e["type"] == "fa_resp" and e["tracee_pid"] == cat.pid)
    assert [e["fa_response"] for e in resp] == ["interrupted"], resp
    assert resp[0]["tracer_pid"] == listener.pid


DENIED_THEN_WAITS = """
import sys
try:
    open(sys.argv[1])
except PermissionError:
    print("DENIED", flush=True)
sys.stdin.read()  # killed in this read(2)
"""


def test_answered_verdict_is_not_interrupted(agent, tmp_path):
    """A deny answered, then the tracee killed afterwards (SIGKILL out of a
    later syscall): still exactly one fa_resp, the deny."""
    f = tmp_path / "denied"
    f.write_text("d")
    listener = start_listener("perm-deny", str(f))
    try:
        tracee = subprocess.Popen([sys.executable, "-c", DENIED_THEN_WAITS, str(f)], text=True,
                                  stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        assert tracee.stdout.readline().strip() == "DENIED"
        mine = lambda e: e["type"] == "fa_resp" and e["tracee_pid"] == tracee.pid  # noqa: E731
        assert [e["fa_response"] for e in agent.wait_for(mine)] == ["deny"]
        tracee.kill()
        tracee.wait()
        # the kill is seen (signal_deliver) like the one of a waiting tracee;
        # give it the time an interrupted verdict takes to come out, then recheck
        late = agent.wait_for(lambda e: mine(e) and e["fa_response"] == "interrupted", timeout=2)
        assert not late, late
        assert [e["fa_response"] for e in agent.events() if mine(e)] == ["deny"]
    finally:
        stop(listener)


def test_inotify_child_inode_from_the_mirror(agent, tmp_path):
    d = tmp_path / "ino"
    d.mkdir()
    iw = start_inotifywait(str(d), tmp_path / "iw.log")
    try:
        agent.wait_marked(d)
        f = d / "child"
        f.write_text("c")  # IN_CREATE, IN_MODIFY, IN_CLOSE_WRITE; the file stays
        evs = agent.wait_for(lambda e: e["tracer_pid"] == iw.pid and e["name"] == "child", n=3)
        assert evs
        ino = f.stat().st_ino
        for e in evs:
            assert e["attribution"] == "inferred", e
            assert e["i_ino_dir"] == d.stat().st_ino
            assert e["i_ino"] == ino, e
    finally:
        stop(iw)


def _until(cond, timeout: float = 10.0):
    """cond()'s first truthy value, polled; its last value after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def test_mirror_marks_removed_with_the_watch(tmp_path):
    """A listener that exits, and a watch the kernel removes (IN_IGNORED after
    its directory is deleted): the agent's mirror marks go away with them."""
    a = Agent(tmp_path)
    try:
        dirs = [tmp_path / f"m{i}" for i in range(3)]
        for d in dirs:
            d.mkdir()
        inos = [d.stat().st_ino for d in dirs]
        iws = [start_inotifywait(str(d), tmp_path / f"iw{i}.log") for i, d in enumerate(dirs)]
        for d in dirs:
            a.wait_marked(d)
        dirs[0].rmdir()  # IN_DELETE_SELF then IN_IGNORED (the kernel drops the mark too)
        stop(iws[1])  # exits: its watch goes with it
        marked = _until(lambda: a.marked_inodes() if not {inos[0], inos[1]} & a.marked_inodes()
                        else None)
        assert marked and inos[2] in marked, marked  # still watched
        stop(iws[2])
        assert _until(lambda: inos[2] not in a.marked_inodes()), a.marked_inodes()
        stop(iws[0])
    finally:
        stats = a.stop()
    assert stats["mirror_marks_removed"] >= 2, stats


def test_permission_listener_started_before_agent(tmp_path):
    """Its answers are seen although its first read(2) predates the agent."""
    f = tmp_path / "early_perm"
    f.write_text("e")
    listener = start_listener("perm-deny", str(f))
    try:
        a = Agent(tmp_path)
        try:
            cat = subprocess.run(["cat", str(f)], capture_output=True)
            assert cat.returncode != 0
            resp = a.wait_for(lambda e: e["type"] == "fa_resp" and e["tracer_pid"] == listener.pid)
            assert [e["fa_response"] for e in resp] == ["deny"], resp
            assert resp[0]["tracee_comm"] == "cat"
        finally:
            a.stop()
    finally:
        stop(listener)


def test_inotify_tracee_tid_of_a_thread(agent, tmp_path):
    """A file written by a second thread: tracee_tid is that thread, tracee_pid
    its process (the mirror reports thread ids)."""
    d = tmp_path / "thr"
    d.mkdir()
    iw = start_inotifywait(str(d), tmp_path / "iw.log")
    try:
        agent.wait_marked(d)
        code = ("import threading, os, sys\n"
                "def work():\n"
                "    print(threading.get_native_id(), flush=True)\n"
                f"    open({str(d / 'by_thread')!r}, 'w').close()\n"
                "t = threading.Thread(target=work); t.start(); t.join()\n")
        proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(10)
        assert proc.returncode == 0
        tid = int(out.strip())
        assert tid != proc.pid
        evs = agent.wait_for(lambda e: e["tracer_pid"] == iw.pid and e["name"] == "by_thread", n=3)
        assert evs
        for e in evs:
            assert e["attribution"] == "inferred", e
            assert e["tracee_tid"] == tid, e
            assert e["tracee_pid"] == proc.pid and e["tracee_comm"].startswith("python"), e
    finally:
        stop(iw)


CLOSING_LISTENER = r"""
import ctypes, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int, ctypes.c_char_p]
fd = libc.fanotify_init(0x4, os.O_RDONLY)  # FAN_CLASS_CONTENT
assert fd >= 0 and libc.fanotify_mark(fd, 0x1, 0x10000, -100, sys.argv[1].encode()) == 0
print("READY", flush=True)
buf = os.read(fd, 4096)  # the FAN_OPEN_PERM event, never answered
print("GOT", flush=True)
sys.stdin.readline()
os.close(fd)  # last reference: the kernel allows the pending open
print("CLOSED", flush=True)
time.sleep(30)
"""


def test_listener_closing_its_fd_is_interrupted(agent, tmp_path):
    """close(2) of the fanotify fd by a listener that keeps running."""
    f = tmp_path / "closing"
    f.write_text("c")
    listener = subprocess.Popen([sys.executable, "-c", CLOSING_LISTENER, str(f)], text=True,
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert listener.stdout.readline().strip() == "READY"
        cat = subprocess.Popen(["cat", str(f)], stdout=subprocess.DEVNULL)
        assert listener.stdout.readline().strip() == "GOT"
        assert agent.wait_for(lambda e: e["type"] == "fanotify" and e["tracee_pid"] == cat.pid)
        listener.stdin.write("\n")
        listener.stdin.flush()
        assert listener.stdout.readline().strip() == "CLOSED"
        assert cat.wait(10) == 0
        resp = agent.wait_for(lambda e: e["type"] == "fa_resp" and e["tracee_pid"] == cat.pid)
        assert [e["fa_response"] for e in resp] == ["interrupted"], resp
        assert listener.poll() is None  # it did not exit: the close(2) did it
    finally:
        listener.kill()
        listener.wait()
