"""Permanent refusals, retry hints and partial success, per OTLP protocol,
with the real exporters and a real rotel collector behind loopback test
doubles (FlakyProxy for HTTP, GrpcFlakyProxy for gRPC)."""

from __future__ import annotations

import logging
import time
from concurrent import futures

import grpc
import pytest
from google.protobuf import duration_pb2
from google.rpc import error_details_pb2, status_pb2
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2 as svc
from opentelemetry.proto.collector.logs.v1 import logs_service_pb2_grpc as svc_grpc

from otel_fsnotify.otel import mapping as otel_map
from otel_fsnotify.delivery.sdk import SdkExporter
from otel_fsnotify.otel.otlp_proto import ProtoEncoder
from otel_fsnotify.delivery.settings import OtlpSettings
from otel_fsnotify.delivery.shipper import Shipper
from otel_fsnotify.otel.entry import LogEntry
from otel_fsnotify.otel.resource import build_resource
from tests.e2e.captures import sample_events
from tests.e2e.test_delivery import FlakyProxy

pytestmark = pytest.mark.e2e


class GrpcFlakyProxy:
    """Test double: a loopback OTLP/gRPC LogsService that answers the first
    requests from a script, then forwards every request unchanged to the real
    collector. Script items: ("INVALID_ARGUMENT"|"UNAVAILABLE"|..., retry_delay_s
    or None) for an error status (with a RetryInfo detail when a delay is
    given), or ("PARTIAL", n) for a success claiming n rejected records."""

    def __init__(self, upstream: str, script: list[tuple[str, float | None]]):
        self.script = list(script)
        self.times: list[float] = []
        self.answers: list[str] = []
        self._up_channel = grpc.insecure_channel(upstream.split("://", 1)[1])
        upstream_stub = svc_grpc.LogsServiceStub(self._up_channel)
        proxy = self

        class Servicer(svc_grpc.LogsServiceServicer):
            def Export(self, request, context):
                proxy.times.append(time.monotonic())
                if proxy.script:
                    what, arg = proxy.script.pop(0)
                    proxy.answers.append(what)
                    if what == "PARTIAL":
                        upstream_stub.Export(request, timeout=10)
                        return svc.ExportLogsServiceResponse(partial_success=svc.ExportLogsPartialSuccess(
                            rejected_log_records=int(arg), error_message="test double"))
                    code = getattr(grpc.StatusCode, what)
                    if arg is not None:
                        info = error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(
                            seconds=int(arg), nanos=int((arg % 1) * 1e9)))
                        st = status_pb2.Status(code=code.value[0], message="test double")
                        st.details.add().Pack(info)
                        context.set_trailing_metadata((("grpc-status-details-bin", st.SerializeToString()),))
                    context.abort(code, "test double")
                proxy.answers.append("OK")
                return upstream_stub.Export(request, timeout=10)

        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        svc_grpc.add_LogsServiceServicer_to_server(Servicer(), self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def close(self):
        self.server.stop(0)
        self._up_channel.close()


def _ship(settings: OtlpSettings, n: int) -> dict:
    shipper = Shipper(settings, build_resource(""), logging.getLogger("test"))
    for ev in sample_events(n):
        shipper.submit(ev)
    assert shipper.close(30), shipper.counters()
    return shipper.counters()


@pytest.mark.parametrize("protocol", ("http/json", "http/protobuf"))
def test_http_400_is_counted_as_rejected_and_not_retried(rotel, tmp_path, protocol):
    proxy = FlakyProxy(rotel.http_port, [(400, "0")])
    try:
        c = _ship(OtlpSettings.from_env({}, protocol=protocol, endpoint=f"http://127.0.0.1:{proxy.port}",
                                        spool_dir=str(tmp_path / "spool"), batch_size=10,
                                        batch_linger=0.5), 20)
    finally:
        proxy.close()
    assert proxy.statuses == [400, 200]  # the refused batch was not sent again
    assert c["rejected"] == 10 and c["delivered"] == 10 and c["retried"] == 0
    assert len(rotel.wait_for_uids(10, 20)) == 10


def test_grpc_invalid_argument_is_counted_as_rejected_and_not_retried(rotel, tmp_path):
    proxy = GrpcFlakyProxy(rotel.grpc_endpoint, [("INVALID_ARGUMENT", None)])
    try:
        c = _ship(OtlpSettings.from_env({}, protocol="grpc", endpoint=proxy.endpoint,
                                        spool_dir=str(tmp_path / "spool"), batch_size=10,
                                        batch_linger=0.5), 20)
    finally:
        proxy.close()
    assert proxy.answers == ["INVALID_ARGUMENT", "OK"]
    assert c["rejected"] == 10 and c["delivered"] == 10 and c["retried"] == 0
    assert len(rotel.wait_for_uids(10, 20)) == 10


@pytest.mark.parametrize("code", ("UNAUTHENTICATED", "PERMISSION_DENIED", "UNIMPLEMENTED"))
def test_grpc_misconfiguration_pauses_delivery_and_keeps_every_event(rotel, tmp_path, code, caplog):
    """The collector refuses the agent as configured (twice), then accepts
    (the configuration fixed): nothing was dropped meanwhile."""
    proxy = GrpcFlakyProxy(rotel.grpc_endpoint, [(code, None), (code, None)])
    try:
        with caplog.at_level(logging.WARNING, logger="test"):
            c = _ship(OtlpSettings.from_env({}, protocol="grpc", endpoint=proxy.endpoint,
                                            spool_dir=str(tmp_path / "spool"), batch_size=10,
                                            batch_linger=0.5, max_backoff=0.5), 20)
    finally:
        proxy.close()
    assert proxy.answers[:3] == [code, code, "OK"]
    assert c["rejected"] == 0 and c["delivered"] == 20 and c["delivery_paused"] == 2
    assert any("delivery paused" in r.getMessage() and code in r.getMessage() for r in caplog.records)
    assert len(rotel.wait_for_uids(20, 20)) == 20


def test_a_batch_over_max_request_bytes_goes_as_smaller_requests(rotel, tmp_path):
    """10,000 events encode to ~9 MB: over the 4 MiB default cap, split."""
    s = OtlpSettings.from_env({}, protocol="grpc", endpoint=rotel.grpc_endpoint,
                              spool_dir=str(tmp_path / "spool"), batch_size=10000, batch_linger=2.0)
    c = _ship(s, 10000)
    assert c["delivered"] == 10000 and c["rejected"] == 0 and c["batches_split"] >= 2
    assert len(rotel.wait_for_uids(10000, 30)) == 10000


def test_grpc_message_over_the_receivers_limit_is_split_not_dropped(rotel, tmp_path):
    """rotel takes any size, so the receiver here is the test double, whose
    gRPC server keeps grpc's own 4 MiB receive limit: it answers
    RESOURCE_EXHAUSTED for the ~9 MB request (our cap raised past it)."""
    proxy = GrpcFlakyProxy(rotel.grpc_endpoint, [])
    try:
        c = _ship(OtlpSettings.from_env({}, protocol="grpc", endpoint=proxy.endpoint,
                                        spool_dir=str(tmp_path / "spool"), batch_size=10000,
                                        batch_linger=2.0, max_request_bytes=64 << 20), 10000)
    finally:
        proxy.close()
    assert c["delivered"] == 10000 and c["rejected"] == 0 and c["batches_split"] >= 2
    assert len(rotel.wait_for_uids(10000, 30)) == 10000


def test_grpc_unavailable_is_retried_with_the_collectors_retry_delay(rotel, tmp_path):
    proxy = GrpcFlakyProxy(rotel.grpc_endpoint, [("UNAVAILABLE", 1.5), ("RESOURCE_EXHAUSTED", None)])
    try:
        c = _ship(OtlpSettings.from_env({}, protocol="grpc", endpoint=proxy.endpoint,
                                        spool_dir=str(tmp_path / "spool"), batch_size=50), 50)
    finally:
        proxy.close()
    assert proxy.answers == ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "OK"]
    assert proxy.times[1] - proxy.times[0] >= 1.4  # RetryInfo 1.5 s honoured
    assert c["retried"] == 2 and c["delivered"] == 50 and c["rejected"] == 0
    assert len(rotel.wait_for_uids(50, 20)) == 50


@pytest.mark.parametrize("claimed, rejected", [(3, 3), (12000, 20)])
def test_grpc_partial_success_counts_the_rejected_records(rotel, tmp_path, claimed, rejected):
    """A collector's count of rejected records, clamped to the batch (a bogus
    12,000 for 20 records must not make "delivered" negative)."""
    proxy = GrpcFlakyProxy(rotel.grpc_endpoint, [("PARTIAL", claimed)])
    try:
        c = _ship(OtlpSettings.from_env({}, protocol="grpc", endpoint=proxy.endpoint,
                                        spool_dir=str(tmp_path / "spool"), batch_size=20), 20)
    finally:
        proxy.close()
    assert c["rejected"] == rejected and c["delivered"] == 20 - rejected and c["retried"] == 0


def test_protobuf_encoder_matches_the_sdk_encoding():
    """Our direct protobuf request equals what the SDK's encode_logs makes
    from the same records (as SdkExporter builds them)."""
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    res = build_resource("tracepoint", environ={})
    entries = [LogEntry(f"U{i}", 1_700_000_000_000_000_000 + i, ev)
               for i, ev in enumerate(sample_events(6))]
    ours = ProtoEncoder(res).request(entries)
    sdk = SdkExporter(OtlpSettings.from_env({}, protocol="http/protobuf", endpoint="http://127.0.0.1:9"),
                      res)
    theirs = encode_logs([sdk.to_sdk(e) for e in entries])
    def groups(req):  # resource attributes -> records (one ResourceLogs per container)
        return {tuple(sorted((kv.key, kv.value.SerializeToString()) for kv in rl.resource.attributes)):
                (rl.scope_logs[0].scope, list(rl.scope_logs[0].log_records)) for rl in req.resource_logs}

    mine, sdks = groups(ours), groups(theirs)
    assert sum(len(records) for _scope, records in mine.values()) == 6 and len(mine) >= 2
    assert mine == sdks
    assert all(scope.name == otel_map.SCOPE_NAME for scope, _records in mine.values())
