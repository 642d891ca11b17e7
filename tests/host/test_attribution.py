"""Attribution, tracepoint backend on this host's kernel: each event a real
tracer reads names that tracer and the tracee that caused it.

inotify events are inferred (the agent mirrors each watch with a fanotify
mark of its own and matches what the tracer reads against it); fanotify
events and permission verdicts are exact. One agent runs for the module; an
inotifywait started before it covers listeners already running. The tests
that check the agent's counters run an agent of their own.
(tests/vm/guest/test_attribution.py: the same for the exact backends.)
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from tests.harness.actors import assert_touch_reported, blocked_cat, cat_under_verdict, run, touch
from tests.harness.agent import REPO, Agent
from tests.harness.listeners import program, start_inotifywait, start_listener, stop

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def early(tmp_path_factory):
    """An inotifywait, started before the module's agent, and its directory."""
    work = tmp_path_factory.mktemp("early")
    d = work / "early"
    d.mkdir()
    iw = start_inotifywait(d, work / "early.log")
    yield iw, d
    stop(iw)


@pytest.fixture(scope="module")
def agent(early, tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("agent"))
    yield a
    print("agent stats:", a.stop())


# ---------------------------------------------------------------- inotify

def _check_touch(agent, tracer, path, touch_pid):
    evs = agent.wait_for(lambda e: e["tracer_pid"] == tracer.pid and e["name"] == path.name, n=4)
    masks = [n for e in evs for n in e["i_mask_names"]]
    assert {"IN_CREATE", "IN_OPEN", "IN_ATTRIB", "IN_CLOSE_WRITE"} <= set(masks), evs
    assert_touch_reported(evs, path, "inferred")
    for e in evs:
        assert e["tracee_pid"] == touch_pid
        assert e["tracee_exe"].endswith("/touch")


def test_inotify_events_name_the_touching_process(agent, tmp_path):
    d = tmp_path / "late"
    d.mkdir()
    iw = start_inotifywait(d, tmp_path / "late.log")
    try:
        agent.wait_marked(d)  # mirrored after the agent saw inotify_add_watch
        pid = touch(d / "hello")
        _check_touch(agent, iw, d / "hello", pid)
    finally:
        stop(iw)


def test_inotify_listener_started_before_agent(agent, early):
    iw, d = early
    pid = touch(d / "before")
    _check_touch(agent, iw, d / "before", pid)


def test_inotify_child_inode_from_the_mirror(agent, tmp_path):
    d = tmp_path / "ino"
    d.mkdir()
    iw = start_inotifywait(d, tmp_path / "iw.log")
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


def test_inotify_tracee_tid_of_a_thread(agent, tmp_path):
    """A file written by a second thread: tracee_tid is that thread, tracee_pid
    its process (the mirror reports thread ids)."""
    d = tmp_path / "thr"
    d.mkdir()
    iw = start_inotifywait(d, tmp_path / "iw.log")
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


def _utime(path) -> int:
    proc = subprocess.Popen([sys.executable, "-c", f"import os; os.utime({str(path)!r})"])
    assert proc.wait() == 0
    return proc.pid


def test_inotify_merged_events_never_get_another_actor(tmp_path):
    """Two processes change one file while the listener is stopped: inotify
    merges the identical IN_ATTRIB events, the mirror keeps both. Neither
    that event nor the next one (a third process) may name a wrong actor."""
    d = tmp_path / "merge"
    d.mkdir()
    f = d / "shared"
    f.write_text("s")
    agent = Agent(tmp_path)
    iw = start_inotifywait(d, tmp_path / "iw.log")
    try:
        agent.wait_marked(d)
        os.kill(iw.pid, signal.SIGSTOP)
        a, b = _utime(f), _utime(f)
        os.kill(iw.pid, signal.SIGCONT)
        first = agent.wait_for(lambda e: e["tracer_pid"] == iw.pid and "IN_ATTRIB" in e["i_mask_names"])
        c = _utime(f)
        evs = agent.wait_for(lambda e: e["tracer_pid"] == iw.pid and "IN_ATTRIB" in e["i_mask_names"],
                             n=2)
    finally:
        stop(iw)
        stats = agent.stop()
    assert len(first) == 1 and len(evs) == 2, evs  # inotify merged a's and b's
    merged, last = evs
    for e, allowed in ((merged, {a, b}), (last, {c})):
        if e["attribution"] == "inferred":
            assert e["tracee_pid"] in allowed, (e, a, b, c)
        else:
            assert e["attribution"] == "unknown" and e["tracee_pid"] == 0, e
    assert stats["inotify_ambiguous"] == sum(e["attribution"] == "unknown" for e in evs) >= 1, stats


# ---------------------------------------------------------------- fanotify

def test_fanotify_event_names_the_reading_process(agent, tmp_path):
    d = tmp_path / "fan"
    d.mkdir()
    f = d / "data.txt"
    f.write_text("x")
    listener = start_listener("notify", str(d))
    try:
        cat = run("cat", str(f))
        evs = agent.wait_for(lambda e: e["tracer_pid"] == listener.pid and e["tracee_pid"] == cat, n=1)
        assert evs, agent.events()[-5:]
        names = {n for e in evs for n in e["fa_mask_names"]}
        assert "FAN_OPEN" in names
        for e in evs:
            assert e["type"] == "fanotify"
            assert e["tracee_comm"] == "cat"
            assert e["tracee_exe"].endswith("/cat")
            assert e["fa_pid"] == cat
            assert e["attribution"] == "exact"
            assert e["path"] == str(f)
            assert e["fa_type"] == "FANOTIFY_EVENT_TYPE_PATH"
    finally:
        stop(listener)


def test_fid_listener_name_is_relative_and_path_left_empty(agent, tmp_path):
    """A FAN_REPORT_DFID_NAME listener reads names relative to a directory
    handle: `name` is that name, `path` is not pretended."""
    d = tmp_path / "fid"
    d.mkdir()
    listener = start_listener("notify", str(d), "--fid", "--mask", "0x100")  # FAN_CREATE
    try:
        touch_pid = touch(d / "created")
        evs = agent.wait_for(lambda e: e["tracer_pid"] == listener.pid)
    finally:
        stop(listener)
    assert len(evs) == 1, evs
    e = evs[0]
    assert e["fa_mask_names"] == ["FAN_CREATE"] and e["fa_type"] == "FANOTIFY_EVENT_TYPE_FID_NAME"
    assert e["name"] == "created" and e["path"] == "", e
    assert e["tracee_pid"] == touch_pid and e["tracee_comm"] == "touch"
    assert e["attribution"] == "exact"


THREAD_OPENER = """
import os, sys, threading
def work():
    print(threading.get_native_id(), flush=True)
    os.close(os.open(sys.argv[1], os.O_RDONLY))
t = threading.Thread(target=work); t.start(); t.join()
"""


def test_report_tid_listener_gets_process_and_thread(agent, tmp_path):
    """A FAN_REPORT_TID listener reads a thread id: tracee_pid is its
    process, tracee_tid the thread, the process's names are the tracee's."""
    f = tmp_path / "by_thread"
    f.write_text("t")
    listener = start_listener("notify", str(f), "--tid")
    try:
        proc = subprocess.Popen([sys.executable, "-c", THREAD_OPENER, str(f)],
                                stdout=subprocess.PIPE, text=True)
        out, _ = proc.communicate(10)
        tid = int(out)
        assert tid != proc.pid
        evs = agent.wait_for(lambda e: e["tracer_pid"] == listener.pid and e["fa_pid"] == tid)
    finally:
        stop(listener)
    assert evs
    for e in evs:
        assert e["tracee_pid"] == proc.pid and e["tracee_tid"] == tid, e
        assert e["tracee_comm"].startswith("python") and e["tracee_ppid"] == os.getpid(), e
        assert e["attribution"] == "exact"


def _child_of(pid: int) -> int:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        with open(f"/proc/{pid}/task/{pid}/children") as fh:
            kids = fh.read().split()
        if kids:
            return int(kids[0])
        time.sleep(0.02)
    raise AssertionError("unshare did not fork")


IN_NS_CAT = """
import ctypes, os, sys
fd = os.open(f"/proc/{sys.argv[1]}/ns/pid", os.O_RDONLY)
# children are born in the listener's pid namespace (CLONE_NEWPID)
assert ctypes.CDLL(None, use_errno=True).setns(fd, 0x20000000) == 0
pid = os.fork()
if pid == 0:
    os.execvp("cat", ["cat", sys.argv[2]])
print(pid, flush=True)
os.waitpid(pid, 0)
"""


def test_fanotify_listener_in_another_pid_namespace(tmp_path):
    """The pid in a fanotify event is numbered in the reader's pid namespace:
    translated for an actor living there, "unknown" (no tracee) for an actor
    the reader cannot see (pid 0)."""
    f = tmp_path / "ns_file"
    f.write_text("n")
    agent = Agent(tmp_path)
    unshare = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child",
                                *program("fanotify_listener", "notify", str(f))],
                               cwd=REPO, stdout=subprocess.PIPE, text=True)
    listener = 0
    try:
        assert unshare.stdout.readline().strip() == "READY"
        listener = _child_of(unshare.pid)
        # an actor inside the listener's namespace
        inner = subprocess.run([sys.executable, "-c", IN_NS_CAT, str(listener), str(f)],
                               capture_output=True, text=True, check=True)
        inner_pid = int(inner.stdout.split()[0])
        # an actor outside it (this test's namespace): the listener reads pid 0
        run("cat", str(f))
        agent.wait_for(lambda e: e["tracer_pid"] == listener and e["fa_pid"] == 0)
        evs = agent.wait_for(lambda e: e["tracer_pid"] == listener and e["fa_pid"] != 0)
        evs = [e for e in agent.events() if e["tracer_pid"] == listener]
    finally:
        if listener:
            os.kill(listener, signal.SIGTERM)  # the listener itself, not only unshare
        stop(unshare)
        stats = agent.stop()
    inside = [e for e in evs if e["fa_pid"] != 0]
    outside = [e for e in evs if e["fa_pid"] == 0]
    assert inside and outside, evs
    for e in inside:
        assert e["tracee_pid"] == inner_pid and e["tracee_comm"] == "cat", e
        assert e["fa_pid"] != inner_pid  # the listener's own numbering (small)
        assert e["attribution"] == "exact"
    for e in outside:
        assert e["attribution"] == "unknown" and e["tracee_pid"] == 0 and e["tracee_comm"] == "", e
        assert e["path"] == str(f)
    assert stats["tracee_pidns_unresolved"] == 0, stats


# ---------------------------------------------------------------- permission verdicts

def test_permission_deny_names_the_denied_process(agent, tmp_path):
    f = tmp_path / "secret"
    f.write_text("s")
    v = cat_under_verdict(agent, f, "perm-deny", timeout=10)
    assert v.cat.returncode != 0 and "Operation not permitted" in v.stderr
    assert len(v.responses) == 1, v.responses
    e = v.responses[0]
    assert e["fa_response"] == "deny"
    assert e["tracee_pid"] == v.cat.pid and e["tracee_comm"] == "cat"
    assert e["fa_mask_names"] == ["FAN_OPEN_PERM"]
    assert e["path"] == str(f)
    assert e["prio"] > 0  # FAN_CLASS_CONTENT group


def test_permission_allow_names_the_allowed_process(agent, tmp_path):
    f = tmp_path / "open"
    f.write_text("o")
    v = cat_under_verdict(agent, f, "perm-allow", timeout=10)
    assert v.cat.returncode == 0 and v.stdout == "o"
    assert [e["fa_response"] for e in v.responses] == ["allow"]
    assert v.responses[0]["tracee_comm"] == "cat"


def test_tracee_killed_while_waiting_is_interrupted(agent, tmp_path):
    f = tmp_path / "held"
    f.write_text("h")
    listener = start_listener("stall", str(f))
    try:
        cat = blocked_cat(agent, f)  # the listener read the event: it is pending now
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


def test_a_write_is_attributed_to_the_program_that_wrote_not_the_one_it_exec_d(agent, tmp_path):
    """`sh -c 'echo x > f; exec sleep 1'`: the shell writes, then becomes
    sleep. The events are the shell's: the identity current when the tracer
    read them, not the one the agent found afterwards."""
    d = tmp_path / "exec"
    d.mkdir()
    iw = start_inotifywait(d)
    try:
        agent.wait_marked(d)
        proc = subprocess.Popen(["sh", "-c", f"echo x > {d}/f; exec sleep 1"])
        evs = agent.wait_for(lambda e: e["tracer_pid"] == iw.pid and e["name"] == "f", n=3)
        proc.wait(10)
    finally:
        stop(iw)
    sh = os.path.realpath("/bin/sh")
    assert evs and all(e["tracee_pid"] == proc.pid for e in evs), evs
    assert {e["tracee_comm"] for e in evs} == {"sh"}, evs
    assert {e["tracee_exe"] for e in evs} == {sh}, evs


def test_a_tracer_reading_after_the_actors_exec_still_names_the_actor_as_it_was(agent, tmp_path):
    """The tracer is stopped while the shell writes and then becomes sleep:
    it reads only afterwards. The agent's own mirror saw the write before the
    exec, so the events still name the shell."""
    d = tmp_path / "late-read"
    d.mkdir()
    iw = start_inotifywait(d)
    try:
        agent.wait_marked(d)
        iw.send_signal(signal.SIGSTOP)
        proc = subprocess.Popen(["sh", "-c", f"echo x > {d}/f; sleep 0.3; exec sleep 2"])
        deadline = time.monotonic() + 10
        while os.readlink(f"/proc/{proc.pid}/exe") != os.path.realpath("/usr/bin/sleep"):
            assert time.monotonic() < deadline, "the shell did not exec sleep"
            time.sleep(0.05)
        time.sleep(0.5)  # the agent has seen the exec
        iw.send_signal(signal.SIGCONT)
        evs = agent.wait_for(lambda e: e["tracer_pid"] == iw.pid and e["name"] == "f", n=3)
        proc.wait(10)
    finally:
        iw.send_signal(signal.SIGCONT)
        stop(iw)
    assert evs and all(e["tracee_pid"] == proc.pid for e in evs), evs
    assert {e["tracee_comm"] for e in evs} == {"sh"}, evs
    assert {e["tracee_exe"] for e in evs} == {os.path.realpath("/bin/sh")}, evs
