"""The on-disk spool and the sender thread, on a real spool directory (and a
real rotel collector where delivery is part of the behaviour)."""

from __future__ import annotations

import logging
import os

import msgspec
import pytest

from otel_fsnotify.delivery.settings import OtlpSettings, SettingsError
from otel_fsnotify.delivery.shipper import Shipper
from otel_fsnotify.delivery.spool import Spool, SpoolBusy, SpoolEntry, encode_entry
from otel_fsnotify.otel_map import build_resource
from tests.e2e.captures import sample_events

pytestmark = pytest.mark.e2e


def _frames(n: int) -> list[bytes]:
    return [encode_entry(SpoolEntry(f"uid-{i}", 1, ev)) for i, ev in enumerate(sample_events(n))]


def test_spool_with_big_segments_accepts_again_once_everything_is_acked(tmp_path):
    """A 64 KiB spool with 4 MiB segments: the write segment is never full, so
    only reclaiming it once acknowledged makes room again."""
    spool = Spool(str(tmp_path / "spool"), max_bytes=64 * 1024, segment_bytes=4 << 20)
    frames = _frames(3000)
    accepted = 0
    for round_ in range(5):  # fill, drain, fill again... several times the spool's size
        took = 0
        while accepted < len(frames) and spool.append(frames[accepted]):
            accepted += 1
            took += 1
        assert took > 50, f"round {round_}: only {took} frames accepted into an empty spool"
        assert spool.total_bytes <= 64 * 1024
        while spool.pending:
            payloads, pos = spool.read(1000)
            spool.ack(pos, len(payloads))
        assert spool.pending == 0
    assert accepted > 5 * 50
    segs = [n for n in os.listdir(tmp_path / "spool") if n.endswith(".seg")]
    assert len(segs) <= 2  # acknowledged segments are deleted, not left behind
    spool.close()


def test_small_spool_with_default_segments_delivers_everything(rotel, tmp_path):
    """spool_max_bytes at its minimum and the default segment size: a stream
    many times the spool's size goes through as long as the collector keeps up."""
    s = OtlpSettings.from_env({}, protocol="http/json", endpoint=rotel.http_endpoint,
                              spool_dir=str(tmp_path / "spool"), spool_max_bytes=65536,
                              batch_linger=0.01)
    assert s.spool_segment_bytes == 65536 // 4  # the default follows the small spool
    shipper = Shipper(s, build_resource("tracepoint"), logging.getLogger("test"))
    n = 0
    for chunk in range(20):  # ~570-byte frames: 50 of them are under half the spool
        for ev in sample_events(50):
            assert shipper.submit(ev), (chunk, shipper.counters())
            n += 1
        assert shipper.flush(20), shipper.counters()
    assert shipper.close(10)
    c = shipper.counters()
    assert c["delivered"] == n == 1000 and c["dropped_spool_full"] == 0
    assert len(rotel.wait_for_uids(n, 30)) == n


def test_segment_larger_than_a_quarter_of_the_spool_is_refused():
    with pytest.raises(SettingsError, match="otlp.spool_segment_bytes: must be <= spool_max_bytes/4"):
        OtlpSettings.from_env({}, spool_max_bytes=65536, spool_segment_bytes=32768)


def test_spool_held_by_another_process_is_a_runtime_error(tmp_path):
    first = Spool(str(tmp_path / "spool"), 1 << 20, 1 << 16)
    try:
        with pytest.raises(SpoolBusy) as info:
            Spool(str(tmp_path / "spool"), 1 << 20, 1 << 16)
        assert isinstance(info.value, RuntimeError) and not isinstance(info.value, ValueError)
    finally:
        first.close()


def test_replay_into_a_spool_held_by_another_process_exits_1(tmp_path):
    from otel_fsnotify.replay import run_replay
    from tests.e2e.captures import write_capture

    cap = write_capture(tmp_path / "cap.jsonl", 3)
    held = Spool(str(tmp_path / "spool"), 1 << 20, 1 << 16)
    try:
        s = OtlpSettings.from_env({}, protocol="http/json", endpoint="http://127.0.0.1:9",
                                  spool_dir=str(tmp_path / "spool"))
        assert run_replay(cap, s, progress=False) == 1
    finally:
        held.close()
