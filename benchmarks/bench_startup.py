"""How long the agent takes to start, and how much memory that takes (run
as root): the BPF compile is most of both.

The agent (`run --backend tracepoint --output jsonl`, no listeners needed)
is started --runs times; each time the wall time until it says `backend
tracepoint started`, its peak RSS so far (VmHWM, the compile included) and
its RSS once started (VmRSS) are read. The baseline, in the same session:
the smallest bcc program there is (one empty tracepoint handler) compiled
and attached by a bare Python (the same headers), the floor any bcc tool
pays. A compiled object cached between starts is not an option with bcc
0.26: its Python API loads programs only from C source. Medians, and
the agent's as a ratio of the baseline's.

    .venv/bin/python -m benchmarks.bench_startup [--runs 3]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.bench_memory import status_mb
from tests.harness.agent import REPO, cli

STARTED = b"backend tracepoint started"
# bcc finds its headers the way the agent does (kernel/bcc.py: the running
# kernel's, or a Debian tree through a private view), so both compile alike
MINIMAL = r"""
import sys
from otel_fsnotify.kernel.bcc import import_bcc
b = import_bcc().BPF(text="TRACEPOINT_PROBE(syscalls, sys_enter_getpid) { return 0; }")
print("loaded", flush=True)
sys.stdin.read()
"""


def _peaks(pid: int) -> tuple[float, float]:
    return status_mb(pid, "VmHWM"), status_mb(pid, "VmRSS")


def baseline() -> tuple[float, float, float]:
    """(seconds to a loaded program, peak MB, MB after) of the minimal bcc program."""
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-c", MINIMAL], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            cwd=REPO)
    if proc.stdout.readline() != b"loaded\n":
        sys.exit("the minimal bcc program did not load (see above)")
    took = time.monotonic() - start
    peak, rss = _peaks(proc.pid)
    proc.communicate(b"")
    return took, peak, rss


def agent(workdir: Path) -> tuple[float, float, float]:
    """(seconds to `started`, peak MB, MB once started) of the agent."""
    err = workdir / "agent.err"
    with open(err, "wb") as fh:
        start = time.monotonic()
        proc = subprocess.Popen([*cli(), "run", "--backend", "tracepoint", "--output", "jsonl",
                                 "--output-file", str(workdir / "events.jsonl"), "--stats-interval", "0"],
                                stdout=subprocess.DEVNULL, stderr=fh)
        try:
            while STARTED not in err.read_bytes():
                if proc.poll() is not None:
                    sys.exit(f"the agent exited: {err.read_text()[-800:]}")
                time.sleep(0.01)
            took = time.monotonic() - start
            time.sleep(1.0)  # the compiler's memory is given back just after `started`
            peak, rss = _peaks(proc.pid)
        finally:
            proc.terminate()
            proc.wait(60)
    return took, peak, rss


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=3)
    args = ap.parse_args(argv)
    base, ours = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.runs):  # interleaved: the machine's noise falls on both
            base.append(baseline())
            ours.append(agent(Path(tmp)))
            print(f"run {i + 1}: minimal bcc {base[-1][0]:.2f} s {base[-1][1]:.0f} MB peak; "
                  f"agent {ours[-1][0]:.2f} s {ours[-1][1]:.0f} MB peak, {ours[-1][2]:.0f} MB once started",
                  file=sys.stderr)
    med = lambda rows, k: statistics.median(r[k] for r in rows)  # noqa: E731
    print(f"\n{'':<32}{'minimal bcc':>12}{'agent':>10}{'ratio':>8}")
    for k, label, unit in ((0, "start-up, compile included", "s"), (1, "peak RSS", "MB"),
                           (2, "RSS once started", "MB")):
        b, a = med(base, k), med(ours, k)
        print(f"{label + ' (' + unit + ')':<32}{b:>12.2f}{a:>10.2f}{a / b:>7.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
