"""A collector that comes back is used within a second, not after the
backoff: while it cannot be reached the agent probes it with a connection
attempt every 0.25 s. A real rotel collector, stopped and started."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from otel_fsnotify.delivery.settings import OtlpSettings
from otel_fsnotify.delivery.shipper import Shipper
from otel_fsnotify.otel.resource import build_resource
from tests.e2e.captures import sample_events, write_capture
from tests.e2e.test_delivery import replay
from tests.harness.collector import Rotel

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("protocol", ["http/json", "grpc"])
def test_delivery_resumes_within_a_second_of_the_collector_coming_back(tmp_path, protocol):
    collector = Rotel(tmp_path / "rotel")  # away at first
    endpoint = collector.grpc_endpoint if protocol == "grpc" else collector.http_endpoint
    s = OtlpSettings.from_env({}, protocol=protocol, endpoint=endpoint, max_backoff=30,
                              spool_dir=str(tmp_path / "spool"), batch_size=100, timeout=2)
    shipper = Shipper(s, build_resource(""), logging.getLogger("test"))
    try:
        for ev in sample_events(300):
            shipper.submit(ev)
        time.sleep(8)  # several failed attempts: the backoff has grown to seconds
        collector.start()
        back = time.monotonic()
        assert shipper.flush(30), shipper.counters()
        took = time.monotonic() - back
        assert took < 1.5, f"delivered {took:.1f}s after the collector came back"
        assert shipper.counters()["retried"] >= 3
        assert len(collector.wait_for_uids(300, 20)) == 300
    finally:
        shipper.close(0)
        collector.stop()


def test_replay_whose_collector_returns_before_the_deadline_exits_0(tmp_path):
    collector = Rotel(tmp_path / "rotel")
    cap = write_capture(tmp_path / "cap.jsonl", 500)
    timer = threading.Timer(8, collector.start)
    timer.start()
    try:
        p = replay(cap, "http/json", collector.http_endpoint, tmp_path / "spool", "--no-progress",
                   env={"OTEL_EXPORTER_OTLP_TIMEOUT": "2000"})
        assert p.returncode == 0, p.stderr
        assert "delivered 500 events" in p.stderr
    finally:
        timer.join()
        collector.stop()
