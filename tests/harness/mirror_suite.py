"""The tracepoint backend's mirror on a filesystem of its own (a fresh
tmpfs): where the kernel gives fanotify file handles there (tmpfs from 5.13
on), every inotify event of a watch on it is attributed; where it does not
(5.10: tmpfs has no filesystem id, ENODEV), the mirror falls back to
fd-reporting marks: open, access, modify and close are still attributed,
create and delete are not (unknown, counted in inotify_unmatched), and one
warning line says so. Which case applies is probed here, independently of
the agent, never read from the kernel version. Imported by
tests/host/test_watch_mirror.py and tests/vm/guest/test_mirror_per_filesystem.py,
which provide `tracepoint_agent`: a running tracepoint agent.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import os
import subprocess
import sys

from tests.harness.listeners import start_inotifywait, stop

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
# FAN_CLASS_NOTIF | FAN_CLOEXEC, FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME
_FID_GROUP = 0x1 | 0x200 | 0x400 | 0x800
_FAN_MARK_ADD, _FAN_OPEN = 0x1, 0x20

# One process: creates and writes `new`, reads `old`, deletes `new`: each
# (name, event) once, since fanotify merges a pid's repeated event on one
# object while it is queued, and inotify does not.
_ACTOR = ("import os, sys\nd = sys.argv[1]\n"
          "fd = os.open(d + '/new', os.O_CREAT | os.O_WRONLY); os.write(fd, b'x'); os.close(fd)\n"
          "fd = os.open(d + '/old', os.O_RDONLY); os.read(fd, 1); os.close(fd)\n"
          "os.unlink(d + '/new')\n")
BY_FD = {("new", "IN_OPEN"), ("new", "IN_MODIFY"), ("new", "IN_CLOSE_WRITE"), ("old", "IN_OPEN"),
         ("old", "IN_ACCESS"), ("old", "IN_CLOSE_NOWRITE")}
BY_HANDLE_ONLY = {("new", "IN_CREATE"), ("new", "IN_DELETE")}


def file_handle_marks_refused(path) -> str:
    """The errno name the kernel refuses a file-handle fanotify mark on path
    with ("" when it accepts one)."""
    group = _libc.fanotify_init(_FID_GROUP, os.O_RDONLY)
    assert group >= 0, os.strerror(ctypes.get_errno())
    try:
        if _libc.fanotify_mark(group, _FAN_MARK_ADD, _FAN_OPEN, -100, str(path).encode()) == 0:
            return ""
        return errno.errorcode[ctypes.get_errno()]
    finally:
        os.close(group)


def test_a_watch_where_fanotify_has_no_file_handles_is_attributed_by_its_opens_and_closes(
        tracepoint_agent, tmp_path):
    agent = tracepoint_agent
    root = tmp_path / "own-tmpfs"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root)], check=True)
    try:
        refused = file_handle_marks_refused(root)
        (root / "old").write_text("o")
        tracer = start_inotifywait(root)
        try:
            agent.wait_marked(root)
            actor = subprocess.Popen([sys.executable, "-c", _ACTOR, str(root)])
            assert actor.wait() == 0
            # (the agent's own first open of the tmpfs, for file handles, is an
            # IN_OPEN|IN_ISDIR of its root: not one of these)
            evs = agent.wait_for(lambda e: e["tracer_pid"] == tracer.pid and e["name"] in ("new", "old"), n=8)
        finally:
            stop(tracer)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)
    by_mask = {(e["name"], name): e for e in evs for name in e["i_mask_names"]}
    assert set(by_mask) == BY_FD | BY_HANDLE_ONLY, sorted(by_mask)
    actors = {e["tracee_pid"] for e in evs if e["attribution"] == "inferred"}
    assert actors == {actor.pid}, [(e["i_mask_names"], e["tracee_pid"]) for e in evs]
    warning = f"mirror: tmpfs at {root} gives fanotify no file handles on this kernel"
    said = [line for line in agent.stderr().splitlines() if warning in line]
    attributed = {n for n, e in by_mask.items() if e["attribution"] == "inferred"}
    if not refused:
        assert attributed == BY_FD | BY_HANDLE_ONLY, by_mask
        assert said == []
        return
    assert attributed == BY_FD, (refused, {n: e["attribution"] for n, e in by_mask.items()})
    assert all(by_mask[n]["attribution"] == "unknown" and by_mask[n]["tracee_pid"] == 0
               for n in BY_HANDLE_ONLY)
    assert len(said) == 1 and f"({refused})" in said[0], said
    assert "create, delete, move and attrib are not" in said[0]


def test_two_filesystems_with_alike_inodes_keep_their_actors_apart(tracepoint_agent, tmp_path):
    """Two tmpfs mounts: their roots are both inode 1, with alike file
    handles. A writer in each at once, a listener on each root: every event
    is given its own filesystem's writer, never the other's (the mirror
    tells objects apart by device and filesystem id, not inode alone)."""
    agent = tracepoint_agent
    roots = [tmp_path / "tmpfs-a", tmp_path / "tmpfs-b"]
    for root in roots:
        root.mkdir()
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root)], check=True)
    tracers = []
    try:
        refused = file_handle_marks_refused(roots[0])
        assert roots[0].stat().st_ino == roots[1].stat().st_ino
        for root in roots:
            (root / "old").write_text("o")
            tracers.append(start_inotifywait(root))
            agent.wait_marked(root)
        actors = [subprocess.Popen([sys.executable, "-c", _ACTOR, str(root)]) for root in roots]
        assert all(a.wait() == 0 for a in actors)
        evs = [agent.wait_for(lambda e, t=t: e["tracer_pid"] == t.pid and e["name"] in ("new", "old"), n=8)
               for t in tracers]
    finally:
        for t in tracers:
            stop(t)
        for root in roots:
            subprocess.run(["umount", "-l", str(root)], check=True)
    for mine, actor, other in ((evs[0], actors[0], actors[1]), (evs[1], actors[1], actors[0])):
        by_mask = {(e["name"], name): e for e in mine for name in e["i_mask_names"]}
        assert set(by_mask) == BY_FD | BY_HANDLE_ONLY, sorted(by_mask)
        attributed = {n for n, e in by_mask.items() if e["attribution"] == "inferred"}
        assert attributed == (BY_FD if refused else BY_FD | BY_HANDLE_ONLY), \
            {n: (e["attribution"], e["tracee_pid"]) for n, e in by_mask.items()}
        assert {e["tracee_pid"] for e in mine if e["attribution"] == "inferred"} == {actor.pid}, \
            (actor.pid, other.pid, [(e["i_mask_names"], e["tracee_pid"]) for e in mine])
