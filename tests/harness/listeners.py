"""Real tracers as processes: a fanotify listener, inotifywait, a counting
inotify reader; each returned once its watch or mark is in place."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
from pathlib import Path

from tests.harness.agent import REPO
from tests.harness.poll import until_still


def program(name: str, *args: str) -> list[str]:
    """argv of a harness program (tests/harness/NAME.py) run as a module: the
    child must start in the repository root (cwd=REPO)."""
    return [sys.executable, "-m", f"tests.harness.{name}", *args]


def start_listener(*args: str) -> subprocess.Popen:
    """`fanotify_listener MODE PATH [options]`, once it printed READY (its
    further lines are on proc.stdout, text)."""
    proc = subprocess.Popen(program("fanotify_listener", *args), cwd=REPO,
                            stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline().strip()
    assert line == "READY", f"fanotify listener said {line!r}"
    return proc


def start_inotifywait(path, log: str | Path | None = None) -> subprocess.Popen:
    """`inotifywait -m PATH` (all events), its event lines to the file log
    (discarded without one), once its watch is established."""
    out = open(log, "wb") if log is not None else subprocess.DEVNULL
    try:
        proc = subprocess.Popen(["inotifywait", "-m", str(path)], stdout=out,
                                stderr=subprocess.PIPE)
    finally:
        if log is not None:
            out.close()  # the child has its own copy
    for line in proc.stderr:
        if b"Watches established" in line:
            return proc
    raise RuntimeError(f"inotifywait did not start on {path}")


def start_inotify_reader(path, pause_ms: int = 0) -> subprocess.Popen:
    """`inotify_reader PATH`: counts every event it reads (see stop_inotify_reader);
    pause_ms after each read makes its reads large."""
    reader = subprocess.Popen(program("inotify_reader", str(path), str(pause_ms)), cwd=REPO,
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "READY"
    return reader


@contextlib.contextmanager
def roomy_inotify_queues(events: int = 1 << 20):
    """inotify instances created meanwhile queue up to `events` (default
    16,384): for tests of the agent's count of a storm a listener read whole,
    not of whether the listener kept up on a busy machine."""
    knob = Path("/proc/sys/fs/inotify/max_queued_events")
    old = knob.read_text().strip()
    knob.write_text(str(events))
    try:
        yield
    finally:
        knob.write_text(old)


def wait_reader_idle(reader: subprocess.Popen, still_s: float = 2.0, timeout: float = 120.0) -> None:
    """Until the reader has read nothing for still_s (its backlog is read),
    by the bytes its read(2) calls returned (/proc/PID/io rchar)."""
    def rchar() -> int:
        with open(f"/proc/{reader.pid}/io") as fh:
            return int(next(line for line in fh if line.startswith("rchar:")).split()[1])
    until_still(rchar, still_s, timeout, interval=0.2)


def stop_inotify_reader(reader: subprocess.Popen, poke: Path) -> tuple[int, int]:
    """Stop the counting reader: (events it read, overflow events among them).
    poke: a path in the watched directory, touched so that its blocked read
    returns and it sees the signal."""
    reader.send_signal(signal.SIGTERM)
    poke.touch()
    words = reader.stdout.readline().split()  # READ <n> OVERFLOW <m>
    reader.wait(30)
    return int(words[1]), int(words[3])


def stop(proc: subprocess.Popen) -> None:
    """SIGTERM, SIGKILL after 10 s."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
