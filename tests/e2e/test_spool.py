"""The on-disk spool and the sender thread, on a real spool directory (and a
real rotel collector where delivery is part of the behaviour)."""

from __future__ import annotations

import logging
import os
import time

import msgspec
import pytest

from otel_fsnotify.delivery.settings import OtlpSettings, SettingsError
from otel_fsnotify.delivery.shipper import Shipper
from otel_fsnotify.delivery.spool import Spool, SpoolBusy, encode_entry, frame
from otel_fsnotify.otel.entry import LogEntry
from otel_fsnotify.otel.resource import build_resource
from tests.e2e.captures import sample_events

pytestmark = pytest.mark.e2e


def _frames(n: int) -> list[bytes]:
    return [encode_entry(LogEntry(f"uid-{i}", 1, ev)) for i, ev in enumerate(sample_events(n))]


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
            payloads, pos, _damaged = spool.read(1000)
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


def _future_frame(uid: str) -> bytes:
    """A spool frame as a later version of the agent could write it: its Event
    has a field this version does not know (Event forbids unknown fields)."""
    ev = msgspec.to_builtins(next(sample_events(1)))
    ev["field_from_the_future"] = 42
    return frame(msgspec.msgpack.encode([uid, 1, ev, ""]))


def test_frame_from_a_future_schema_is_counted_and_skipped_not_fatal(rotel, tmp_path):
    spool_dir = str(tmp_path / "spool")
    good = _frames(20)
    sp = Spool(spool_dir, 1 << 20, 1 << 16)
    for f in good[:10]:
        assert sp.append(f)
    assert sp.append(_future_frame("future-1"))
    for f in good[10:]:
        assert sp.append(f)
    sp.close()
    s = OtlpSettings.from_env({}, protocol="http/json", endpoint=rotel.http_endpoint,
                              spool_dir=spool_dir, batch_size=5, batch_linger=0.01)
    shipper = Shipper(s, build_resource(""), logging.getLogger("test"))
    assert shipper.counters()["recovered"] == 21
    assert shipper.flush(20), shipper.counters()
    for ev in sample_events(7):  # the sender is still alive and delivering
        shipper.submit(ev)
    assert shipper.close(20)
    c = shipper.counters()
    assert c["spool_corrupt_events"] == 1 and c["delivered"] == 27 and c["spool_pending"] == 0
    uids = rotel.wait_for_uids(27, 20)
    assert {f"uid-{i}" for i in range(20)} <= uids and "future-1" not in uids


class FailingOnceExporter:
    """Test double: wraps the real http/json exporter and raises an unexpected
    error (as a bug in encoding would) on its first `fail` calls."""

    def __init__(self, real, fail: int):
        self.real, self.fail, self.calls = real, fail, 0
        self.protocol = real.protocol

    def export(self, entries):
        self.calls += 1
        if self.calls <= self.fail:
            raise KeyError("boom")
        return self.real.export(entries)

    def shutdown(self):
        self.real.shutdown()


def test_unexpected_sender_error_is_logged_once_and_delivery_carries_on(rotel, tmp_path, caplog):
    from otel_fsnotify.delivery.shipper import make_exporter

    s = OtlpSettings.from_env({}, protocol="http/json", endpoint=rotel.http_endpoint,
                              spool_dir=str(tmp_path / "spool"), batch_linger=0.01, max_backoff=0.5)
    res = build_resource("")
    exporter = FailingOnceExporter(make_exporter(s, res), fail=3)
    with caplog.at_level(logging.WARNING, logger="test.sender"):
        shipper = Shipper(s, res, logging.getLogger("test.sender"), exporter=exporter)
        for ev in sample_events(50):
            shipper.submit(ev)
        assert shipper.close(20), shipper.counters()
    c = shipper.counters()
    assert c["sender_errors"] == 3 and c["delivered"] == 50
    tracebacks = [r for r in caplog.records if r.exc_info]
    assert len(tracebacks) == 1  # the first with its traceback, the rest rate-limited
    assert len(rotel.wait_for_uids(50, 20)) == 50


def test_close_without_timeout_waits_drain_timeout_and_keeps_the_rest(tmp_path):
    from tests.harness.collector import free_port

    s = OtlpSettings.from_env({}, protocol="http/json", endpoint=f"http://127.0.0.1:{free_port()}",
                              spool_dir=str(tmp_path / "spool"), drain_timeout=1.5, timeout=1.0)
    shipper = Shipper(s, build_resource(""), logging.getLogger("test"))
    for ev in sample_events(30):
        shipper.submit(ev)
    t0 = time.monotonic()
    assert shipper.close() is False  # nobody listens
    took = time.monotonic() - t0
    assert 1.4 <= took < 5, took
    again = Shipper(s, build_resource(""), logging.getLogger("test"))
    assert again.counters()["recovered"] == 30  # kept in the spool for the next run
    again.close(0)


def test_a_batch_across_segments_is_read_back_whole_and_in_order(tmp_path):
    spool = Spool(str(tmp_path / "spool"), max_bytes=1 << 20, segment_bytes=16 * 1024)
    frames = _frames(300)  # ~170 KB: about ten segments
    assert spool.append_many(frames) == 300
    assert len([n for n in os.listdir(tmp_path / "spool") if n.endswith(".seg")]) >= 8
    got = []
    while spool.pending:
        payloads, pos, lost = spool.read(64)
        assert lost == 0
        got += payloads
        spool.ack(pos, len(payloads))
    assert [msgspec.msgpack.decode(p)[0] for p in got] == [f"uid-{i}" for i in range(300)]
    spool.close()


def test_a_batch_larger_than_the_room_left_keeps_its_first_frames(tmp_path):
    spool = Spool(str(tmp_path / "spool"), max_bytes=64 * 1024, segment_bytes=16 * 1024)
    frames = _frames(300)
    took = spool.append_many(frames)
    assert 0 < took < 300 and spool.total_bytes <= 64 * 1024
    assert spool.append_many(frames[took:]) == 0  # still full: nothing of the rest
    payloads, _pos, _lost = spool.read(1000)
    assert [msgspec.msgpack.decode(p)[0] for p in payloads] == [f"uid-{i}" for i in range(took)]
    spool.close()


class _FirstRequestHeld:
    """A fake exporter (named as such: a collector that answers the first
    request last cannot be arranged with rotel): the first batch waits until
    released, every other is accepted at once."""

    protocol = "fake"
    max_request_bytes = 4 << 20
    address = None

    def __init__(self):
        import threading

        self.release = threading.Event()
        self.accepted: list[str] = []
        self._first = True
        self._lock = threading.Lock()

    def export(self, entries):
        from otel_fsnotify.delivery.outcome import Outcome

        with self._lock:
            first, self._first = self._first, False
        if first and not self.release.wait(30):
            return Outcome(False, True, None, 0, "held")
        with self._lock:
            self.accepted += [e.uid for e in entries]
        return Outcome(True)

    def reachable(self, timeout=0.0):
        return True

    def shutdown(self):
        self.release.set()


def test_batches_in_flight_are_acknowledged_in_order(tmp_path):
    """max_in_flight batches go out at once; while the first is unanswered
    the spool acknowledges none of the later ones (a crash then resends them
    all, loses none)."""
    s = OtlpSettings.from_env({}, protocol="http/json", endpoint="http://127.0.0.1:9",
                              spool_dir=str(tmp_path / "spool"), batch_size=100, batch_linger=0,
                              max_in_flight=4)
    exporter = _FirstRequestHeld()
    shipper = Shipper(s, build_resource("tracepoint"), logging.getLogger("test"),
                      exporters=[exporter] * s.max_in_flight)
    assert shipper.submit_many(list(sample_events(400))) == 400
    deadline = time.monotonic() + 10
    while len(exporter.accepted) < 300 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert len(exporter.accepted) == 300  # the three later batches were sent and accepted...
    assert shipper.spool.pending == 400  # ...and none is acknowledged before the first
    exporter.release.set()
    assert shipper.close(10)
    assert len(set(exporter.accepted)) == len(exporter.accepted) == 400
    assert shipper.counters()["delivered"] == 400 and shipper.spool.pending == 0


def test_each_event_carries_its_own_command_line_or_none(tmp_path):
    from otel_fsnotify.delivery.spool import decode_entry
    from otel_fsnotify.event import Event

    s = OtlpSettings.from_env({}, protocol="http/json", endpoint="http://127.0.0.1:9",
                              spool_dir=str(tmp_path / "spool"), include_command_line=True)
    shipper = Shipper(s, build_resource("tracepoint"), logging.getLogger("test"))
    shipper.submit_many([Event(name="a", tracee_pid=os.getpid()), Event(name="b")])
    shipper.close(0)
    spool = Spool(s.resolved_spool_dir(), 1 << 20, 1 << 18)
    payloads, _pos, _lost = spool.read(10)
    spool.close()
    entries = [decode_entry(p) for p in payloads]
    assert "pytest" in entries[0].command_line or "python" in entries[0].command_line
    assert entries[1].command_line == ""  # not the event before's


def test_a_file_name_that_is_not_utf8_is_spooled_escaped_not_a_crash(tmp_path):
    from otel_fsnotify.delivery.spool import decode_entry
    from otel_fsnotify.event import Event

    s = OtlpSettings.from_env({}, protocol="http/json", endpoint="http://127.0.0.1:9",
                              spool_dir=str(tmp_path / "spool"))
    shipper = Shipper(s, build_resource("tracepoint"), logging.getLogger("test"))
    name = os.fsdecode(b"bad-\xff-name")
    assert shipper.submit_many([Event(name=name, path=f"/d/{name}"), Event(name="ok")]) == 2
    shipper.close(0)
    spool = Spool(s.resolved_spool_dir(), 1 << 20, 1 << 18)
    payloads, _pos, _lost = spool.read(10)
    spool.close()
    first = decode_entry(payloads[0]).event
    assert (first.name, first.path) == ("bad-\\xff-name", "/d/bad-\\xff-name")
    assert decode_entry(payloads[1]).event.name == "ok"
