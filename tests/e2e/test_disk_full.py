"""A full disk is an expected state: the spool on a real 2 MiB tmpfs (mounted
here, as root), the collector away, then back. Every event is delivered or
counted in dropped_spool_full, nothing else; the spool drains as soon as the
collector returns (acknowledging needs no free space), and an agent
restarted on the full disk starts and delivers."""

from __future__ import annotations

import logging
import os
import subprocess
from collections import Counter

import pytest

from otel_fsnotify.delivery.settings import OtlpSettings
from otel_fsnotify.delivery.shipper import Shipper
from otel_fsnotify.otel.resource import build_resource
from tests.e2e.captures import sample_events
from tests.harness.collector import Rotel

pytestmark = [pytest.mark.e2e,
              pytest.mark.skipif(os.geteuid() != 0, reason="mounts a tmpfs (root)")]


@pytest.fixture
def small_disk(tmp_path):
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(disk)], check=True)
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _shipper(endpoint: str, spool_dir) -> Shipper:
    s = OtlpSettings.from_env({}, protocol="http/json", endpoint=endpoint, spool_dir=str(spool_dir),
                              batch_size=256, batch_linger=0.01, max_backoff=0.5)
    return Shipper(s, build_resource("tracepoint"), logging.getLogger("test.disk"))


def _submit(shipper: Shipper, n: int) -> None:
    for ev in sample_events(n):
        shipper.submit(ev)  # never raises: what the disk refuses is counted


def test_full_disk_drops_are_counted_and_the_spool_drains_when_the_collector_returns(small_disk, tmp_path):
    rotel = Rotel(tmp_path / "rotel")  # ports chosen, not started: the collector is away
    shipper = _shipper(rotel.http_endpoint, small_disk / "spool")
    _submit(shipper, 8000)  # ~4.5 MB of frames for a 2 MiB disk
    c = shipper.counters()
    assert c["dropped_spool_full"] > 0 and c["spooled"] > 1000
    assert c["spooled"] + c["dropped_spool_full"] == c["submitted"] == 8000
    rotel.start()
    try:
        assert shipper.flush(60), shipper.counters()
        _submit(shipper, 1000)  # the drained disk takes events again
        assert shipper.close(60)
        c = shipper.counters()
        assert c["delivered"] == c["spooled"] and c["spool_corrupt_events"] == 0
        assert c["dropped_spool_full"] < 8000 - 1000
        rotel.wait_for_uids(c["delivered"], 30)
        got = Counter(rotel.uids())
        assert len(got) == c["delivered"]
        # duplicates: at most the batches in flight (256 each) when the collector came back
        assert sum(got.values()) - len(got) <= 256 * shipper.settings.max_in_flight
    finally:
        rotel.stop()


def test_a_batch_on_a_full_disk_keeps_the_frames_that_fit_and_counts_the_rest(small_disk, tmp_path):
    """One write for a whole poll's events: where the disk takes only part,
    the part that fits is kept (frame by frame, none torn), the rest counted."""
    from otel_fsnotify.delivery.spool import Spool, decode_entry

    rotel = Rotel(tmp_path / "rotel")  # away: nothing drains
    shipper = _shipper(rotel.http_endpoint, small_disk / "spool")
    events = list(sample_events(8000))
    for i in range(0, len(events), 1000):
        shipper.submit_many(events[i:i + 1000])
    c = shipper.counters()
    assert c["dropped_spool_full"] > 0 and c["spooled"] > 1000
    assert c["spooled"] + c["dropped_spool_full"] == c["submitted"] == 8000
    shipper.close(0)
    spool = Spool(str(small_disk / "spool"), 1 << 30, 4 << 20)
    try:
        assert spool.recovered == c["spooled"] and spool.corrupt_events == 0
        payloads, _pos, lost = spool.read(10_000)
        assert lost == 0 and len(payloads) == c["spooled"]
        uids = [decode_entry(p).uid for p in payloads]
        assert uids == sorted(uids) and len(set(uids)) == len(uids)  # in order, none twice
    finally:
        spool.close()


def test_an_agent_restarted_on_a_full_disk_starts_and_delivers(small_disk, tmp_path):
    rotel = Rotel(tmp_path / "rotel")
    shipper = _shipper(rotel.http_endpoint, small_disk / "spool")
    _submit(shipper, 8000)
    spooled = shipper.counters()["spooled"]
    assert shipper.counters()["dropped_spool_full"] > 0
    shipper.close(0)  # the collector never came: everything stays in the spool
    shipper = _shipper(rotel.http_endpoint, small_disk / "spool")  # no space, still starts
    assert shipper.counters()["recovered"] == spooled
    rotel.start()
    try:
        assert shipper.close(60)
        assert shipper.counters()["delivered"] == spooled
        assert len(rotel.wait_for_uids(spooled, 30)) == spooled
    finally:
        rotel.stop()


def test_events_lost_to_a_damaged_spool_are_counted_and_replay_exits_1(rotel, tmp_path):
    """A spool left with one damaged frame: replay sends every other event,
    names the loss in its summary and exits 1."""
    from otel_fsnotify.delivery.spool import SEGMENT_MAGIC, Spool, encode_entry
    from otel_fsnotify.otel.entry import LogEntry
    from tests.e2e.captures import write_capture
    from tests.e2e.test_delivery import replay

    spool_dir = tmp_path / "spool"
    sp = Spool(str(spool_dir), 1 << 20, 1 << 20)
    frames = [encode_entry(LogEntry(f"old-{i}", 1, ev)) for i, ev in enumerate(sample_events(10))]
    for f in frames:
        sp.append(f)
    sp.close()
    seg = sorted(p for p in spool_dir.iterdir() if p.suffix == ".seg")[-1]
    data = bytearray(seg.read_bytes())
    data[len(SEGMENT_MAGIC) + len(frames[0]) + len(frames[1]) + 30] ^= 0xFF  # inside frame 2
    seg.write_bytes(bytes(data))
    cap = write_capture(tmp_path / "cap.jsonl", 5)
    p = replay(cap, "http/json", rotel.http_endpoint, spool_dir, "--no-progress")
    assert p.returncode == 1, p.stderr
    assert "damaged in the spool 1" in p.stderr and "delivered 14 events" in p.stderr
    uids = rotel.wait_for_uids(14, 20)
    assert {f"old-{i}" for i in range(10) if i != 2} <= uids and "old-2" not in uids
