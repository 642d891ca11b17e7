"""Watch mode, as its user sees it: real programs change files under a
watched tree and the agent's jsonl says what changed, how, by whom, with
hashes that match the coreutils. One suite, every kernel: imported by
tests/host/test_watch_mode.py (tracepoint backend, this host) and
tests/vm/guest/test_watch_mode.py (fentry and kprobe, Debian's kernel).

The importing module provides the fixtures `watch` (a Watch: a running
agent with `--watch root`, and `outside`, a directory on the same filesystem
that is not watched) and `start_agent(workdir, *flags)` (another agent of the
same backend, not waited for). No other inotify/fanotify listener runs
during these tests.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.harness.actors import open_to_anyone
from tests.harness.agent import Agent


@dataclass
class Watch:
    agent: Agent
    root: Path  # watched
    outside: Path  # same filesystem, not watched
    attribution: str = "exact"

    def changes(self, pred=lambda e: True, n: int = 1, timeout: float | None = None) -> list[dict]:
        return self.agent.wait_for(lambda e: e["type"] == "fim" and pred(e), n=n, timeout=timeout)

    def at(self, path, n: int = 1, timeout: float | None = None) -> list[dict]:
        return self.changes(lambda e: e["path"] == str(path), n=n, timeout=timeout)

    def settled(self, directory: Path) -> None:
        """Everything done before this is reported: a marker file's own
        event comes after every earlier change has settled."""
        marker = directory / f".marker-{uuid.uuid4().hex[:8]}"
        marker.write_text("m")
        assert self.at(marker), f"the marker {marker} was never reported: {self.agent.stderr()}"


def sha256(path) -> str:
    return subprocess.run(["sha256sum", str(path)], check=True, capture_output=True,
                          text=True).stdout.split()[0]


@pytest.fixture
def wd(watch) -> Path:
    d = watch.root / f"t-{uuid.uuid4().hex[:8]}"
    d.mkdir()
    watch.at(d)  # its own creation, out of the way
    return d


def _sh(script: str) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", script], check=True, capture_output=True, text=True)


# ------------------------------------------------------------ each change

def test_a_new_file_is_one_created_event_with_its_hash_and_actor(watch, wd):
    f = wd / "new.conf"
    proc = subprocess.Popen(["sh", "-c", f"printf 'key=1\\n' > {f}"])
    proc.wait()
    evs = watch.at(f)
    assert len(evs) == 1, evs
    e = evs[0]
    assert e["action"] == "created" and e["origin"] == "live"
    assert e["file_hashes"] == {"sha256": sha256(f)} and e["hash_skipped"] == ""
    st = os.lstat(f)
    assert (e["file_size"], e["file_mode"], e["file_uid"], e["file_gid"], e["file_ino"], e["file_mtime"]) == (
        st.st_size, st.st_mode, st.st_uid, st.st_gid, st.st_ino, st.st_mtime_ns)
    assert e["tracee_pid"] == proc.pid and e["tracee_comm"] == "sh", e
    assert e["tracee_exe"] == os.path.realpath("/bin/sh") and e["tracee_ppid"] == os.getpid()
    assert e["attribution"] == watch.attribution
    assert e["name"] == "new.conf" and e["old_path"] == ""


def test_a_write_session_is_one_modified_event_hashed_after_the_last_close(watch, wd):
    f = wd / "log.txt"
    f.write_text("start\n")
    watch.at(f)
    code = f"f = open({str(f)!r}, 'a')\nfor i in range(200):\n    f.write(f'line {{i}}\\n'); f.flush()\nf.close()"
    proc = subprocess.Popen([sys.executable, "-c", code])
    proc.wait()
    watch.settled(wd)
    mods = [e for e in watch.at(f) if e["action"] == "modified"]
    assert len(mods) == 1, mods
    assert mods[0]["file_hashes"]["sha256"] == sha256(f)
    assert mods[0]["tracee_pid"] == proc.pid and mods[0]["file_size"] == f.stat().st_size


def test_chmod_and_chown_are_attributes_with_the_new_values(watch, wd):
    f = wd / "secret"
    f.write_text("s")
    watch.at(f)
    _sh(f"chmod 600 {f}")
    evs = watch.changes(lambda e: e["path"] == str(f) and e["action"] == "attributes")
    assert evs and evs[0]["file_mode"] & 0o7777 == 0o600 and evs[0]["tracee_comm"] == "chmod"
    _sh(f"chown 1234:5678 {f}")
    evs = watch.changes(lambda e: e["path"] == str(f) and e["action"] == "attributes", n=2)
    assert (evs[-1]["file_uid"], evs[-1]["file_gid"]) == (1234, 5678), evs
    assert evs[-1]["tracee_comm"] == "chown"
    assert evs[-1]["file_hashes"] == {"sha256": sha256(f)}  # the content did not change


def test_a_deleted_file_is_reported_with_what_it_was(watch, wd):
    f = wd / "gone"
    f.write_text("bye")
    digest = sha256(f)
    watch.at(f)
    _sh(f"rm {f}")
    evs = watch.changes(lambda e: e["path"] == str(f) and e["action"] == "deleted")
    assert evs and evs[0]["tracee_comm"] == "rm" and evs[0]["file_hashes"] == {"sha256": digest}


def test_files_created_and_deleted_at_once_are_each_created_and_deleted(watch, wd):
    """A dropper's short-lived files: the watch group merges a file's
    create, write and delete into one event while they wait; each file is
    still reported created (its content gone: hash_skipped vanished) and
    deleted, by its process."""
    n = 300
    code = (f"import os\nfor i in range({n}):\n    p = '{wd}/drop%d' % i\n"
            f"    fd = os.open(p, os.O_CREAT | os.O_WRONLY, 0o644); os.write(fd, b'x'); os.close(fd)\n"
            f"    os.unlink(p)\n")
    proc = subprocess.Popen([sys.executable, "-c", code])
    assert proc.wait() == 0
    watch.settled(wd)
    evs = watch.changes(lambda e: e["name"].startswith("drop"), n=2 * n)
    seen = {(e["path"], e["action"]) for e in evs if e["tracee_pid"] == proc.pid}
    for i in range(n):
        path = str(wd / f"drop{i}")
        assert (path, "created") in seen and (path, "deleted") in seen, (i, sorted(seen)[:6])


# ------------------------------------------------------------ renames

def test_a_rename_inside_the_tree_is_one_renamed_event_with_both_paths(watch, wd):
    a, b = wd / "a", wd / "b"
    a.write_text("same")
    watch.at(a)
    _sh(f"mv {a} {b}")
    watch.settled(wd)
    evs = watch.changes(lambda e: str(wd) in e["path"] and e["path"] in (str(a), str(b)))
    renamed = [e for e in evs if e["action"] == "renamed"]
    assert len(renamed) == 1 and [e["action"] for e in evs].count("deleted") == 0, evs
    assert renamed[0]["old_path"] == str(a) and renamed[0]["path"] == str(b)
    assert renamed[0]["file_hashes"] == {"sha256": sha256(b)} and renamed[0]["tracee_comm"] == "mv"


def test_a_file_renamed_over_another_carries_the_new_content_hash(watch, wd):
    target, tmp = wd / "app.conf", wd / "app.conf.new"
    target.write_text("old contents\n")
    watch.at(target)
    tmp.write_text("new contents\n")
    watch.at(tmp)
    _sh(f"mv -f {tmp} {target}")
    evs = watch.changes(lambda e: e["path"] == str(target) and e["action"] == "renamed")
    assert evs and evs[0]["old_path"] == str(tmp)
    assert evs[0]["file_hashes"]["sha256"] == sha256(target) == hashlib.sha256(b"new contents\n").hexdigest()


def test_renaming_a_directory_moves_its_children_without_an_event_each(watch, wd):
    d = wd / "dir"
    (d / "sub").mkdir(parents=True)
    for name in ("x", "y", "sub/z"):
        (d / name).write_text(name)
    watch.at(d / "sub" / "z")
    _sh(f"mv {d} {wd / 'moved'}")
    watch.settled(wd)
    evs = watch.changes(lambda e: e["path"].startswith(str(wd / "moved")) or e["old_path"].startswith(str(d)))
    assert [(e["action"], e["path"], e["old_path"]) for e in evs] == [
        ("renamed", str(wd / "moved"), str(d))], evs
    # the children followed in the baseline: a change to one is "modified", not "created"
    _sh(f"echo more >> {wd / 'moved' / 'sub' / 'z'}")
    evs = watch.at(wd / "moved" / "sub" / "z")
    assert evs and evs[0]["action"] == "modified", evs


def test_moving_in_from_outside_is_created_and_out_is_deleted(watch, wd):
    src = watch.outside / f"in-{uuid.uuid4().hex[:6]}"
    src.write_text("from outside")
    _sh(f"mv {src} {wd / 'arrived'}")
    evs = watch.at(wd / "arrived")
    assert evs and evs[0]["action"] == "created" and evs[0]["file_hashes"]["sha256"] == sha256(wd / "arrived")
    _sh(f"mv {wd / 'arrived'} {watch.outside / src.name}")
    evs = watch.changes(lambda e: e["path"] == str(wd / "arrived") and e["action"] == "deleted")
    assert evs and evs[0]["tracee_comm"] == "mv"
    assert not watch.changes(lambda e: str(watch.outside) in e["path"], timeout=0.5)


# ------------------------------------------------------------ coverage

def test_a_new_subdirectory_is_covered_from_its_first_file(watch, wd):
    deep = wd / "a" / "b" / "c"
    _sh(f"mkdir -p {deep} && echo first > {deep / 'f'}")
    evs = watch.at(deep / "f")
    assert evs and evs[0]["action"] == "created" and evs[0]["file_hashes"]["sha256"] == sha256(deep / "f")
    created_dirs = {e["path"] for e in watch.changes(lambda e: e["action"] == "created", n=10, timeout=1)}
    assert {str(wd / "a"), str(wd / "a" / "b"), str(deep)} <= created_dirs


def test_excluded_paths_give_no_events(watch, wd):
    (wd / "cache").mkdir()
    _sh(f"echo x > {wd / 'edit.swp'}; echo y > {wd / 'cache' / 'blob'}; echo z > {wd / 'kept'}")
    watch.settled(wd)
    paths = {e["path"] for e in watch.changes(lambda e: str(wd) in e["path"], n=100, timeout=0.5)}
    assert str(wd / "kept") in paths
    assert str(wd / "edit.swp") not in paths and str(wd / "cache" / "blob") not in paths


def test_no_inotify_watch_and_one_mark_per_filesystem(watch):
    inotify_watches = fan_marks = 0
    pid = watch.agent.proc.pid
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = Path(f"/proc/{pid}/fdinfo/{fd}").read_text()
        except OSError:
            continue
        inotify_watches += text.count("inotify wd:")
        fan_marks += text.count("fanotify sdev:")
    assert inotify_watches == 0 and fan_marks == 1


# ------------------------------------------------------------ the actor

def test_a_writer_that_execs_at_once_is_still_the_actor(watch, wd):
    f = wd / "then-exec"
    proc = subprocess.Popen(["sh", "-c", f"echo x > {f}; exec sleep 1"])
    evs = watch.at(f)
    proc.wait()
    assert evs and evs[0]["tracee_pid"] == proc.pid
    assert evs[0]["tracee_comm"] == "sh" and evs[0]["tracee_exe"] == os.path.realpath("/bin/sh"), evs


def test_a_writer_that_exits_at_once_is_still_the_actor(watch, wd):
    f = wd / "then-exit"
    code = f"import os\nopen({str(f)!r}, 'w').write('x')\nos._exit(0)"
    proc = subprocess.Popen([sys.executable, "-c", code])
    proc.wait()
    evs = watch.at(f)
    assert evs and evs[0]["tracee_pid"] == proc.pid
    assert evs[0]["tracee_exe"] == os.path.realpath(sys.executable), evs


def test_the_agents_own_reads_for_hashing_are_not_events(watch, wd):
    big = wd / "big.bin"
    big.write_bytes(os.urandom(3 << 20))
    watch.at(big)
    watch.settled(wd)
    agent_pid = watch.agent.proc.pid
    assert not [e for e in watch.agent.events() if e["tracee_pid"] == agent_pid]


# ------------------------------------------------------------ the baseline

def _ready(agent: Agent) -> str:
    agent.wait_started()
    return agent.wait_ready()


def _fim(agent: Agent) -> list[dict]:
    return [e for e in agent.events() if e["type"] == "fim"]


def _tree(root: Path) -> None:
    (root / "dir").mkdir(parents=True)
    for name in ("keep.txt", "mod.txt", "del.txt", "mode.txt", "dir/inner"):
        (root / name).write_text(name * 10)


def test_changes_made_while_down_are_reported_once_at_the_next_start(start_agent, tmp_path):
    root, state = tmp_path / "tree", tmp_path / "state"
    _tree(root)
    first = start_agent(tmp_path / "a1", "--watch", str(root), "--state-dir", str(state), "--fim-only")
    _ready(first)
    stats = first.stop()
    assert _fim(first) == [], "the first start records the baseline without an event per file"
    assert stats["fim_baseline_recorded"] == 7 and "baseline of" in first.stderr()

    (root / "mod.txt").write_text("changed while down\n")
    (root / "del.txt").unlink()
    (root / "mode.txt").chmod(0o600)
    (root / "new.txt").write_text("new")
    (root / "dir" / "newdir").mkdir()

    second = start_agent(tmp_path / "a2", "--watch", str(root), "--state-dir", str(state), "--fim-only")
    ready = _ready(second)
    got = {(e["action"], e["path"]) for e in second.wait_for(lambda e: e["origin"] == "scan", n=5)}
    second.stop()
    assert "created=2 modified=1 deleted=1 attributes=1" in ready, ready
    assert got == {("created", str(root / "new.txt")), ("created", str(root / "dir" / "newdir")),
                   ("modified", str(root / "mod.txt")), ("deleted", str(root / "del.txt")),
                   ("attributes", str(root / "mode.txt"))}
    scan = [e for e in _fim(second) if e["origin"] == "scan"]
    assert len(scan) == 5, scan
    mod = next(e for e in scan if e["action"] == "modified")
    assert mod["file_hashes"]["sha256"] == sha256(root / "mod.txt") and mod["tracee_pid"] == 0

    third = start_agent(tmp_path / "a3", "--watch", str(root), "--state-dir", str(state), "--fim-only")
    _ready(third)
    third.stop()
    assert _fim(third) == [], "nothing changed since: nothing to report"


def test_the_actor_is_named_by_its_effective_uid_beside_its_real_and_saved_ones(watch, wd):
    open_to_anyone(wd)
    f = wd / "as-1234"
    # (not a shell: sh resets its effective ids to the real ones at start)
    proc = subprocess.Popen(["setpriv", "--euid", "1234", "--egid", "4321", "--clear-groups",
                             sys.executable, "-c", f"open({str(f)!r}, 'w').write('x')"])
    proc.wait()
    evs = watch.at(f)
    assert evs and evs[0]["tracee_pid"] == proc.pid, evs
    e = evs[0]
    assert (e["tracee_uid"], e["tracee_gid"], e["tracee_ruid"]) == (1234, 4321, 0), e
    assert e["file_uid"] == 1234  # the file is owned by whom the process acted as


def test_a_process_that_changes_its_ids_is_named_by_the_ids_each_write_was_made_with(watch, wd):
    open_to_anyone(wd)
    f1, f2 = wd / "as-1234", wd / "as-root"
    code = (f"import os, time\nos.seteuid(1234)\nopen({str(f1)!r}, 'w').write('x')\n"
            f"os.seteuid(0)\nopen({str(f2)!r}, 'w').write('x')\nos.seteuid(1234)\ntime.sleep(0.5)")
    proc = subprocess.Popen([sys.executable, "-c", code])
    proc.wait()
    e1, e2 = watch.at(f1), watch.at(f2)
    assert e1 and e2 and e1[0]["tracee_pid"] == e2[0]["tracee_pid"] == proc.pid, (e1, e2)
    assert (e1[0]["file_uid"], e1[0]["tracee_uid"], e1[0]["tracee_ruid"]) == (1234, 1234, 0), e1
    assert (e2[0]["file_uid"], e2[0]["tracee_uid"], e2[0]["tracee_ruid"]) == (0, 0, 0), e2
