"""End-to-end delivery benchmark: replay -> real rotel collector, per protocol,
against the stock OpenTelemetry SDK path and the collector's own ceiling,
all measured in the same run.

    .venv/bin/python -m benchmarks.bench_delivery [--events 100000]

Cases (each with a fresh rotel-agent on loopback, same capture):
- collector ceiling, per protocol: requests of 1,000 records encoded before
  the clock starts, posted as fast as the collector answers, over one
  connection and over max_in_flight (4) at once; the better of the two is
  what this collector accepts on this machine;
- stock SDK: LoggerProvider + BatchLogRecordProcessor (defaults) + the OTLP
  gRPC exporter, Logger.emit() of the same records (same attributes from
  otel_map), timed from the first emit to the end of force_flush();
- replay over grpc, http/protobuf, http/json: `otel-fsnotify replay` as a
  user runs it (subprocess), timed from start to exit (exit = every event
  acknowledged by the collector), so its start-up and validation count.

Delivered = distinct log.record.uid values the collector printed; lost =
events - delivered. The goal (issue #14) per protocol: replay's events/s at
least 8x the stock SDK's, or 80% of the collector's ceiling where that is
lower, with nothing lost.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import threading
import time

from tests.e2e.captures import sample_events, write_capture
from tests.harness.collector import Rotel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PROTOCOLS = ("grpc", "http/protobuf", "http/json")
REQUEST_RECORDS = 1000


def _slug(protocol: str) -> str:
    return protocol.replace("/", "_")


def run_ceiling_case(protocol: str, n: int, work: str, in_flight: int) -> dict:
    """Pre-encoded requests, posted by `in_flight` senders at once."""
    from otel_fsnotify.delivery.settings import OtlpSettings
    from otel_fsnotify.delivery.shipper import make_exporter
    from otel_fsnotify.otel.entry import LogEntry
    from otel_fsnotify.otel.resource import build_resource

    with Rotel(os.path.join(work, f"rotel-ceiling-{_slug(protocol)}-{in_flight}")) as rotel:
        settings = OtlpSettings.from_env({}, protocol=protocol, endpoint=rotel.endpoint(protocol))
        res = build_resource("bench")
        exporters = [make_exporter(settings, res) for _ in range(in_flight)]
        entries = [LogEntry(f"ceiling-{i}", time.time_ns(), ev) for i, ev in enumerate(sample_events(n))]
        bodies = [exporters[0].encode(entries[i:i + REQUEST_RECORDS])
                  for i in range(0, n, REQUEST_RECORDS)]
        failed = []

        def post(k: int) -> None:
            for body in bodies[k::in_flight]:
                if not exporters[k].send(body).ok:
                    failed.append(body)

        threads = [threading.Thread(target=post, args=(k,)) for k in range(in_flight)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        el = time.perf_counter() - t0
        for e in exporters:
            e.shutdown()
        delivered = len(rotel.wait_for_uids(n, 60))
    return {"case": f"collector ceiling {protocol} ({in_flight} in flight)", "protocol": protocol,
            "seconds": el, "delivered": delivered, "lost": n - delivered, "exit": len(failed)}


def run_replay_case(protocol: str, capture: str, n: int, work: str) -> dict:
    with Rotel(os.path.join(work, f"rotel-{_slug(protocol)}")) as rotel:
        argv = [sys.executable, "-m", "otel_fsnotify", "replay", capture, "--no-progress",
                "--protocol", protocol, "--endpoint", rotel.endpoint(protocol),
                "--spool-dir", os.path.join(work, f"spool-{_slug(protocol)}")]
        t0 = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": ROOT})
        el = time.perf_counter() - t0
        delivered = len(rotel.wait_for_uids(n, 60))
    if p.returncode:
        sys.stderr.write(p.stderr)
    return {"case": f"replay {protocol}", "protocol": protocol, "seconds": el,
            "delivered": delivered, "lost": n - delivered, "exit": p.returncode}


def run_stock_case(capture: str, n: int, work: str) -> dict:
    from opentelemetry._logs import LogRecord, SeverityNumber
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.sdk._logs import LoggerProvider
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor
    from opentelemetry.sdk.resources import Resource

    from otel_fsnotify.otel import mapping as otel_map, resource as otel_resource
    from otel_fsnotify.event import iter_capture

    events = [ev for _ln, ev in iter_capture(capture)]
    with Rotel(os.path.join(work, "rotel-stock")) as rotel:
        provider = LoggerProvider(resource=Resource(otel_resource.build_resource("replay")))
        provider.add_log_record_processor(BatchLogRecordProcessor(
            OTLPLogExporter(endpoint=rotel.grpc_endpoint, insecure=True)))
        logger = provider.get_logger(otel_map.SCOPE_NAME)
        t0 = time.perf_counter()
        for i, ev in enumerate(events):
            num, text = otel_map.severity(ev)
            logger.emit(LogRecord(
                timestamp=ev.timestamp, observed_timestamp=time.time_ns(),
                severity_number=SeverityNumber(num), severity_text=text, body=otel_map.body(ev),
                attributes=otel_map.attributes(ev, uid=f"stock-{i}"),
                event_name=otel_map.event_name(ev)))
        provider.force_flush(120_000)
        el = time.perf_counter() - t0
        provider.shutdown()
        delivered = len(rotel.wait_for_uids(n, 20))
    return {"case": "stock SDK (BatchLogRecordProcessor, grpc)", "protocol": "", "seconds": el,
            "delivered": delivered, "lost": n - delivered, "exit": 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=100_000)
    args = ap.parse_args()
    n = args.events
    work = tempfile.mkdtemp(prefix="bench-delivery-")
    capture = write_capture(os.path.join(work, "capture.jsonl"), n)
    import logging

    logging.getLogger("opentelemetry").setLevel(logging.ERROR)  # the SDK's "Queue full" lines
    stock = run_stock_case(capture, n, work)
    ceilings: dict[str, dict] = {}
    results = [stock]
    for proto in PROTOCOLS:
        for k in (1, 4):
            r = run_ceiling_case(proto, n, work, k)
            results.append(r)
            if proto not in ceilings or r["seconds"] < ceilings[proto]["seconds"]:
                ceilings[proto] = r
    replays = [run_replay_case(proto, capture, n, work) for proto in PROTOCOLS]
    results += replays
    base = n / stock["seconds"]
    print(f"\nend-to-end delivery of {n:,} events to rotel on loopback ({os.cpu_count()} CPUs; "
          f"x stock = events/s against the stock SDK in this run, of ceiling = against what the "
          f"collector itself accepts over that protocol)\n")
    print(f"{'case':44} {'events/s':>10} {'x stock':>8} {'of ceiling':>10} {'delivered':>10} "
          f"{'lost':>7} {'exit':>5} {'goal':>5}")
    for r in results:
        rate = n / r["seconds"]
        ceiling = ceilings.get(r["protocol"])
        of_ceiling = f"{rate / (n / ceiling['seconds']):10.0%}" if ceiling else f"{'':10}"
        goal = ""
        if r in replays:
            target = min(8 * base, 0.8 * n / ceiling["seconds"])
            goal = "met" if rate >= target and not r["lost"] and not r["exit"] else "NOT"
        print(f"{r['case']:44} {rate:10,.0f} {rate / base:8.2f} {of_ceiling} {r['delivered']:10d} "
              f"{r['lost']:7d} {r['exit']:5d} {goal:>5}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
