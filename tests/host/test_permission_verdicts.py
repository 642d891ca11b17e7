"""Permission verdicts, tracepoint backend: the verdict reported when a
listener does not simply answer (it exits, it closes its fanotify fd, it
answered before its tracee was killed, it started before the agent).

One agent runs for the module; the listener older than the agent has one of
its own. (Answered and interrupted verdicts naming their tracee:
test_attribution.py.)
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from tests.harness.actors import blocked_cat
from tests.harness.agent import Agent
from tests.harness.listeners import start_listener, stop

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def agent(tmp_path_factory):
    a = Agent(tmp_path_factory.mktemp("agent"))
    yield a
    print("agent stats:", a.stop())


def test_listener_gone_without_answer_is_interrupted(agent, tmp_path):
    f = tmp_path / "orphan"
    f.write_text("o")
    listener = start_listener("stall", str(f))
    cat = blocked_cat(agent, f)
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
