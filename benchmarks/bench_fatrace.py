"""The agent's watch mode against fatrace (Debian's `fatrace`, the tool the
seed-003 study used), same machine, same run, same load (run as root).

The load is the study's: 300 processes doing file work at once, each
creating, writing, closing and deleting its own files in one directory.
fatrace runs system-wide (it has no narrower scope than a mount) and the
agent runs `--watch DIR --fim-only`; both start before the load and stop
after it, and each one's CPU (user+sys from /proc/<pid>/stat) is measured
over the same stretch.

What each captured is counted as changes: (path, created | modified |
deleted) of the load's files; fatrace's `+` is a creation, `W` a write,
`D` a deletion. The goal (issue #14): every file fatrace saw a change of is
one the agent reported, and the agent used less CPU than fatrace.

    .venv/bin/python -m benchmarks.bench_fatrace [--procs 300] [--files 20]
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_tracepoint import cpu_s
from tests.harness.agent import Agent

FATRACE_CHANGES = {"+": "created", "W": "modified", "D": "deleted"}
# fatrace: "comm(pid): TYPES /path" (TYPES: letters and symbols, e.g. "CW", "+", "D")
FATRACE_LINE = re.compile(r"^.*?\(\d+\): ([A-Z+<>]+) +(/.*)$")


def load(d: Path, procs: int, files: int) -> float:
    """procs forked processes, each creating, writing, closing and deleting
    `files` files of its own at once; the seconds it took."""
    t0 = time.perf_counter()
    pids = []
    for p in range(procs):
        pid = os.fork()
        if pid == 0:
            try:
                for i in range(files):
                    path = f"{d}/p{p}-f{i}"
                    fd = os.open(path, os.O_CREAT | os.O_WRONLY, 0o644)
                    os.write(fd, b"x" * 100)
                    os.close(fd)
                    os.unlink(path)
            finally:
                os._exit(0)
        pids.append(pid)
    for pid in pids:
        os.waitpid(pid, 0)
    return time.perf_counter() - t0


def fatrace_changes(log: Path, d: Path) -> set[tuple[str, str]]:
    out = set()
    prefix = f"{d}/"
    for line in log.read_text(errors="replace").splitlines():
        m = FATRACE_LINE.match(line)
        if not m:
            continue
        path = m.group(2).removesuffix(" (deleted)")  # written through an fd of a deleted file
        if not path.startswith(prefix):
            continue
        for letter, change in FATRACE_CHANGES.items():
            if letter in m.group(1):
                out.add((path, change))
    return out


def agent_changes(agent: Agent, d: Path) -> set[tuple[str, str]]:
    prefix = f"{d}/"
    return {(e["path"], e["action"]) for e in agent.events()
            if e.get("type") == "fim" and e["path"].startswith(prefix)
            and e["action"] in ("created", "modified", "deleted")}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--procs", type=int, default=300)
    ap.add_argument("--files", type=int, default=20, help="files each process creates and deletes")
    args = ap.parse_args()
    if not shutil.which("fatrace"):
        sys.exit("bench_fatrace: fatrace is not installed (./install.sh --test installs it)")
    work = Path(tempfile.mkdtemp(prefix="bench-fatrace-"))
    d = work / "load"
    d.mkdir()
    agent = Agent(work / "agent", "--watch", str(d), "--fim-only")
    agent.wait_ready()
    log = work / "fatrace.log"
    fat = subprocess.Popen(["fatrace", "-o", str(log)], stderr=subprocess.PIPE, text=True)
    time.sleep(1)  # fatrace has no ready signal: give it its marks
    a0, f0 = cpu_s(agent.proc.pid), cpu_s(fat.pid)
    seconds = load(d, args.procs, args.files)
    time.sleep(2)  # both drain what is queued
    a1, f1 = cpu_s(agent.proc.pid), cpu_s(fat.pid)
    fat.terminate()
    fat_err = fat.communicate(timeout=10)[1]
    stats = agent.stop()
    seen_fat = fatrace_changes(log, d)
    seen_agent = agent_changes(agent, d)
    expected = args.procs * args.files * 3
    # a file fatrace saw anything of (a write through an fd of a file since
    # deleted it names with its path) must be one the agent reported
    missed = {p for p, _c in seen_fat} - {p for p, _c in seen_agent}
    span = seconds + 2
    print(f"\n{args.procs} processes x {args.files} files (create+write+close+unlink) in one "
          f"directory, {seconds:.1f} s; {expected:,} changes made; CPU over the same {span:.1f} s\n")
    print(f"{'tool':34} {'CPU s':>7} {'CPU %':>6} {'changes seen':>13} {'of made':>8} "
          f"{'created':>8} {'modified':>9} {'deleted':>8}")
    for name, cpu, seen in (("fatrace (system-wide)", f1 - f0, seen_fat),
                            ("otel-fsnotify --watch --fim-only", a1 - a0, seen_agent)):
        kinds = [sum(1 for _p, c in seen if c == k) for k in ("created", "modified", "deleted")]
        print(f"{name:34} {cpu:7.2f} {100 * cpu / span:5.1f}% {len(seen):13,} {len(seen) / expected:8.1%} "
              f"{kinds[0]:8,} {kinds[1]:9,} {kinds[2]:8,}")
    errors = [line for line in fat_err.splitlines() if line.strip()]
    print(f"\nfatrace errors: {len(errors)} lines" + (f" (e.g. {errors[0]!r})" if errors else ""))
    print(f"files fatrace saw a change of that the agent did not report: {len(missed)}"
          + (f" (e.g. {sorted(missed)[:3]})" if missed else ""))
    lost = {k: v for k, v in stats.items() if v and any(
        s in k for s in ("lost", "overflow", "dropped", "unmatched"))}
    print(f"agent losses: {lost or 'none'}")
    goal = not missed and a1 - a0 < f1 - f0
    print(f"goal (every file fatrace saw, less CPU than fatrace): {'met' if goal else 'NOT met'}")
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
