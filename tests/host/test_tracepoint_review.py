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

from tests.host.agent_proc import Agent, start_inotifywait, start_listener, stop

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


THREAD_OPENER = """
import os, sys, threading
def work():
    print(threading.get_native_id(), flush=True)
    os.close(os.open(sys.argv[1], os.O_RDONLY))
t = threading.Thread(target=work); t.start(); t.join()
"""


def test_report_tid_listener_gets_process_and_thread(tmp_path):
    """A FAN_REPORT_TID listener reads a thread id: tracee_pid is its
    process, tracee_tid the thread, the process's names are the tracee's."""
    f = tmp_path / "by_thread"
    f.write_text("t")
    agent = Agent(tmp_path)
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
        agent.stop()
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


def test_listener_in_another_pid_namespace(tmp_path):
    """The pid in a fanotify event is numbered in the reader's pid namespace:
    translated for an actor living there, "unknown" (no tracee) for an actor
    the reader cannot see (pid 0)."""
    f = tmp_path / "ns_file"
    f.write_text("n")
    agent = Agent(tmp_path)
    unshare = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", sys.executable,
                                "tests/tools/fanotify_listener.py", "notify", str(f)],
                               stdout=subprocess.PIPE, text=True)
    listener = 0
    try:
        assert unshare.stdout.readline().strip() == "READY"
        listener = _child_of(unshare.pid)
        # an actor inside the listener's namespace
        inner = subprocess.run([sys.executable, "-c", IN_NS_CAT, str(listener), str(f)],
                               capture_output=True, text=True, check=True)
        inner_pid = int(inner.stdout.split()[0])
        # an actor outside it (this test's namespace): the listener reads pid 0
        outer = subprocess.Popen(["cat", str(f)], stdout=subprocess.DEVNULL)
        outer.wait()
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


BIG_READER = r"""
import os, struct, sys
sys.path.insert(0, os.getcwd())
from otel_fsnotify.kernel.abi import INOTIFY_EVENT, inotify_init1, libc
fd = inotify_init1(0)
assert libc.inotify_add_watch(fd, sys.argv[1].encode(), 0x100) == 1  # IN_CREATE, wd 1
print("READY", flush=True)
sys.stdin.readline()
data = os.read(fd, 1 << 20)  # everything queued, in one read
n = off = 0
while off < len(data):
    n += 1
    off += INOTIFY_EVENT.size + INOTIFY_EVENT.unpack_from(data, off)[3]
print(len(data), n, flush=True)
sys.stdin.readline()
"""


def test_read_beyond_capture_is_counted_not_invented(tmp_path):
    """An inotify read of ~200 KiB (the kernel side captures 64 KiB): the
    events in the captured prefix come out, the rest is counted; no event is
    made from the missing bytes (wd 0, mask 0)."""
    d = tmp_path / "big"
    d.mkdir()
    agent = Agent(tmp_path)
    reader = subprocess.Popen([sys.executable, "-c", BIG_READER, str(d)], text=True,
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert reader.stdout.readline().strip() == "READY"
        agent.wait_marked(d)
        long = "x" * 100
        for i in range(2000):  # 2000 IN_CREATE of 16 + 112 bytes each
            (d / f"{long}{i:05d}").touch()
        reader.stdin.write("\n")
        reader.stdin.flush()
        nbytes, nevents = (int(x) for x in reader.stdout.readline().split())
        assert nbytes > 3 * 65536 and nevents == 2000
        evs = agent.wait_for(lambda e: e["tracer_pid"] == reader.pid, n=2000, timeout=5)
    finally:
        reader.kill()
        reader.wait()
        stats = agent.stop()
    captured = 65536 // 128  # whole events in the captured 64 KiB
    assert len(evs) == captured, len(evs)
    assert [e["name"] for e in evs] == [f"{long}{i:05d}" for i in range(captured)]
    assert all(e["i_wd"] == 1 and e["i_mask_names"] == ["IN_CREATE"] for e in evs)
    assert stats["read_truncated"] >= 1 and stats["read_incomplete"] >= 1, stats
    assert stats["read_bytes_unparsed"] >= nbytes - 65536, stats


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
    iw = start_inotifywait(str(d), tmp_path / "iw.log")
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
