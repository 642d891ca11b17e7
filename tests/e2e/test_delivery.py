"""End-to-end delivery against a real rotel-agent collector on loopback.

Every test runs the real exporters (gRPC, HTTP/protobuf, HTTP/JSON) and the
real on-disk spool; the only test double is `FlakyProxy` (see its docstring;
test_protocols.py has its gRPC counterpart).
"""

from __future__ import annotations

import http.client
import http.server
import logging
import os
import signal
import subprocess
import sys
import threading
import time

import pytest

from otel_fsnotify.delivery.metrics import start_metrics
from otel_fsnotify.delivery.settings import OtlpSettings
from otel_fsnotify.delivery.shipper import Shipper
from otel_fsnotify.otel.resource import build_resource
from tests.e2e.captures import sample_events, write_capture
from tests.harness.collector import Rotel, free_port

pytestmark = pytest.mark.e2e

PROTOCOLS = ("grpc", "http/protobuf", "http/json")
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def settings_for(rotel: Rotel, protocol: str, spool_dir, **kw) -> OtlpSettings:
    return OtlpSettings.from_env({}, protocol=protocol, endpoint=rotel.endpoint(protocol),
                                 spool_dir=str(spool_dir), **kw)


def replay(capture, protocol, endpoint, spool_dir, *extra, config=None, wait=True, env=None):
    argv = [sys.executable, "-m", "otel_fsnotify", "replay", str(capture), "--protocol", protocol,
            "--endpoint", endpoint, "--spool-dir", str(spool_dir), *extra]
    if config:
        argv += ["--config", str(config)]
    full_env = {**os.environ, "PYTHONPATH": ROOT, **(env or {})}
    if wait:
        return subprocess.run(argv, capture_output=True, text=True, timeout=300, cwd=ROOT, env=full_env)
    return subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT,
                            env=full_env)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_records_arrive_with_the_right_fields(rotel, tmp_path, protocol, monkeypatch):
    monkeypatch.setenv("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=test")
    monkeypatch.setenv("OTEL_SERVICE_NAME", "fim")
    shipper = Shipper(settings_for(rotel, protocol, tmp_path / "spool"),
                      build_resource("tracepoint"), logging.getLogger("test"))
    events = list(sample_events(6, start_ns=1_750_000_000_000_000_000))
    for ev in events:
        shipper.submit(ev)
    assert shipper.close(30)
    c = shipper.counters()
    assert c["delivered"] == 6 and c["dropped_spool_full"] == 0 and c["spool_pending"] == 0
    recs = sorted(rotel.wait_for_records(6, 20), key=lambda r: r.timestamp)
    assert len(recs) == 6
    ino, fan, resp = recs[0], recs[1], recs[5]  # deny is the odd fa_resp (i=5)
    assert ino.resource["service.name"] == "fim"
    assert ino.resource["deployment.environment"] == "test"
    assert ino.resource["fsnotify.backend"] == "tracepoint"
    assert ino.resource["host.name"] and ino.resource["service.version"]
    assert ino.scope_name == "otel_fsnotify"
    assert ino.event_name == "fsnotify.inotify"
    assert ino.timestamp == 1_750_000_000_000_000_000
    assert ino.observed_timestamp > ino.timestamp
    assert (ino.severity_number, ino.severity_text) == (9, "INFO")
    assert ino.body == "touch (pid 2000) create /watched/f0; read by inotifywait (pid 100)"
    a = ino.attributes
    assert a["process.pid"] == 2000 and a["process.executable.name"] == "touch"
    assert a["process.executable.path"] == "/usr/bin/touch" and a["process.user.id"] == 1000
    assert a["process.parent_pid"] == 1999 and a["fsnotify.tracee.gid"] == 1000
    assert a["file.path"] == "/watched/f0" and a["file.name"] == "f0" and a["file.directory"] == "/watched"
    assert a["file.inode"] == "1000"
    assert a["fsnotify.watcher.pid"] == 100 and a["fsnotify.watcher.executable.name"] == "inotifywait"
    assert a["fsnotify.watcher.executable.path"] == "/usr/bin/inotifywait"
    assert a["fsnotify.mask"] == 0x100 and a["fsnotify.mask.names"] == ["IN_CREATE"]
    assert a["fsnotify.action"] == "create" and a["fsnotify.attribution"] == "inferred"
    assert len(a["log.record.uid"]) == 26  # ULID
    assert fan.event_name == "fsnotify.fanotify"
    # one ResourceLogs per container: its id is a resource attribute (k8sattributes' pod_association)
    assert fan.resource["container.id"] == "c0ffee" and "container.id" not in fan.attributes
    assert "container.id" not in ino.resource and fan.resource["service.name"] == "fim"
    assert fan.attributes["file.path"] == "/etc/f1"
    assert fan.attributes["fsnotify.fanotify.type"] == "FANOTIFY_EVENT_TYPE_PATH"
    assert resp.event_name == "fsnotify.fanotify.response"
    assert (resp.severity_number, resp.severity_text) == (13, "WARN")
    assert resp.attributes["fsnotify.fanotify.response"] == "deny"
    assert resp.body.startswith("fapolicyd (pid 300) denied open of /secret/f5 by cat (pid 4001)")
    assert len({r.uid for r in recs}) == 6


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_replay_50000_events_arrive_complete(rotel, tmp_path, protocol):
    cap = write_capture(tmp_path / "cap.jsonl", 50_000)
    p = replay(cap, protocol, rotel.endpoint(protocol), tmp_path / "spool")
    assert p.returncode == 0, p.stderr
    last = p.stderr.strip().splitlines()[-1]
    assert "delivered 50000 events" in last and "lost 0" in last
    assert "events/s" in p.stderr  # progress lines
    uids = rotel.wait_for_uids(50_000, 60)
    assert len(uids) == 50_000


@pytest.mark.parametrize("protocol", ("grpc", "http/json"))
def test_collector_down_for_10s_mid_stream_loses_nothing(rotel, tmp_path, protocol):
    # timeout 3 s: the gRPC exporter gives up on a dead collector sooner, the spool holds the rest
    shipper = Shipper(settings_for(rotel, protocol, tmp_path / "spool", timeout=3.0, max_backoff=2.0),
                      build_resource("tracepoint"), logging.getLogger("test"))
    n, rate = 16_000, 1000  # ~16 s of events
    events = list(sample_events(n))

    def produce():
        t0 = time.monotonic()
        for i, ev in enumerate(events):
            shipper.submit(ev)
            if i % 100 == 0:
                time.sleep(max(0.0, t0 + i / rate - time.monotonic()))

    t = threading.Thread(target=produce)
    t.start()
    time.sleep(2.5)
    before = len(set(rotel.uids()))
    rotel.stop()
    time.sleep(10)
    rotel.start()
    t.join()
    assert shipper.flush(90), shipper.counters()
    c = shipper.counters()
    shipper.close(5)
    assert 0 < before < n
    assert c["retried"] > 0  # the outage was seen
    assert c["delivered"] == n and c["dropped_spool_full"] == 0 and c["rejected"] == 0
    assert len(rotel.wait_for_uids(n, 30)) == n


def _wait_line(proc, needle: str, timeout: float) -> str:
    deadline = time.monotonic() + timeout
    seen = ""
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        seen += line
        if needle in line:
            return seen
        if not line and proc.poll() is not None:
            break
    raise AssertionError(f"{needle!r} not seen in: {seen}")


def test_replay_sigkilled_mid_stream_then_restarted_delivers_everything(rotel, tmp_path):
    n = 50_000
    cap = write_capture(tmp_path / "cap.jsonl", n)
    spool = tmp_path / "spool"
    proc = replay(cap, "grpc", rotel.grpc_endpoint, spool, wait=False)
    deadline = time.monotonic() + 60
    while len(rotel.uids()) < 5000 and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    got_before = len(set(rotel.uids()))
    assert 0 < got_before < n, "kill did not land mid-stream"
    p = replay(cap, "grpc", rotel.grpc_endpoint, spool)
    assert p.returncode == 0, p.stderr
    assert "resuming" in p.stderr
    assert len(rotel.wait_for_uids(n, 60)) == n


def test_spool_written_while_collector_away_is_delivered_after_sigkill(tmp_path):
    """Collector down: replay spools, is SIGKILLed; the next run sends the spool."""
    n = 20_000
    cap = write_capture(tmp_path / "cap.jsonl", n)
    spool = tmp_path / "spool"
    collector = Rotel(tmp_path / "rotel")  # ports chosen, not started yet
    try:
        proc = replay(cap, "http/json", collector.http_endpoint, spool, wait=False)
        _wait_line(proc, f"read {n}/{n}", 60)  # everything is in the spool
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        collector.start()
        p = replay(cap, "http/json", collector.http_endpoint, spool)
        assert p.returncode == 0, p.stderr
        assert f"resuming: {n} events in the spool" in p.stderr
        assert len(collector.wait_for_uids(n, 60)) == n
    finally:
        collector.stop()


class FlakyProxy:
    """Test double: a loopback HTTP server that answers the first requests with
    the given error statuses and Retry-After, then forwards every request
    unchanged to the real collector. It records when each request came."""

    def __init__(self, upstream_port: int, failures: list[tuple[int, str]]):
        self.failures = list(failures)
        self.times: list[float] = []
        self.statuses: list[int] = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_POST(self):
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                proxy.times.append(time.monotonic())
                if proxy.failures:
                    status, retry_after = proxy.failures.pop(0)
                    proxy.statuses.append(status)
                    self.send_response(status)
                    self.send_header("Retry-After", retry_after)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                conn = http.client.HTTPConnection("127.0.0.1", upstream_port, timeout=30)
                fwd = {k: v for k, v in self.headers.items()
                       if k.lower() in ("content-type", "content-encoding")}
                conn.request("POST", self.path, body=body, headers=fwd)
                resp = conn.getresponse()
                data = resp.read()
                proxy.statuses.append(resp.status)
                self.send_response(resp.status)
                self.send_header("Content-Type", resp.getheader("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
                conn.close()

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()


def ship_through(proxy: FlakyProxy, tmp_path, protocol: str, backend: str, n: int, close_s: float,
                 **settings) -> dict:
    """n sample events shipped to the proxy, all closed within close_s;
    the shipper's counters. The proxy is closed after."""
    try:
        s = OtlpSettings.from_env({}, protocol=protocol, endpoint=f"http://127.0.0.1:{proxy.port}",
                                  spool_dir=str(tmp_path / "spool"), **settings)
        shipper = Shipper(s, build_resource(backend), logging.getLogger("test"))
        shipper.submit_many(list(sample_events(n)))  # one write: batches cut at batch_size only
        assert shipper.close(close_s)
        return shipper.counters()
    finally:
        proxy.close()


@pytest.mark.parametrize("protocol", ("http/json", "http/protobuf"))
def test_503_and_429_with_retry_after_are_honoured(rotel, tmp_path, protocol):
    proxy = FlakyProxy(rotel.http_port, [(503, "2"), (429, "1")])
    c = ship_through(proxy, tmp_path, protocol, "tracepoint", 100, 60, batch_size=100)
    assert proxy.statuses[:3] == [503, 429, 200]
    assert proxy.times[1] - proxy.times[0] >= 1.9  # Retry-After: 2
    assert proxy.times[2] - proxy.times[1] >= 0.9  # Retry-After: 1
    assert c["delivered"] == 100 and c["rejected"] == 0
    assert c["retried"] == 2  # our own retry loop saw both (no hidden retries in an SDK exporter)
    assert len(rotel.wait_for_uids(100, 20)) == 100


def test_permanent_rejection_is_counted_not_retried_forever(rotel, tmp_path):
    proxy = FlakyProxy(rotel.http_port, [(400, "0")])
    c = ship_through(proxy, tmp_path, "http/json", "", 20, 30, batch_size=10, batch_linger=0.5)
    assert c["rejected"] == 10 and c["delivered"] == 10


def test_spool_full_is_counted_logged_and_exported_as_metric(rotel, tmp_path, caplog):
    dead = f"http://127.0.0.1:{free_port()}/v1/logs"  # nothing listens: logs cannot leave
    s = OtlpSettings.from_env({}, protocol="http/json", endpoint=rotel.http_endpoint, logs_endpoint=dead,
                              spool_dir=str(tmp_path / "spool"), spool_max_bytes=64 * 1024,
                              spool_segment_bytes=16 * 1024, metrics_interval=0.5, timeout=1.0)
    shipper = Shipper(s, build_resource("tracepoint"), logging.getLogger("test.spool"))
    metrics = start_metrics(s, shipper.resource, shipper.counters)
    with caplog.at_level(logging.WARNING, logger="test.spool"):
        for ev in sample_events(1000):
            shipper.submit(ev)
    c = shipper.counters()
    assert c["dropped_spool_full"] > 0
    assert c["spooled"] + c["dropped_spool_full"] == 1000
    assert c["spool_bytes"] <= 64 * 1024
    full_warnings = [r for r in caplog.records if "is full" in r.getMessage()]
    assert len(full_warnings) == 1  # rate-limited, not once per event
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and "dropped_spool_full" not in rotel.raw_log():
        time.sleep(0.2)
    metrics.shutdown()
    shipper.close(0)
    log = rotel.raw_log()
    assert "otel_fsnotify.events" in log
    assert "dropped_spool_full" in log


def test_replay_bad_capture_names_file_and_line(tmp_path, rotel):
    cap = tmp_path / "bad.jsonl"
    good = write_capture(tmp_path / "good.jsonl", 3)
    cap.write_bytes(open(good, "rb").read() + b'{"type": "inotify", "tracer_pid": "x"}\n')
    p = replay(cap, "http/json", rotel.http_endpoint, tmp_path / "spool")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and f"{cap}:4:" in lines[0], p.stderr
    assert "Traceback" not in p.stderr
    assert rotel.uids() == []  # nothing sent from a bad capture


def test_replay_to_unreachable_collector_gives_up_after_deadline(tmp_path):
    cap = write_capture(tmp_path / "cap.jsonl", 100)
    conf = tmp_path / "agent.toml"
    conf.write_text("[otlp]\ndrain_timeout = 3\ntimeout = 1\n")
    t0 = time.monotonic()
    p = replay(cap, "http/json", f"http://127.0.0.1:{free_port()}", tmp_path / "spool",
               "--no-progress", config=conf)
    took = time.monotonic() - t0
    assert p.returncode == 1, p.stderr
    assert "Traceback" not in p.stderr
    assert "did not accept 100 events within 3s" in p.stderr
    assert took < 30


def _make_pki(d) -> dict:
    """A CA, a server cert for 127.0.0.1 and a client cert, made with openssl."""
    def run(*argv):
        subprocess.run(["openssl", *argv], check=True, capture_output=True, cwd=d)
    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=test-ca")
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for name in ("server", "client"):
        run("req", "-newkey", "rsa:2048", "-nodes", "-keyout", f"{name}.key", "-out", f"{name}.csr",
            "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key", "-CAcreateserial",
            "-out", f"{name}.pem", "-days", "2", "-extfile", "san.ext")
    return {k: str(d / k) for k in ("ca.pem", "server.pem", "server.key", "client.pem", "client.key")}


def test_http_json_tls_client_certificate_headers_and_gzip(rotel, tmp_path):
    """TLS with a private CA and a client certificate (mutual TLS), an auth
    header and gzip, through a TLS-terminating FlakyProxy in front of rotel."""
    import ssl

    pki = _make_pki(tmp_path)
    proxy = FlakyProxy(rotel.http_port, [])
    seen_headers: list[dict] = []
    handler = proxy.server.RequestHandlerClass
    orig = handler.do_POST

    def do_post(self):
        seen_headers.append(dict(self.headers))
        orig(self)
    handler.do_POST = do_post
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=pki["ca.pem"])
    ctx.verify_mode = ssl.CERT_REQUIRED  # refuse clients without our client certificate
    ctx.load_cert_chain(pki["server.pem"], pki["server.key"])
    proxy.server.socket = ctx.wrap_socket(proxy.server.socket, server_side=True)
    try:
        s = OtlpSettings.from_env(
            {"OTEL_EXPORTER_OTLP_HEADERS": "authorization=Bearer%20t0k"},
            protocol="http/json", endpoint=f"https://127.0.0.1:{proxy.port}", compression="gzip",
            certificate=pki["ca.pem"], client_certificate=pki["client.pem"], client_key=pki["client.key"],
            spool_dir=str(tmp_path / "spool"))
        shipper = Shipper(s, build_resource(""), logging.getLogger("test"))
        for ev in sample_events(30):
            shipper.submit(ev)
        assert shipper.close(30), shipper.counters()
    finally:
        proxy.close()
    assert seen_headers and seen_headers[0]["authorization"] == "Bearer t0k"
    assert seen_headers[0]["Content-Encoding"] == "gzip"
    assert len(rotel.wait_for_uids(30, 20)) == 30


def test_replay_into_a_spool_smaller_than_the_capture_waits_for_room_and_loses_nothing(rotel, tmp_path):
    """A 64 KiB spool under a capture of ~9 MB: replay waits for the
    collector to make room, chunk after chunk, and every event arrives."""
    capture = write_capture(tmp_path / "cap.jsonl", 10_000)
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[otlp]\nspool_max_bytes = 65536\nbatch_linger = 0.01\n")
    p = replay(capture, "http/protobuf", rotel.http_endpoint, tmp_path / "spool", "--no-progress",
               config=cfg)
    assert p.returncode == 0, p.stderr
    assert "lost 0 (spool full 0," in p.stderr
    assert len(rotel.wait_for_uids(10_000, 60)) == 10_000
