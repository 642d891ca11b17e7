"""Cost of the tracepoint backend on this host (run as root).

Same run, same watched directory (an inotifywait and a fanotify listener
attached throughout): a file-operation loop's ops/s without the agent
(baseline), then with `otel-fsnotify run --backend tracepoint --output jsonl`
attached; and the agent's CPU (user+sys from /proc/<pid>/stat) while it
processed the loop's events. Prints ratios against the baseline.

    .venv/bin/python benchmarks/bench_tracepoint.py [--ops 20000] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.host.agent_proc import Agent, start_inotifywait, start_listener, stop  # noqa: E402

TICK = os.sysconf("SC_CLK_TCK")


def loop(d: Path, ops: int) -> float:
    """ops/s of create+write+close+unlink in d (each op is 4 syscalls, ~5 events)."""
    t0 = time.perf_counter()
    for i in range(ops):
        p = f"{d}/b{i}"
        fd = os.open(p, os.O_CREAT | os.O_WRONLY)
        os.write(fd, b"x")
        os.close(fd)
        os.unlink(p)
    return ops / (time.perf_counter() - t0)


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        d = work / "watched"
        d.mkdir()
        iw = start_inotifywait(str(d), Path(os.devnull))
        fan = start_listener("notify", str(d), "--quiet")
        try:
            loop(d, 2000)  # warm-up
            base = max(loop(d, args.ops) for _ in range(args.rounds))
            agent = Agent(work)
            time.sleep(1)
            c0 = cpu_s(agent.proc.pid)
            t0 = time.monotonic()
            with_agent = max(loop(d, args.ops) for _ in range(args.rounds))
            time.sleep(2)  # let the agent drain
            wall = time.monotonic() - t0
            cpu = cpu_s(agent.proc.pid) - c0
            stats = agent.stop()
            emitted = stats.get("emitted", 0)
        finally:
            stop(iw)
            stop(fan)
    print(f"file-op loop, {args.ops} ops x {args.rounds} rounds (best), inotifywait + fanotify listener attached")
    print(f"  baseline (no agent):      {base:10.0f} ops/s")
    print(f"  with tracepoint backend:  {with_agent:10.0f} ops/s   ratio {with_agent / base:.3f} "
          f"(slowdown {100 * (1 - with_agent / base):.1f}%)")
    print(f"  agent CPU: {cpu:.2f} s user+sys over {wall:.1f} s wall for {emitted} events "
          f"({1e6 * cpu / max(emitted, 1):.1f} us/event)")
    lost = {k: v for k, v in stats.items() if k in ("ringbuf_lost", "read_truncated", "pending_map_full",
                                                     "mirror_overflow", "inotify_unmatched") and v}
    print(f"  losses/unmatched: {lost or 'none'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
