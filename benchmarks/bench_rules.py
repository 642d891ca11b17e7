"""Cost of the Sigma rules per event, in the agent's process: the shipped
pack (config/rules, 17 rules) plus generated rules of the same shapes
(startswith/endswith/contains lists, all, re, not, 1 of) up to --rules, over
a mix of watch-mode events (created, modified, renamed, deleted) under /etc,
/usr/bin, /home and /var. Baseline in the same run: the same loop passing
each event through unchanged.

    .venv/bin/python -m benchmarks.bench_rules [--rules 50] [--events 200000]
"""

from __future__ import annotations

import argparse
import json
import random
import tempfile
import time
from pathlib import Path

from otel_fsnotify.event import Event
from otel_fsnotify.rules.engine import RuleSet

PACK = Path(__file__).resolve().parents[1] / "config" / "rules"
SHAPES = [
    "sel: {{TargetFilename|startswith: ['/srv/app{i}/', '/opt/app{i}/']}}\n  condition: sel",
    "sel: {{TargetFilename|endswith: ['.conf{i}', '.ini{i}']}}\n  filter: {{Image|endswith: /bin/app{i}}}\n"
    "  condition: sel and not filter",
    "sel: {{TargetFilename|contains|all: ['/etc/', 'secret{i}']}}\n  condition: sel",
    "sel: {{TargetFilename|re: '^/var/lib/app{i}/[a-z]+\\\\.db$'}}\n  condition: sel",
    "s1: {{TargetFilename|contains: 'token{i}'}}\n  s2: {{Image|endswith: ['/curl', '/wget']}}\n"
    "  condition: 1 of s*",
]


def generated(n: int, where: Path) -> None:
    for i in range(n):
        shape = SHAPES[i % len(SHAPES)].format(i=i)
        category = ("file_event", "file_change", "file_rename")[i % 3]
        (where / f"gen{i:03d}.yml").write_text(
            f"title: generated {i}\nid: 00000000-0000-4000-8000-{i:012d}\nlevel: medium\n"
            f"logsource: {{product: linux, category: {category}}}\ndetection:\n  {shape}\n")


def events(n: int) -> list[Event]:
    rnd = random.Random(7)
    dirs = ["/etc", "/etc/cron.d", "/usr/bin", "/home/alice", "/var/lib/app3", "/etc/systemd/system"]
    actions = ["created", "modified", "renamed", "deleted", "attributes"]
    exes = ["/usr/bin/vim", "/usr/bin/dpkg", "/usr/bin/python3.11", "/usr/bin/curl", ""]
    out = []
    for i in range(n):
        d = rnd.choice(dirs)
        out.append(Event(type="fim", action=rnd.choice(actions), path=f"{d}/file{i % 500}.conf",
                         old_path=f"{d}/.tmp{i}", tracee_exe=rnd.choice(exes), tracee_pid=1000 + i % 50,
                         tracee_comm="x", origin="live"))
    return out


def run(apply, evs) -> float:
    t0 = time.perf_counter()
    for ev in evs:
        apply(ev)
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rules", type=int, default=50)
    ap.add_argument("--events", type=int, default=200_000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        extra = Path(tmp) / "generated"
        extra.mkdir()
        shipped = len(list(PACK.glob("*.yml")))
        generated(max(0, args.rules - shipped), extra)
        t0 = time.perf_counter()
        rules = RuleSet.load([str(PACK), str(extra)])
        load_s = time.perf_counter() - t0
    evs = events(args.events)
    base = min(run(lambda e: e, evs) for _ in range(3))
    cost = min(run(rules.apply, evs) for _ in range(3))
    matched = sum(1 for e in evs if rules.apply(e).rules)
    out = {"rules": len(rules.rules), "events": len(evs), "matched_events": matched,
           "load_and_compile_s": round(load_s, 3),
           "us_per_event": round(cost / len(evs) * 1e6, 2),
           "us_per_event_baseline_loop": round(base / len(evs) * 1e6, 3),
           "us_per_event_for_the_rules": round((cost - base) / len(evs) * 1e6, 2),
           "ratio_vs_baseline_loop": round(cost / base, 1)}
    print("RESULT " + json.dumps(out))


if __name__ == "__main__":
    main()
