"""The agent's memory through a storm with the collector down, and through
the drain once it is back (run as root).

The tracepoint backend with `--output otlp` to a collector that is not
there yet: an inotifywait and a fanotify listener watch a directory where a
loop creates, writes, closes and deletes files until the agent has emitted
--events events (default 1,000,000), which all go to the spool. Then rotel
starts and the spool drains. The agent's RSS is sampled all along
(/proc/<pid>/status VmRSS, 5 per second) and its peak (VmHWM) read at the
end; the figure to compare with is its RSS once started, before the first
event, in the same run. The goal (issue #14): at most 150 MB throughout.

    .venv/bin/python -m benchmarks.bench_memory [--events 1000000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
import tempfile
import threading
import time
from pathlib import Path

from tests.harness.agent import Agent
from tests.harness.collector import Rotel
from tests.harness.listeners import start_inotifywait, start_listener, stop

GOAL_MB = 150


def status_mb(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return 0.0


class Sampler(threading.Thread):
    """The agent's RSS, 5 times a second, tagged with the phase."""

    def __init__(self, pid: int):
        super().__init__(daemon=True)
        self.pid = pid
        self.phase = "idle"
        self.peaks: dict[str, float] = {}
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.wait(0.2):
            try:
                mb = status_mb(self.pid, "VmRSS")
            except OSError:
                return
            self.peaks[self.phase] = max(self.peaks.get(self.phase, 0.0), mb)


def last_stats(agent: Agent) -> dict:
    found = re.findall(r"stats (\{.*\})", agent.stderr())
    return json.loads(found[-1]) if found else {}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=1_000_000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="bench-memory-"))
    d = work / "w"
    d.mkdir()
    rotel = Rotel(work / "rotel", metrics=False, debug_log=False)  # ports chosen, not started
    iw = start_inotifywait(d)
    fan = start_listener("notify", str(d), "--quiet")
    agent = Agent(work / "agent", "--endpoint", rotel.http_endpoint, "--protocol", "http/protobuf",
                  "--spool-dir", str(work / "spool"), "--stats-interval", "1", output="otlp")
    try:
        time.sleep(1)
        started_mb = status_mb(agent.proc.pid, "VmRSS")
        sampler = Sampler(agent.proc.pid)
        sampler.start()
        sampler.phase = "storm"
        t0 = time.monotonic()
        i = 0
        while True:
            for _ in range(5000):
                p = f"{d}/s{i}"
                fd = os.open(p, os.O_CREAT | os.O_WRONLY)
                os.write(fd, b"x")
                os.close(fd)
                os.unlink(p)
                i += 1
            if last_stats(agent).get("emitted", 0) >= args.events:
                break
        storm_s = time.monotonic() - t0
        time.sleep(2)
        spooled = last_stats(agent)
        sampler.phase = "drain"
        rotel.start()
        t1 = time.monotonic()
        while time.monotonic() - t1 < 600:
            time.sleep(1)
            s = last_stats(agent)
            if s.get("spool_pending", 1) == 0 and s.get("delivered", 0) >= spooled.get("spooled", 0):
                break
        drain_s = time.monotonic() - t1
        hwm = status_mb(agent.proc.pid, "VmHWM")
        sampler.done.set()
        stats = agent.stop()
    finally:
        stop(iw)
        stop(fan)
        rotel.stop()
    lost = {k: v for k, v in stats.items() if v and any(
        s in k for s in ("lost", "dropped", "overflow", "unmatched", "unresolved", "rejected"))}
    print("\nagent RSS through a storm with the collector down, then the drain "
          "(tracepoint backend, --output otlp, http/protobuf)\n")
    print(f"{'phase':44} {'RSS MB':>8} {'x started':>10}")
    print(f"{'started (BPF compiled, before any event)':44} {started_mb:8.0f} {1.0:10.2f}")
    print(f"{'storm: ' + format(stats.get('emitted', 0), ',') + ' events in ' + format(storm_s, '.0f') + ' s (peak)':44} "
          f"{sampler.peaks.get('storm', 0):8.0f} {sampler.peaks.get('storm', 0) / started_mb:10.2f}")
    print(f"{'drain: ' + format(stats.get('delivered', 0), ',') + ' delivered in ' + format(drain_s, '.0f') + ' s (peak)':44} "
          f"{sampler.peaks.get('drain', 0):8.0f} {sampler.peaks.get('drain', 0) / started_mb:10.2f}")
    print(f"{'high-water mark (VmHWM, start-up included)':44} {hwm:8.0f} {hwm / started_mb:10.2f}")
    print(f"\nevents emitted {stats.get('emitted', 0):,}, spooled {stats.get('spooled', 0):,}, "
          f"delivered {stats.get('delivered', 0):,}; losses: {lost or 'none'}")
    peak = max(sampler.peaks.get("storm", 0), sampler.peaks.get("drain", 0))
    print(f"goal (RSS <= {GOAL_MB} MB through storm and drain): {'met' if peak <= GOAL_MB else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
