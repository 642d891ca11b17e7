"""Real tracees for the host and VM suites, and what every backend must
report for them."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

from tests.harness.listeners import start_listener, stop


def run(*argv: str) -> int:
    """argv to its end (its output discarded); its pid."""
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL)
    proc.wait()
    return proc.pid


def touch(path) -> int:
    """`touch path` to its end; its pid."""
    return run("touch", str(path))


def assert_touch_reported(evs: list[dict], path: Path, attribution: str) -> None:
    """inotifywait, watching path's directory, read `touch path`: each event
    names both programs, the file and the watched directory."""
    for e in evs:
        assert e["type"] == "inotify"
        assert e["tracer_comm"] == "inotifywait" and e["tracee_comm"] == "touch", e
        assert e["tracer_exe"].endswith("/inotifywait")
        assert e["attribution"] == attribution
        assert e["path"] == str(path), e
        assert e["i_ino_dir"] == path.parent.stat().st_ino


@dataclass
class Verdict:
    """A `cat` run under a permission listener, and the verdicts reported."""

    listener: subprocess.Popen
    cat: subprocess.Popen
    stdout: str
    stderr: str
    responses: list[dict]  # fa_resp events of this listener or this cat


def cat_under_verdict(agent, path: Path, mode: str, timeout: float = 30.0) -> Verdict:
    """`cat path` to its end under a fanotify listener in mode (perm-allow,
    perm-deny) on path; the fa_resp events the agent reported for it, read
    while the listener still runs."""
    listener = start_listener(mode, str(path))
    try:
        cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True)
        out, err = cat.communicate(timeout=timeout)
        resp = agent.wait_for(lambda e: e["type"] == "fa_resp" and (
            e["tracer_pid"] == listener.pid or e["tracee_pid"] == cat.pid))
    finally:
        stop(listener)
    return Verdict(listener, cat, out, err, resp)


def blocked_cat(agent, path: Path) -> subprocess.Popen:
    """A cat whose open(2) waits for a verdict (a "stall" listener on path
    never answers), once the agent has seen the listener read its
    permission event."""
    cat = subprocess.Popen(["cat", str(path)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert agent.wait_for(lambda e: e["type"] == "fanotify" and e["tracee_pid"] == cat.pid), \
        "the listener's read of the permission event was not reported"
    assert cat.poll() is None, "cat was not held by the stalled listener"
    return cat


def open_to_anyone(directory: Path) -> None:
    """Let any uid write in directory: 0777, and the test's own 0700
    temporary directories above it made traversable."""
    os.chmod(directory, 0o777)
    for parent in directory.parents:
        if parent in (Path("/tmp"), Path("/")):
            break
        os.chmod(parent, os.stat(parent).st_mode | 0o011)
