"""Benchmark of the exact correlator (kprobe and fentry backends), in the VM.

    .venv/bin/python -m benchmarks.bench_exact [--ops 20000] [--rounds 3] [--backends kprobe,fentry]

On the host this boots Debian's 6.1 kernel under qemu (tests/harness/vm.py)
and runs itself inside with --in-vm. One VM boot; an inotify tracer
(tests/harness/inotify_reader.py) watches the loop's directory throughout.
For each backend:
  * a file-operation loop (open+close of the watched file: 2 inotify events
    per op), `--rounds` times without the agent, then with `otel-fsnotify run
    --backend B --output jsonl` attached, then without again: ops/s (wall
    clock) and the loop's own CPU per op, as ratios with/without;
  * end-to-end events/s: events the tracer read during the attached rounds /
    seconds from the first attached round's start until the agent's jsonl
    holds them all, with the agent's CPU per event and its loss counters.
TCG emulation makes absolute figures meaningless for real hardware; the
ratios are against a baseline of the same boot.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from tests.harness import vm
from tests.harness.agent import REPO as ROOT, Agent
from tests.harness.listeners import start_inotify_reader, stop_inotify_reader

# One process per round: (ops/s by the wall clock, CPU microseconds per op of the loop).
LOOP = ("import os,sys,time\np=sys.argv[1];n=int(sys.argv[2])\n"
        "t=time.perf_counter();c=time.thread_time()\n"
        "for _ in range(n): os.close(os.open(p, os.O_RDONLY))\n"
        "print(n/(time.perf_counter()-t), 1e6*(time.thread_time()-c)/n)")
TICK = os.sysconf("SC_CLK_TCK")


def loop(path: str, ops: int) -> tuple[float, float]:
    out = subprocess.run([sys.executable, "-c", LOOP, path, str(ops)], check=True,
                         capture_output=True, text=True).stdout.split()
    return float(out[0]), float(out[1])


def rounds(path: str, ops: int, n: int) -> tuple[float, float]:
    """Median ops/s and median CPU us/op over n rounds."""
    runs = [loop(path, ops) for _ in range(n)]
    return statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as fh:
        fields = fh.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime + stime


def bench_backend(backend: str, work: Path, ops: int, n: int) -> dict:
    target = work / backend / "watched" / "f"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_bytes(b"")
    reader = start_inotify_reader(target.parent)
    loop(str(target), 2000)  # warm caches
    before = rounds(str(target), ops, n)
    # Events before the attach are not the agent's: count the tracer's reads anew.
    stop_inotify_reader(reader, target)
    reader = start_inotify_reader(target.parent)
    agent = Agent(work / backend / "agent", backend=backend, wait=False).wait_started(600)
    cpu0 = cpu_s(agent.proc.pid)
    start = time.monotonic()
    attached = rounds(str(target), ops, n)
    read, _overflows = stop_inotify_reader(reader, target)
    deadline = time.monotonic() + 600
    got = 0
    while time.monotonic() < deadline:
        got = agent.count(reader.pid)
        if got >= read:
            break
        time.sleep(0.5)
    e2e_s = time.monotonic() - start
    agent_cpu = cpu_s(agent.proc.pid) - cpu0
    stats = agent.stop()
    reader = start_inotify_reader(target.parent)
    after = rounds(str(target), ops, n)
    stop_inotify_reader(reader, target)
    base_ops = (before[0] + after[0]) / 2
    base_cpu = (before[1] + after[1]) / 2
    lost = sum(stats.get(k, 0) for k in ("ringbuf_lost", "map_full", "tracee_unmatched"))
    return {
        "ops_s_before": round(before[0]), "ops_s_attached": round(attached[0]),
        "ops_s_after": round(after[0]), "ops_ratio": round(attached[0] / base_ops, 3),
        "cpu_us_op_before": round(before[1], 1), "cpu_us_op_attached": round(attached[1], 1),
        "cpu_us_op_after": round(after[1], 1), "cpu_ratio": round(attached[1] / base_cpu, 3),
        "events_read_by_tracer": read, "events_reported": got, "events_lost_counted": lost,
        "e2e_s": round(e2e_s, 1), "e2e_events_s": round(got / e2e_s),
        "agent_cpu_us_per_event": round(1e6 * agent_cpu / got, 1) if got else None,
        "agent_stats": stats,
    }


def table(results: dict, ops: int, n: int) -> str:
    rows = [
        ("loop ops/s without agent (before)", "ops_s_before"),
        ("loop ops/s with agent", "ops_s_attached"),
        ("loop ops/s without agent (after)", "ops_s_after"),
        ("ratio with/without (ops/s)", "ops_ratio"),
        ("loop CPU us/op without (before)", "cpu_us_op_before"),
        ("loop CPU us/op with agent", "cpu_us_op_attached"),
        ("loop CPU us/op without (after)", "cpu_us_op_after"),
        ("ratio with/without (CPU/op)", "cpu_ratio"),
        ("events read by the tracer", "events_read_by_tracer"),
        ("events reported by the agent", "events_reported"),
        ("events lost (counted)", "events_lost_counted"),
        ("end-to-end seconds", "e2e_s"),
        ("end-to-end events/s", "e2e_events_s"),
        ("agent CPU us/event", "agent_cpu_us_per_event"),
    ]
    names = list(results)
    w = max(len(r[0]) for r in rows)
    out = [f"bench_exact: {ops} open+close per round (2 inotify events/op), median of {n} rounds, "
           f"kernel {os.uname().release}" + (" under qemu TCG" if Path("/tmp/vmresults").is_dir() else ""),
           f"{'':{w}}  " + "  ".join(f"{b:>12}" for b in names)]
    for label, key in rows:
        out.append(f"{label:{w}}  " + "  ".join(f"{results[b].get(key)!s:>12}" for b in names))
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--backends", default="kprobe,fentry")
    ap.add_argument("--in-vm", action="store_true")
    args = ap.parse_args()
    if args.in_vm:
        work = Path("/tmp/bench")
        results = {b: bench_backend(b, work, args.ops, args.rounds) for b in args.backends.split(",")}
        if Path("/tmp/vmresults").is_dir():  # the VM's results share
            Path("/tmp/vmresults/bench.json").write_text(json.dumps(results, indent=1))
        print(table(results, args.ops, args.rounds))
        return 0
    results = os.path.join(vm.CACHE, "bench")
    os.makedirs(results, exist_ok=True)
    # the script travels on the results share (/tmp/vmresults in the guest)
    with open(os.path.join(results, "bench.sh"), "w") as fh:
        fh.write(f"cd {ROOT}\nexport PYTHONDONTWRITEBYTECODE=1 HOME=/root\n"
                 f"{ROOT}/.venv/bin/python -m benchmarks.bench_exact --in-vm --ops {args.ops} "
                 f"--rounds {args.rounds} --backends {args.backends}\n")
    try:
        status = vm.run("/tmp/vmresults/bench.sh", results, 1800)
    except vm.VmError as exc:
        print(f"bench_exact: {exc}", file=sys.stderr)
        return 2
    with open(os.path.join(results, "console.log")) as fh:
        print(fh.read())
    return status


if __name__ == "__main__":
    sys.exit(main())
