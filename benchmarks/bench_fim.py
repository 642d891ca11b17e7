"""Watch mode's costs on this host (run as root), each against the coreutils
on the same tree in the same run:

  * first start: the baseline of a generated tree (default 100,000 files of
    1 KiB) recorded and hashed, against `find -type f | xargs sha256sum`;
  * a restart with nothing changed: every file compared by metadata,
    against `find -printf` (one lstat per file);
  * live changes: a writer creating, writing and closing files in the tree
    as fast as it can; the agent's changes/s with hashing, no loss allowed
    (fim_queue_overflows and ring losses must stay 0), and the writer's
    speed against the same loop without the agent;
  * memory: the agent's RSS once ready with the tree's baseline, and again with
    900,000 more baseline entries (a 1,000,000-entry baseline).

    .venv/bin/python -m benchmarks.bench_fim [--files 100000] [--changes 20000]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sqlite3
import subprocess
import tempfile
import time
from pathlib import Path

from otel_fsnotify.fim.baseline import Baseline, FileState
from tests.harness.agent import Agent

FILE_BYTES = 1024
PER_DIR = 1000


def make_tree(root: Path, files: int) -> None:
    blob = os.urandom(FILE_BYTES * 4)
    for i in range(files):
        d = root / f"d{i // PER_DIR:04d}"
        if i % PER_DIR == 0:
            d.mkdir(parents=True)
        off = i % (len(blob) - FILE_BYTES)
        (d / f"f{i:07d}").write_bytes(blob[off: off + FILE_BYTES])


def timed(cmd: str) -> float:
    subprocess.run(["sync"], check=True)
    t0 = time.perf_counter()
    subprocess.run(["sh", "-c", cmd], check=True, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def scan_seconds(agent: Agent) -> float:
    m = re.search(r"fim: (?:baseline of|scan of) .*? in ([0-9.]+) s", agent.stderr())
    if not m:
        raise RuntimeError(f"no scan line from the agent: {agent.stderr()}")
    return float(m.group(1))


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return 0.0


def start(work: Path, root: Path, state: Path) -> Agent:
    agent = Agent(work, "--watch", str(root), "--state-dir", str(state), "--fim-only",
                  patience=600, poll=0.5)
    agent.wait_ready(1800)
    return agent


def writer(d: Path, n: int) -> float:
    """create + write + close n files; ops/s."""
    d.mkdir(exist_ok=True)
    t0 = time.perf_counter()
    for i in range(n):
        fd = os.open(f"{d}/w{i}", os.O_CREAT | os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"change %d\n" % i)
        os.close(fd)
    return n / (time.perf_counter() - t0)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--changes", type=int, default=20_000)
    args = ap.parse_args()
    out: dict[str, object] = {"files": args.files, "file_bytes": FILE_BYTES}
    with tempfile.TemporaryDirectory(dir="/var/tmp", prefix="bench-fim-") as tmp:
        tmp = Path(tmp)
        root, state = tmp / "tree", tmp / "state"
        print(f"generating {args.files} files under {root}...", flush=True)
        make_tree(root, args.files)
        mb = args.files * FILE_BYTES / 1e6

        # 1. first start: record and hash everything
        sha = timed(f"find {root} -type f -print0 | xargs -0 sha256sum")
        agent = start(tmp / "a1", root, state)
        first = scan_seconds(agent)
        out["rss_mb_after_first_scan"] = round(rss_mb(agent.proc.pid), 1)
        agent.stop()
        out["first_scan"] = {"agent_s": first, "sha256sum_s": round(sha, 2),
                             "files_per_s": round(args.files / first), "mb_hashed_per_s": round(mb / first, 1),
                             "time_vs_sha256sum": round(first / sha, 2)}
        print(json.dumps(out["first_scan"]), flush=True)

        # 2. restart, nothing changed: metadata only
        find = timed(f"find {root} -printf '%s %T@ %m %U %G %i\\n'")
        agent = start(tmp / "a2", root, state)
        again = scan_seconds(agent)
        # 3. live changes with hashing, while this agent runs
        live_dir = root / "live"
        t0 = time.perf_counter()
        with_agent = writer(live_dir, args.changes)
        done = agent.wait_for(lambda e: e["type"] == "fim" and e["path"].startswith(f"{live_dir}/w"),
                              n=args.changes, timeout=600)
        seen = time.perf_counter() - t0
        stats = agent.stop()
        out["restart_scan"] = {"agent_s": again, "find_s": round(find, 2),
                               "files_per_s": round(args.files / again), "time_vs_find": round(again / find, 2)}
        print(json.dumps(out["restart_scan"]), flush=True)
        subprocess.run(["rm", "-rf", str(live_dir)], check=True)
        without = writer(tmp / "plain", args.changes)
        lost = {k: stats.get(k, 0) for k in ("fim_queue_overflows", "ringbuf_lost", "fim_path_unresolved")}
        out["live"] = {"changes": args.changes, "reported": len(done), "changes_per_s": round(len(done) / seen),
                       "writer_ops_per_s_with_agent": round(with_agent),
                       "writer_ops_per_s_without": round(without),
                       "writer_speed_vs_without": round(with_agent / without, 2), **lost}
        print(json.dumps(out["live"]), flush=True)

        # 4. memory with a 1,000,000-entry baseline (900,000 entries of a recorded
        # root that is not watched this time: in the database, never scanned)
        b = Baseline(str(state / "baseline.sqlite"))
        fake = FileState(1, 0o100644, 0, 0, 1, 1, {"sha256": "0" * 64})
        with b.batch():
            for i in range(1_000_000 - len(b)):
                b.put(f"/elsewhere/d{i // PER_DIR:04d}/f{i:07d}", fake)
            b.mark_recorded("/elsewhere")
        entries = len(b)
        b.close()
        agent = start(tmp / "a3", root, state)
        big = rss_mb(agent.proc.pid)
        agent.stop()
        with sqlite3.connect(state / "baseline.sqlite") as con:
            pages = con.execute("PRAGMA page_count").fetchone()[0] * con.execute("PRAGMA page_size").fetchone()[0]
        out["memory"] = {"baseline_entries": entries, "baseline_file_mb": round(pages / 1e6, 1),
                         "rss_mb_tree_baseline": out.pop("rss_mb_after_first_scan"),
                         "rss_mb_1m_baseline": round(big, 1)}
        out["memory"]["rss_ratio_1m_vs_tree"] = round(big / out["memory"]["rss_mb_tree_baseline"], 2)
        print(json.dumps(out["memory"]), flush=True)
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
