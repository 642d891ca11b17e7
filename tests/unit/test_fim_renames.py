"""Watch mode's renames before FAN_RENAME (kernels before 5.17): the kernel
queues a rename's FAN_MOVED_FROM and FAN_MOVED_TO back to back, but a read
can end between the two. Driven through FimMonitor.process with the events
as the fanotify group reads them, a real SQLite baseline and real files."""

from __future__ import annotations

import logging
import time

from otel_fsnotify.fim import monitor as fim_monitor
from otel_fsnotify.fim.baseline import Baseline
from otel_fsnotify.fim.excludes import Excludes
from otel_fsnotify.fim.fid_group import Handle, RawChange
from otel_fsnotify.fim.hashing import Hasher
from otel_fsnotify.fim.monitor import FimMonitor, Watched
from otel_fsnotify.kernel.abi import FAN_MOVED_FROM, FAN_MOVED_TO

DIR = Handle(b"fsid0000", 1, b"directory")  # the watched directory, as the group names it


def _monitor(tmp_path, tree):
    m = FimMonitor([Watched(str(tree))], Excludes([], [str(tree)]), Hasher(), Hasher(),
                   str(tmp_path / "state"), logging.getLogger("test"))
    m.baseline = Baseline(str(tmp_path / "baseline.sqlite"))
    m.dirs._paths[DIR] = str(tree)
    return m


def _actor(pid, mask, watched):
    return {"tracee_pid": pid}, time.time_ns()


def test_a_rename_whose_halves_come_in_two_reads_is_one_rename(tmp_path):
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_text("x")
    m = _monitor(tmp_path, tree)
    m.baseline.put(str(tree / "a"), m.hasher.state(str(tree / "a")))
    (tree / "a").rename(tree / "b")
    out = m.process([RawChange(FAN_MOVED_FROM, 42, DIR, "a")], _actor)
    out += m.process([RawChange(FAN_MOVED_TO, 42, DIR, "b")], _actor)
    out += m.finish()
    assert [(e.action, e.path, e.old_path) for e in out] == [("renamed", str(tree / "b"), str(tree / "a"))]


def test_a_move_out_with_no_second_half_is_a_deletion_once_its_wait_is_over(tmp_path, monkeypatch):
    monkeypatch.setattr(fim_monitor, "MOVE_PAIR_S", 0.05)
    tree = tmp_path / "tree"
    tree.mkdir()
    (tree / "a").write_text("x")
    m = _monitor(tmp_path, tree)
    m.baseline.put(str(tree / "a"), m.hasher.state(str(tree / "a")))
    (tree / "a").unlink()  # as if moved out of the watched paths
    first = m.process([RawChange(FAN_MOVED_FROM, 42, DIR, "a")], _actor)
    assert first == [] and m.busy  # still waiting for its second half
    time.sleep(0.1)
    later = m.process([], _actor)
    assert [(e.action, e.path) for e in later] == [("deleted", str(tree / "a"))]
    assert not m.busy
