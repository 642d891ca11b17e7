"""The baseline in SQLite: what was recorded is there after a SIGKILL, a
directory rename moves its children, and a comparison names the change."""

from __future__ import annotations

import subprocess
import sys

import pytest

from otel_fsnotify.fim.baseline import Baseline, BaselineError, FileState, change

A = FileState(size=3, mode=0o100644, uid=0, gid=0, mtime_ns=1, ino=10, hashes={"sha256": "ab"})
D = FileState(size=4096, mode=0o40755, uid=0, gid=0, mtime_ns=1, ino=20, hash_skipped="not_regular")


def test_a_killed_writer_leaves_every_committed_entry(tmp_path):
    db = tmp_path / "baseline.db"
    code = (
        "import os, signal\n"
        "from otel_fsnotify.fim.baseline import Baseline, FileState\n"
        f"b = Baseline({str(db)!r})\n"
        "with b.batch():\n"
        "    for i in range(5000):\n"
        "        b.put(f'/w/f{i}', FileState(i, 0o100644, 0, 0, i, i, {'sha256': 'x'}))\n"
        "b.mark_recorded('/w')\n"
        "b._db.execute('BEGIN')\n"
        "b.put('/w/uncommitted', FileState(1, 1, 1, 1, 1, 1))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    proc = subprocess.run([sys.executable, "-c", code])
    assert proc.returncode == -9
    b = Baseline(str(db))
    assert len(b) == 5000 and b.recorded('/w') and not b.recorded('/elsewhere')
    assert b.get("/w/f4999") == FileState(4999, 0o100644, 0, 0, 4999, 4999, {"sha256": "x"})
    assert b.get("/w/uncommitted") is None
    b.close()


def test_renaming_a_directory_moves_its_children_not_its_neighbours(tmp_path):
    b = Baseline(str(tmp_path / "b.db"))
    with b.batch():
        for p in ("/w/d", "/w/d/x", "/w/d/sub/y", "/w/d2/z", "/w/dd", "/w/e/old"):
            b.put(p, A)
    assert b.rename("/w/d", "/w/e") == 3
    assert sorted(p for p, _ in b.under("/w")) == ["/w/d2/z", "/w/dd", "/w/e", "/w/e/sub/y", "/w/e/x"]
    assert sorted(b.children("/w/e")) == ["x"] and sorted(b.children("/w/e/sub")) == ["y"]
    assert b.children("/w/d") == {}
    b.delete("/w/e")
    assert sorted(p for p, _ in b.under("/")) == ["/w/d2/z", "/w/dd"]
    b.close()


@pytest.mark.parametrize("before, now, action", [
    (None, A, "created"),
    (A, None, "deleted"),
    (A, A, ""),
    (A, FileState(3, 0o100644, 0, 0, 2, 10, {"sha256": "ab"}), "attributes"),  # touch
    (A, FileState(4, 0o100644, 0, 0, 2, 10, {"sha256": "ef"}), "modified"),
    (A, FileState(3, 0o100644, 0, 0, 1, 11, {"sha256": "ab"}), "modified"),  # replaced
    (FileState(3, 0o100644, 0, 0, 1, 10, hash_skipped="too_large"),
     FileState(3, 0o100644, 0, 0, 2, 10, hash_skipped="too_large"), "modified"),
    (D, FileState(4096, 0o40755, 0, 0, 9, 20, hash_skipped="not_regular"), ""),  # entries changed
    (D, FileState(4096, 0o40700, 0, 0, 1, 20, hash_skipped="not_regular"), "attributes"),
    (A, FileState(3, 0o100644, 0, 0, 1, 10, {"sha256": "cd"}), "modified"),
    (A, FileState(3, 0o100600, 0, 0, 1, 10, {"sha256": "ab"}), "attributes"),
    (A, FileState(3, 0o100644, 1000, 0, 1, 10, {"sha256": "ab"}), "attributes"),
])
def test_a_comparison_names_the_change(before, now, action):
    assert change(before, now) == action


def test_a_file_that_is_not_a_baseline_is_one_line(tmp_path):
    bad = tmp_path / "b.db"
    bad.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(BaselineError, match="baseline .*b.db"):
        Baseline(str(bad))

