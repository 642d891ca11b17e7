"""The agent on a person's terminal (a real pseudo-terminal): the table's
rows with time, names and the actor, and the live status line redrawn in
place; piped, neither escapes nor the status reach the output. And a run
leaves nothing behind under /lib/modules (bcc's headers are a private view)."""

from __future__ import annotations

import fcntl
import os
import re
import signal
import struct
import subprocess
import termios
import threading
import time

import pytest

from tests.harness.actors import touch
from tests.harness.agent import cli, marked_inodes
from tests.harness.listeners import start_inotifywait, stop

pytestmark = pytest.mark.host

ROW = re.compile(r"(\d\d:\d\d:\d\d\.\d{3}) +(?:\x1b\[\d+m)?inotify(?:\x1b\[0m)? +inotifywait\[(\d+)\] +touch\[(\d+)\] +"
                 r"(IN_[A-Z_|]+) +(\w+) +(\S+)")


class Terminal:
    """A pseudo-terminal of 250 columns; what is written to it, collected."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        fcntl.ioctl(self.slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 250, 0, 0))
        self.data = bytearray()
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self):
        while True:
            try:
                chunk = os.read(self.master, 65536)
            except OSError:  # the other end closed
                return
            if not chunk:
                return
            self.data += chunk

    def text(self) -> str:
        return self.data.decode("utf-8", "replace")

    def wait_for(self, needle: str, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while needle not in self.text():
            if time.monotonic() > deadline:
                raise AssertionError(f"{needle!r} never appeared in: {self.text()[-2000:]!r}")
            time.sleep(0.05)

    def close(self):
        os.close(self.slave)
        self._reader.join(5)
        os.close(self.master)


def _modules_tree() -> set[tuple]:
    out = set()
    for top, dirs, files in os.walk("/lib/modules"):
        for name in dirs + files:
            path = os.path.join(top, name)
            st = os.lstat(path)
            out.add((path, st.st_mode, os.readlink(path) if os.path.islink(path) else ""))
    return out


def _run_agent(tmp_path, stdout, stderr, env_extra=None):
    wdir = tmp_path / "watched"
    wdir.mkdir(exist_ok=True)
    tracer = start_inotifywait(wdir)
    env = {**os.environ, "TERM": "xterm", **(env_extra or {})}
    env.pop("NO_COLOR", None)
    env.pop("COLUMNS", None)  # the terminal says its own width
    agent = subprocess.Popen([*cli(), "run", "-o", "table", "--tracer-pid", str(tracer.pid)],
                             stdout=stdout, stderr=stderr, stdin=subprocess.DEVNULL, env=env)
    return wdir, tracer, agent


def _mirror_ready(agent, wdir, timeout=120):
    ino = os.stat(wdir).st_ino
    deadline = time.monotonic() + timeout
    while ino not in marked_inodes(agent.pid):
        assert agent.poll() is None and time.monotonic() < deadline, "the agent did not mirror the watch"
        time.sleep(0.05)


def test_a_person_sees_rows_by_name_and_a_live_status_line(tmp_path):
    before = _modules_tree()
    term = Terminal()
    wdir, tracer, agent = _run_agent(tmp_path, term.slave, term.slave)
    try:
        _mirror_ready(agent, wdir)
        pid = touch(wdir / "hello")
        term.wait_for(f"touch[{pid}]")
        term.wait_for(" ev/s · emitted ")  # the status line, after the rows it counts
        time.sleep(1.2)  # a refresh or two
    finally:
        agent.send_signal(signal.SIGINT)
        agent.wait(60)
        stop(tracer)
        term.close()
    text = term.text()
    rows = [m.groups() for m in ROW.finditer(text)]
    assert rows, text[-3000:]
    assert {r[3] for r in rows} >= {"IN_CREATE", "IN_CLOSE_WRITE"}
    assert all(r[1] == str(tracer.pid) and r[2] == str(pid) and r[5] == str(wdir / "hello") for r in rows), rows
    assert "\x1b[36minotify\x1b[0m" in text  # coloured on a terminal
    # redrawn in place: carriage return and erase-line before each status
    assert re.search(r"\r\x1b\[Kotel-fsnotify: [\d,]+ ev/s · emitted [\d,]+ · lost 0", text), text[-1500:]
    assert "fanotify_mask" not in text and "FA_MASK" not in text  # no fanotify columns on inotify rows
    # the header and the rows share the table's columns
    header = next(line for line in text.splitlines() if "TIME" in line and "TRACEE" in line)
    assert re.sub(r"\x1b\[[0-9;]*m", "", header).split() == ["TIME", "TYPE", "TRACER", "TRACEE", "EVENT",
                                                             "ATTRIB", "PATH"]
    assert _modules_tree() == before  # nothing created or changed under /lib/modules


def test_piped_the_table_has_no_escapes_and_no_status(tmp_path):
    term = Terminal()  # stderr stays a terminal; stdout is a pipe
    wdir, tracer, agent = _run_agent(tmp_path, subprocess.PIPE, term.slave)
    try:
        _mirror_ready(agent, wdir)
        pid = touch(wdir / "piped")
        time.sleep(2)
    finally:
        agent.send_signal(signal.SIGINT)
        out = agent.communicate(timeout=60)[0].decode()
        stop(tracer)
        term.close()
    assert f"touch[{pid}]" in out and "IN_CLOSE_WRITE" in out
    assert "\x1b[" not in out
    assert "ev/s" not in term.text() and "\x1b[K" not in term.text()
