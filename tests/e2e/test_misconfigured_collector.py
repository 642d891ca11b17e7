"""An agent pointed or configured wrongly keeps its data: delivery pauses,
says what to fix, and sends everything once it is fixed. Too-large requests
are split, not dropped. Statuses a real collector cannot be made to return
(401, 413, a redirect) come from the FlakyProxy test double in front of it."""

from __future__ import annotations

import logging

import pytest

from otel_fsnotify.delivery.settings import OtlpSettings
from otel_fsnotify.delivery.shipper import Shipper
from otel_fsnotify.otel.resource import build_resource
from tests.e2e.captures import sample_events
from tests.e2e.test_delivery import FlakyProxy, ship_through

pytestmark = pytest.mark.e2e


@pytest.mark.parametrize("status", [401, 403, 405, 301])
def test_http_misconfiguration_pauses_and_loses_nothing(rotel, tmp_path, status, caplog):
    proxy = FlakyProxy(rotel.http_port, [(status, "0"), (status, "0")])
    with caplog.at_level(logging.WARNING, logger="test"):
        c = ship_through(proxy, tmp_path, "http/json", "", 30, 30, batch_size=30, max_backoff=0.5)
    assert proxy.statuses[:3] == [status, status, 200]
    assert c["delivered"] == 30 and c["rejected"] == 0 and c["delivery_paused"] == 2
    paused = [r.getMessage() for r in caplog.records if "delivery paused" in r.getMessage()]
    assert paused and f"HTTP {status}" in paused[0]
    assert len(rotel.wait_for_uids(30, 20)) == 30


def test_http_413_splits_the_batch_and_delivers_it_all(rotel, tmp_path):
    proxy = FlakyProxy(rotel.http_port, [(413, "0"), (413, "0")])
    c = ship_through(proxy, tmp_path, "http/protobuf", "", 40, 30, batch_size=40)
    assert proxy.statuses[:2] == [413, 413]
    assert c["delivered"] == 40 and c["rejected"] == 0 and c["batches_split"] == 2
    assert len(rotel.wait_for_uids(40, 20)) == 40


def test_a_wrong_path_keeps_the_events_until_the_endpoint_is_fixed(rotel, tmp_path):
    """rotel answers 404 for a path it does not serve: the agent stops with
    everything still spooled; restarted on the right endpoint it sends it all."""
    spool = str(tmp_path / "spool")
    wrong = OtlpSettings.from_env({}, protocol="http/json", spool_dir=spool, max_backoff=0.5,
                                  logs_endpoint=f"http://127.0.0.1:{rotel.http_port}/v1/nope")
    shipper = Shipper(wrong, build_resource(""), logging.getLogger("test"))
    for ev in sample_events(50):
        shipper.submit(ev)
    assert not shipper.close(2)
    c = shipper.counters()
    assert c["delivered"] == 0 and c["rejected"] == 0 and c["delivery_paused"] >= 1
    assert c["spool_pending"] == 50
    fixed = OtlpSettings.from_env({}, protocol="http/json", spool_dir=spool,
                                  endpoint=rotel.http_endpoint)
    shipper = Shipper(fixed, build_resource(""), logging.getLogger("test"))
    assert shipper.close(20)
    assert shipper.counters()["delivered"] == 50
    assert len(rotel.wait_for_uids(50, 20)) == 50
