"""`otel-fsnotify listeners` names every real listener on the host and what
it watches: inotifywait on a directory, a fanotify listener marking an
inode, one marking a whole mount, and a permission listener (the class a
user must know about: it can block opens)."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.harness.agent import cli
from tests.harness.listeners import start_inotifywait, start_listener, stop

pytestmark = pytest.mark.host


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    base = tmp_path_factory.mktemp("listeners")
    (base / "a").mkdir()
    (base / "b").mkdir()
    procs = {}
    try:
        procs["inotifywait"] = start_inotifywait(base / "a")
        procs["notify"] = start_listener("notify", str(base / "a"))
        procs["mount"] = start_listener("notify", str(base / "a"), "--mount")
        procs["perm"] = start_listener("perm-allow", str(base / "b"))
        yield base, procs
    finally:
        for p in procs.values():
            stop(p)


def listeners(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*cli(), "listeners", *args], capture_output=True, text=True, timeout=60)


def rows_of(procs, *names) -> dict:
    args = [a for n in names for a in ("--pid", str(procs[n].pid))]
    proc = listeners("-o", "json", *args)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    return {r["pid"]: r for r in report["listeners"]}, report


def test_inotifywait_is_listed_with_its_watched_directory_and_mask(scene):
    base, procs = scene
    rows, _ = rows_of(procs, "inotifywait")
    row = rows[procs["inotifywait"].pid]
    assert (row["api"], row["comm"], row["exe"]) == ("inotify", "inotifywait", "/usr/bin/inotifywait")
    assert row["watches"] == 1
    watched = row["watched"][0]
    assert watched["path"] == str(base / "a") and watched["wd"] == 1
    assert {"IN_CLOSE_WRITE", "IN_CREATE", "IN_DELETE"} <= set(watched["mask"])


def test_fanotify_listeners_show_class_flags_and_each_kind_of_mark(scene):
    base, procs = scene
    rows, _ = rows_of(procs, "notify", "mount", "perm")
    notify, mount, perm = (rows[procs[n].pid] for n in ("notify", "mount", "perm"))
    assert notify["api"] == "fanotify" and notify["fanotify_class"] == "notif"
    assert [(w["kind"], w["path"]) for w in notify["watched"]] == [("inode", str(base / "a"))]
    assert "FAN_CLOSE_WRITE" in notify["watched"][0]["mask"]
    # the mount mark names the mount the directory is on
    top = subprocess.run(["findmnt", "-n", "-o", "TARGET", "-T", str(base)], capture_output=True,
                         text=True).stdout.strip()
    assert [(w["kind"], w["path"]) for w in mount["watched"]] == [("mount", top)]
    assert perm["fanotify_class"] == "content"
    assert [(w["kind"], w["path"]) for w in perm["watched"]] == [("inode", str(base / "b"))]
    assert "FAN_OPEN_PERM" in perm["watched"][0]["mask"]


def test_the_limits_count_each_users_instances_and_watches(scene):
    _, procs = scene
    _, report = rows_of(procs, "inotifywait", "notify", "mount", "perm")
    (limits,) = report["limits"]
    assert limits["uid"] == os.geteuid()
    assert limits["used"] == {"max_user_instances": 1, "max_user_watches": 1, "max_user_groups": 3,
                              "max_user_marks": 3}
    with open("/proc/sys/fs/inotify/max_user_watches") as fh:
        assert limits["limit"]["max_user_watches"] == int(fh.read())


def test_the_table_shows_each_listener_and_its_paths_for_a_person(scene):
    base, procs = scene
    proc = listeners()  # the whole host
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert lines[0].split()[:6] == ["PID", "COMM", "FD", "API", "CLASS", "WATCHES"]
    row = next(i for i, line in enumerate(lines) if line.split()[:1] == [str(procs["inotifywait"].pid)])
    assert lines[row].split()[1:4] == ["inotifywait", "3", "inotify"]
    assert str(base / "a") in lines[row + 1] and "IN_ALL_EVENTS" in lines[row + 1]
    perm = next(line for line in lines if line.split()[:1] == [str(procs["perm"].pid)])
    assert "content" in perm.split()
    assert any(line.startswith(f"  uid {os.geteuid()}: max_user_instances ") for line in lines)


def test_a_process_without_listeners_says_so():
    proc = listeners("--pid", str(os.getpid()))
    assert proc.returncode == 0 and proc.stdout.startswith("no inotify or fanotify listeners")


def test_an_inotify_instance_without_watches_still_counts(tmp_path):
    # inotify_init1 and no inotify_add_watch: fdinfo has no line for it
    code = "import ctypes, sys; fd = ctypes.CDLL(None).inotify_init1(0); print(fd, flush=True); sys.stdin.read()"
    proc = subprocess.Popen(["python3", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        fd = int(proc.stdout.readline())
        out = listeners("-o", "json", "--pid", str(proc.pid))
        (row,) = json.loads(out.stdout)["listeners"]
        assert (row["api"], row["fd"], row["watches"]) == ("inotify", fd, 0)
        assert json.loads(out.stdout)["limits"][0]["used"]["max_user_instances"] == 1
    finally:
        proc.communicate("")


def test_an_instance_inherited_over_fork_is_one_listener_held_by_both(tmp_path):
    # one inotify instance with one watch, then fork: parent and child hold it
    code = ("import ctypes, os, sys\n"
            "libc = ctypes.CDLL(None)\n"
            "fd = libc.inotify_init1(0)\n"
            f"libc.inotify_add_watch(fd, {str(tmp_path).encode()!r}, 0x100)\n"
            "if os.fork() == 0:\n"
            "    sys.stdin.read(); os._exit(0)\n"
            "print(fd, flush=True); sys.stdin.read(); os.wait()\n")
    proc = subprocess.Popen(["python3", "-c", code], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        fd = int(proc.stdout.readline())
        child = int(open(f"/proc/{proc.pid}/task/{proc.pid}/children").read().split()[0])
        out = listeners("-o", "json", "--pid", str(proc.pid), "--pid", str(child))
        report = json.loads(out.stdout)
        (row,) = report["listeners"]
        assert (row["pid"], row["fd"], row["watches"]) == (proc.pid, fd, 1)
        assert row["also_held_by"] == [{"pid": child, "fd": fd, "comm": "python3"}]
        assert report["limits"][0]["used"]["max_user_instances"] == 1  # one instance, charged once
        table = listeners("--pid", str(proc.pid), "--pid", str(child)).stdout
        assert f"also held by pid {child} python3 fd {fd}" in table
    finally:
        proc.communicate("")
