"""The kernel memory the agent's BPF maps hold: measured, bounded by
default, and the ring buffer sized by ring_buffer_mib."""

from __future__ import annotations

import os
import re
import subprocess

import pytest

from tests.harness.agent import Agent, cli

pytestmark = [pytest.mark.host,
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")]


def _ring_sizes(pid: int) -> list[int]:
    """max_entries of every ring buffer map pid holds, by the kernel's fdinfo."""
    sizes = {}
    for fd in os.listdir(f"/proc/{pid}/fdinfo"):
        try:
            text = open(f"/proc/{pid}/fdinfo/{fd}").read()
        except OSError:
            continue
        info = dict(line.split(":\t", 1) for line in text.splitlines() if ":\t" in line)
        if info.get("map_type") == "27":
            sizes[info.get("map_id", fd)] = int(info["max_entries"])
    return sorted(sizes.values())


def test_doctor_measures_the_chosen_backends_maps_within_8_mib():
    out = subprocess.run(cli() + ["doctor"], capture_output=True, text=True, timeout=300)
    row = next(line for line in out.stdout.splitlines() if line.startswith("bpf memory"))
    m = re.match(r"bpf memory +ok +([\d.]+) MiB in (\d+) maps for (\w+), of which the ring buffer "
                 r"4\.0 MiB \(ring_buffer_mib = 4", row)
    assert m, row
    assert 4.0 < float(m.group(1)) <= 8.0 and int(m.group(2)) > 1


def test_ring_buffer_mib_sizes_the_ring_and_the_agent_says_so(tmp_path):
    agent = Agent(tmp_path, "--ring-buffer-mib", "2")
    try:
        assert _ring_sizes(agent.proc.pid) == [2 << 20]
        line = next(l for l in agent.stderr().splitlines() if "bpf maps:" in l)
        assert re.search(r"bpf maps: [\d.]+ MiB of kernel memory in \d+ maps \(ring buffer 2\.0 MiB", line), line
    finally:
        agent.stop()
