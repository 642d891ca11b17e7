"""Watch mode on this host's kernel (tracepoint backend): the shared suite
(tests/harness/watch_suite.py), then what only needs one kernel: the
baseline across restarts and a SIGKILL, a forced queue overflow, other
listeners' events beside watch mode, and the records a collector receives.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from tests.harness.agent import Agent
from tests.harness.listeners import start_inotifywait, stop
from tests.harness.watch_suite import *  # noqa: F401,F403 (the suite's tests run here)
from tests.harness.watch_suite import Watch, sha256

pytestmark = pytest.mark.host


@pytest.fixture
def start_agent():
    """Another agent of this host's backend (the suite's restart test)."""
    return lambda workdir, *extra: Agent(workdir, *extra)


@pytest.fixture(scope="module")
def watch(tmp_path_factory):
    base = tmp_path_factory.mktemp("watch")  # under /tmp: this host's root filesystem
    root, outside = base / "root", base / "outside"
    root.mkdir()
    outside.mkdir()
    agent = Agent(base / "agent", "--watch", str(root), "--exclude", "*.swp",
                  "--exclude", "**/cache/**", "--state-dir", str(base / "state"))
    agent.wait_ready()
    yield Watch(agent, root, outside)
    agent.stop()


def _fim(agent: Agent) -> list[dict]:
    return [e for e in agent.events() if e["type"] == "fim"]


def test_a_sigkill_during_the_first_scan_leaves_a_baseline_that_completes(tmp_path):
    root, state = tmp_path / "tree", tmp_path / "state"
    root.mkdir()
    for i in range(400):
        (root / f"f{i:03d}").write_bytes(os.urandom(4096))
    slow = tmp_path / "slow.toml"
    slow.write_text("[fim]\nscan_rate = 400000\n")  # ~4 s of hashing
    first = Agent(tmp_path / "a1", "--config", str(slow), "--watch", str(root),
                  "--state-dir", str(state))
    time.sleep(1.5)
    assert "fim ready" not in first.stderr(), "the scan ended before the kill: slow it down"
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait()
    db = state / "baseline.sqlite"
    with sqlite3.connect(db) as con:
        assert con.execute("PRAGMA integrity_check").fetchone() == ("ok",)
        partial = con.execute("SELECT count(*) FROM files").fetchone()[0]
    assert 0 < partial < 401, partial

    second = Agent(tmp_path / "a2", "--watch", str(root), "--state-dir", str(state))
    second.wait_ready()
    second.stop()
    assert _fim(second) == [], "the interrupted first recording completes without events"
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM files").fetchone()[0] == 401


@pytest.fixture
def tiny_fanotify_queue():
    knob = Path("/proc/sys/fs/fanotify/max_queued_events")
    old = knob.read_text()
    knob.write_text("64\n")  # groups created from now on queue at most 64 events
    yield
    knob.write_text(old)


def test_a_queue_overflow_rescans_and_every_change_is_still_reported_once(tmp_path, tiny_fanotify_queue):
    root = tmp_path / "tree"
    root.mkdir()
    agent = Agent(tmp_path / "agent", "--watch", str(root), "--state-dir", str(tmp_path / "state"),
                  "--fim-only")
    agent.wait_ready()
    os.kill(agent.proc.pid, signal.SIGSTOP)  # the agent stops reading; the queue fills
    try:
        for i in range(300):
            (root / f"burst{i:03d}").write_text(str(i))
    finally:
        os.kill(agent.proc.pid, signal.SIGCONT)
    evs = agent.wait_for(lambda e: e["type"] == "fim" and "burst" in e["path"], n=300, timeout=30)
    stats = agent.stop()
    assert stats["fim_queue_overflows"] >= 1 and stats["fim_rescans"] >= 1, stats
    by_path = {}
    for e in evs:
        by_path.setdefault(e["path"], []).append(e["action"])
    assert len(by_path) == 300 and all(v == ["created"] for v in by_path.values()), by_path
    assert "scan" in {e["origin"] for e in evs}  # what the overflow lost, the rescan found


def test_other_listeners_events_are_still_reported_unless_fim_only(tmp_path):
    root = tmp_path / "tree"
    root.mkdir()
    for extra, expect_inotify in (((), True), (("--fim-only",), False)):
        work = tmp_path / f"agent{len(extra)}"
        agent = Agent(work, "--watch", str(root), "--state-dir", str(work / "state"), *extra)
        agent.wait_ready()
        iw = start_inotifywait(root)
        try:
            if expect_inotify:
                agent.wait_marked(root)
            else:
                time.sleep(1)
            subprocess.run(["touch", str(root / f"both{len(extra)}")], check=True)
            fim = agent.wait_for(lambda e: e["type"] == "fim" and e["name"] == f"both{len(extra)}")
            ino = agent.wait_for(lambda e: e["type"] == "inotify" and e["tracer_pid"] == iw.pid,
                                 n=4, timeout=5 if expect_inotify else 1)
        finally:
            stop(iw)
            agent.stop()
        assert fim and fim[0]["action"] == "created"
        assert bool(ino) == expect_inotify, (extra, ino)


def test_watch_mode_records_reach_the_collector_with_file_attributes(tmp_path, rotel):
    root = tmp_path / "tree"
    root.mkdir()
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'[fim]\npaths = [{{ path = "{root}", tags = ["pci", "app"], severity = "warn" }}]\n'
                   'hash = ["sha256", "md5"]\n')
    work = tmp_path / "agent"
    agent = Agent(work, "--config", str(cfg), "--fim-only", "--state-dir", str(work / "state"),
                  "--endpoint", rotel.http_endpoint, "--protocol", "http/protobuf",
                  "--spool-dir", str(work / "spool"), output="otlp")
    agent.wait_ready()
    f = root / "card.db"
    proc = subprocess.Popen(["sh", "-c", f"echo 4111 > {f}"])
    proc.wait()
    time.sleep(1.5)
    agent.stop()
    recs = [r for r in rotel.wait_for_records(1, timeout=20) if r.event_name == "fsnotify.fim"]
    assert len(recs) == 1, recs
    a = recs[0].attributes
    st = f.stat()
    assert a["file.path"] == str(f) and a["file.name"] == "card.db" and a["file.directory"] == str(root)
    assert a["file.hash.sha256"] == sha256(f)
    assert a["file.hash.md5"] == subprocess.run(["md5sum", str(f)], capture_output=True,
                                                text=True).stdout.split()[0]
    assert a["file.size"] == st.st_size and a["file.inode"] == str(st.st_ino)
    assert a["file.mode"] == "0644" and a["file.owner.id"] == str(st.st_uid)
    assert a["fsnotify.action"] == "created" and a["fsnotify.origin"] == "live"
    assert a["fsnotify.tags"] == ["pci", "app"]
    assert a["process.pid"] == proc.pid and a["process.command"] == "sh"
    assert a["process.executable.name"] == os.path.basename(os.path.realpath("/bin/sh"))
    assert recs[0].severity_number == 13
