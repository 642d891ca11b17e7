"""Attribution on a real kernel, every backend: each event a real tracer
(inotifywait, fanotify listeners) reads names that tracer and the real
tracee (touch, cat) that caused it, read back from the agent's jsonl:
`exact` on fentry and kprobe, `inferred` on the tracepoint backend.
One agent per backend for the module.
(tests/host/test_attribution.py: the tracepoint backend on this host.)
"""

from __future__ import annotations

import os
import subprocess
import time

from tests.harness.actors import assert_touch_reported, blocked_cat, cat_under_verdict, run
from tests.harness.listeners import start_inotifywait, start_listener, stop
from tests.vm.guest.conftest import attribution_of, on_child

IN_OPEN, IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE = 0x20, 0x4, 0x8, 0x100


# ---------------------------------------------------------------- inotify

def test_inotify_events_name_the_touching_process(agent, wdir):
    tracer = start_inotifywait(wdir)
    agent.ready_for(wdir)
    try:
        before = time.time_ns()
        subprocess.run(["touch", str(wdir / "ABCDE")], check=True)
        after = time.time_ns()
        evs = agent.wait_for(lambda e: e["name"] == "ABCDE" and e["tracer_pid"] == tracer.pid, n=4)
        reported = time.time_ns()
    finally:
        stop(tracer)
    child = on_child(agent.backend)
    assert {e["i_mask"] for e in evs} == {IN_CREATE, child | IN_OPEN, child | IN_ATTRIB,
                                          child | IN_CLOSE_WRITE}, (tracer.pid, agent.events()[-6:])
    # the watched directory's path (from the tracer's watch) joined with the name
    assert_touch_reported(evs, wdir / "ABCDE", attribution_of(agent.backend))
    for e in evs:
        assert e["tracer_exe"] == "/usr/bin/inotifywait"
        assert e["tracee_ppid"] == os.getpid()
        assert e["i_wd"] == 1
        # exact backends stamp the event when it happens; tracepoint when the
        # tracer's read returns (docs/backends.md), which may be later
        last = after if agent.backend != "tracepoint" else reported
        assert before <= e["timestamp"] <= last + 1_000_000, (before, e["timestamp"], after, reported)
    create = next(e for e in evs if e["i_mask"] == IN_CREATE)
    assert create["i_mask_names"] == ["IN_CREATE"]
    assert create["i_ino"] == os.stat(wdir / "ABCDE").st_ino


def test_two_tracers_of_one_directory_each_get_their_events(agent, wdir):
    t1, t2 = start_inotifywait(wdir), start_inotifywait(wdir)
    agent.ready_for(wdir)
    try:
        subprocess.run(["touch", str(wdir / "both")], check=True)
        evs = agent.wait_for(lambda e: e["name"] == "both", n=8)
    finally:
        stop(t1), stop(t2)
    by_tracer = {}
    for e in evs:
        by_tracer.setdefault(e["tracer_pid"], []).append(e)
    assert set(by_tracer) == {t1.pid, t2.pid}
    assert all(len(v) == 4 and all(e["tracee_comm"] == "touch" for e in v) for v in by_tracer.values())


def test_tracee_in_another_mount_namespace(agent, wdir):
    tracer = start_inotifywait(wdir)
    agent.ready_for(wdir)
    try:
        out = subprocess.run(["unshare", "-m", "sh", "-c",
                              f"readlink /proc/self/ns/mnt; exec touch {wdir}/nsfile"],
                             check=True, capture_output=True, text=True).stdout
        evs = agent.wait_for(lambda e: e["name"] == "nsfile" and e["tracer_pid"] == tracer.pid, n=4)
    finally:
        stop(tracer)
    ns = int(out.strip().split("[")[1].rstrip("]"))
    own = os.stat("/proc/self/ns/mnt").st_ino
    assert ns != own
    assert evs and all(e["tracee_mntns_id"] == ns for e in evs), (ns, evs)
    assert all(e["tracer_mntns_id"] == own for e in evs)


def test_inotify_path_of_watched_file_and_nested_dir(agent, wdir):
    """path = the watched object's own path when the event is on it (no name),
    and the full path of a nested watched directory joined with the name."""
    nested = wdir / "a" / "b c"
    nested.mkdir(parents=True)
    target = wdir / "watched-file"
    target.write_text("x")
    on_file, on_dir = start_inotifywait(target), start_inotifywait(nested)
    agent.ready_for(target), agent.ready_for(nested)
    try:
        subprocess.run(["touch", str(target), str(nested / "leaf")], check=True)
        file_evs = agent.wait_for(lambda e: e["tracer_pid"] == on_file.pid, n=3)
        dir_evs = agent.wait_for(lambda e: e["tracer_pid"] == on_dir.pid and e["name"] == "leaf", n=4)
    finally:
        stop(on_file), stop(on_dir)
    assert file_evs and all(e["name"] == "" and e["path"] == str(target) for e in file_evs), \
        [(e["name"], e["path"]) for e in file_evs]
    assert dir_evs and all(e["path"] == f"{nested}/leaf" for e in dir_evs), [e["path"] for e in dir_evs]


# ---------------------------------------------------------------- fanotify

def test_fanotify_event_names_the_reading_process(agent, wdir):
    target = wdir / "secret.txt"
    target.write_text("x")
    listener = start_listener("notify", str(wdir))
    try:
        cat = run("cat", str(target))
        evs = agent.wait_for(lambda e: e["type"] == "fanotify" and e["tracer_pid"] == listener.pid, n=2)
    finally:
        stop(listener)
    assert evs, agent.events()[-5:]
    for e in evs:
        assert e["tracee_comm"] == "cat" and e["tracee_pid"] == cat
        assert e["fa_pid"] == cat
        assert e["name"] == str(target) and e["path"] == str(target)
        assert e["fa_type"] == "FANOTIFY_EVENT_TYPE_PATH"
    assert {n for e in evs for n in e["fa_mask_names"]} >= {"FAN_OPEN", "FAN_CLOSE_NOWRITE"}


# ---------------------------------------------------------------- permission verdicts

def test_permission_allow_names_the_allowed_process(agent, wdir):
    target = wdir / "perm-allow.txt"
    target.write_text("x")
    v = cat_under_verdict(agent, target, "perm-allow")
    assert v.cat.returncode == 0
    assert len(v.responses) == 1, v.responses
    e = v.responses[0]
    assert e["fa_response"] == "allow" and e["tracee_comm"] == "cat"
    assert e["fa_type"] == "FANOTIFY_EVENT_TYPE_PATH_PERM" and e["name"] == str(target)
    assert e["tracer_pid"] == v.listener.pid
    assert "FAN_OPEN_PERM" in e["fa_mask_names"]


def test_permission_deny_names_the_denied_process(agent, wdir):
    target = wdir / "perm-deny.txt"
    target.write_text("x")
    v = cat_under_verdict(agent, target, "perm-deny")
    assert v.cat.returncode != 0 and "Operation not permitted" in v.stderr
    assert len(v.responses) == 1, v.responses
    e = v.responses[0]
    assert e["fa_response"] == "deny"
    assert e["tracee_comm"] == "cat" and e["tracee_pid"] == v.cat.pid and e["tracee_ppid"] == os.getpid()
    assert e["tracer_pid"] == v.listener.pid and e["name"] == str(target)


def test_tracee_killed_while_waiting_is_interrupted(agent, wdir):
    target = wdir / "stall.txt"
    target.write_text("x")
    listener = start_listener("stall", str(target))
    try:
        cat = blocked_cat(agent, target)  # the listener read the permission event
        cat.kill()  # SIGKILL ends the tracee's killable wait for the verdict
        cat.wait()
    finally:
        stop(listener)  # the listener's release frees the cancelled event
    evs = agent.wait_for(lambda e: e["type"] == "fa_resp" and e["tracee_pid"] == cat.pid)
    assert [e["fa_response"] for e in evs] == ["interrupted"], evs
