#!/usr/bin/env python3
"""Benchmark of the exact correlator (kprobe and fentry backends), in the VM.

    .venv/bin/python benchmarks/bench_exact.py [--ops N]

On the host this boots Debian's 6.1 kernel under qemu (tests/vm/vm.py) and
runs itself inside with --in-vm. For each backend, in the same VM boot:
  * a file-operation loop (open+close of a file watched by an inotify tracer)
    measured without the agent, then with the agent attached: ops/s and ratio;
  * end-to-end events/s: events the tracer read / time until the agent's jsonl
    holds them all.
Figures are ratios against a baseline of the same run (TCG makes absolute
numbers meaningless for real hardware).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "vm"))
sys.path.insert(0, str(ROOT / "tests" / "vm" / "guest"))

LOOP = "import os,sys,time\np=sys.argv[1];n=int(sys.argv[2])\nt=time.perf_counter()\n" \
       "for _ in range(n): os.close(os.open(p, os.O_RDONLY))\nprint(time.perf_counter()-t)"


def loop(path: str, ops: int) -> float:
    out = subprocess.run([sys.executable, "-c", LOOP, path, str(ops)], check=True,
                         capture_output=True, text=True).stdout
    return ops / float(out)


def in_vm(ops: int, backends: list[str]) -> dict:
    from conftest import Agent  # the guest suite's agent runner
    results = {}
    work = Path("/tmp/bench")
    work.mkdir(exist_ok=True)
    target = work / "watched" / "f"
    target.parent.mkdir(exist_ok=True)
    target.write_bytes(b"")
    reader = subprocess.Popen([sys.executable, str(ROOT / "tests/vm/guest/inotify_reader.py"),
                               str(target.parent)], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "READY"
    loop(str(target), 2000)  # warm caches
    for backend in backends:
        base = [loop(str(target), ops) for _ in range(2)]
        agent = Agent(backend, work / backend).wait_started(600)
        start = time.monotonic()
        attached = [loop(str(target), ops) for _ in range(2)]
        expected = 4 * ops
        needle = f'"tracer_pid":{reader.pid},'.encode()
        deadline = time.monotonic() + 300
        got = 0
        while time.monotonic() < deadline:
            got = agent.out.read_bytes().count(needle) if agent.out.exists() else 0
            if got >= expected:
                break
            time.sleep(0.5)
        e2e_s = time.monotonic() - start
        stats = agent.stop()
        b, a = max(base), max(attached)
        results[backend] = {
            "ops_per_s_without_agent": round(b), "ops_per_s_with_agent": round(a),
            "ratio_with_over_without": round(a / b, 3),
            "events_expected": expected, "events_reported": got,
            "end_to_end_events_per_s": round(got / e2e_s), "agent_stats": stats,
        }
    reader.send_signal(signal.SIGTERM)
    target.touch()
    reader.wait(30)
    return results


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ops", type=int, default=20000)
    ap.add_argument("--backends", default="kprobe,fentry")
    ap.add_argument("--in-vm", action="store_true")
    args = ap.parse_args()
    if args.in_vm:
        res = in_vm(args.ops, args.backends.split(","))
        Path("/tmp/vmresults/bench.json").write_text(json.dumps(res, indent=1))
        print(json.dumps(res, indent=1))
        return 0
    import vm
    results = os.path.join(vm.CACHE, "bench")
    os.makedirs(results, exist_ok=True)
    script = os.path.join(vm.CACHE, "bench.sh")
    with open(script, "w") as fh:
        fh.write(f"cd {ROOT}\nexport PYTHONDONTWRITEBYTECODE=1 HOME=/root\n"
                 f"{ROOT}/.venv/bin/python {ROOT}/benchmarks/bench_exact.py --in-vm --ops {args.ops} "
                 f"--backends {args.backends}\n")
    status = vm.run(script, results, 1800)
    with open(os.path.join(results, "console.log")) as fh:
        print(fh.read())
    return status


if __name__ == "__main__":
    sys.exit(main())
