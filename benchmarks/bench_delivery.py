"""End-to-end delivery benchmark: replay -> real rotel collector, per protocol,
against the stock OpenTelemetry SDK path measured in the same run.

    .venv/bin/python -m benchmarks.bench_delivery [--events 50000]

Cases (each with a fresh rotel-agent on loopback, same capture):
- replay over grpc, http/protobuf, http/json: `otel-fsnotify replay` as a
  user runs it (subprocess), timed from start to exit (exit = every event
  acknowledged by the collector);
- stock SDK: LoggerProvider + BatchLogRecordProcessor (defaults) + the OTLP
  gRPC exporter, Logger.emit() of the same records (same attributes from
  otel_map), timed from the first emit to the end of force_flush().

Delivered = distinct log.record.uid values the collector printed; lost =
events - delivered. Ratios are events/s against the stock SDK case.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

from tests.e2e.captures import write_capture
from tests.harness.collector import Rotel

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_replay_case(protocol: str, capture: str, n: int, work: str) -> dict:
    with Rotel(os.path.join(work, f"rotel-{protocol.replace('/', '_')}")) as rotel:
        argv = [sys.executable, "-m", "otel_fsnotify", "replay", capture, "--no-progress",
                "--protocol", protocol, "--endpoint", rotel.endpoint(protocol),
                "--spool-dir", os.path.join(work, f"spool-{protocol.replace('/', '_')}")]
        t0 = time.perf_counter()
        p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": ROOT})
        el = time.perf_counter() - t0
        delivered = len(rotel.wait_for_uids(n, 60))
    return {"case": f"replay {protocol}", "seconds": el, "delivered": delivered,
            "lost": n - delivered, "exit": p.returncode}


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
    return {"case": "stock SDK (BatchLogRecordProcessor, grpc)", "seconds": el,
            "delivered": delivered, "lost": n - delivered, "exit": 0}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=50_000)
    args = ap.parse_args()
    n = args.events
    work = tempfile.mkdtemp(prefix="bench-delivery-")
    capture = write_capture(os.path.join(work, "capture.jsonl"), n)
    results = [run_stock_case(capture, n, work)]
    for proto in ("grpc", "http/protobuf", "http/json"):
        results.append(run_replay_case(proto, capture, n, work))
    base = n / results[0]["seconds"]
    print(f"\nend-to-end delivery of {n} events to rotel on loopback "
          f"({os.cpu_count()} CPUs; ratio = events/s vs stock SDK in this run)\n")
    print(f"{'case':44} {'events/s':>10} {'ratio':>7} {'delivered':>10} {'lost':>7} {'exit':>5}")
    for r in results:
        rate = n / r["seconds"]
        print(f"{r['case']:44} {rate:10,.0f} {rate / base:7.2f} {r['delivered']:10d} {r['lost']:7d} {r['exit']:5d}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
