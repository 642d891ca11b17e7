"""Where replay's CPU goes, stage by stage: agent CPU per event of each step
an event takes from a capture line to OTLP request bytes, in one process,
against the stock SDK's own encoder (opentelemetry-exporter-otlp's
encode_logs) of the same records in the same run.

    .venv/bin/python -m benchmarks.bench_encode [--events 20000]

Stages (each timed alone over the same events, process CPU time, the
garbage collector set as the agent sets it):
- capture decode: a jsonl capture file to Events (iter_capture_chunks,
  msgspec), the work `replay` does twice (its validation pass, then its
  sending pass);
- spool frame: an Event to its spooled bytes (LogEntry, msgpack, CRC frame);
- spool read: spooled bytes back to a LogEntry (a sender that did not keep
  the entry it spooled: after a restart or past FRESH_MAX);
- OTLP protobuf / JSON encode: LogEntry batches of 1,000 to request bytes;
- stock SDK encode: the same entries as the SDK's ReadableLogRecord, then
  encode_logs(...).SerializeToString() (building the records counts: it is
  what the stock path does per event).

No kernel, no collector: the per-event costs replay and the running agent's
OTLP output pay in Python, so the sum says how many events per second one
core can carry (issue #14's goal: 100,000 end to end).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

from otel_fsnotify.delivery.sdk import SdkExporter
from otel_fsnotify.delivery.settings import OtlpSettings
from otel_fsnotify.delivery.spool import decode_entry, encode_payload, frame
from otel_fsnotify.event import iter_capture_chunks, to_json_line
from otel_fsnotify.otel.entry import LogEntry
from otel_fsnotify.otel.otlp_json import JsonEncoder
from otel_fsnotify.otel.otlp_proto import ProtoEncoder
from otel_fsnotify.otel.resource import build_resource
from otel_fsnotify.quiet_gc import quiet_gc
from tests.e2e.captures import sample_events

BATCH = 1000


def _cpu_us_per_event(n: int, work) -> float:
    """Process CPU time of work() per event, the best of three runs."""
    best = float("inf")
    for _ in range(3):
        t = time.process_time()
        work()
        best = min(best, time.process_time() - t)
    return best / n * 1e6


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--events", type=int, default=20_000)
    n = ap.parse_args().events

    events = list(sample_events(n))
    fd, capture = tempfile.mkstemp(suffix=".jsonl")
    with os.fdopen(fd, "wb") as fh:
        fh.write(b"".join(to_json_line(ev) for ev in events))
    entries = [LogEntry(f"01JD{i:022d}", 1_700_000_000_000_000_000 + i, ev) for i, ev in enumerate(events)]
    payloads = [encode_payload(e) for e in entries]
    resource = build_resource("bench")
    proto, js = ProtoEncoder(resource), JsonEncoder(resource)
    sdk = SdkExporter(OtlpSettings.from_env({}, protocol="http/protobuf", endpoint="http://127.0.0.1:9"),
                      resource)
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    quiet_gc()

    def batches(encode):
        return lambda: [encode(entries[i:i + BATCH]) for i in range(0, n, BATCH)]

    stages = [
        ("capture decode (x2 in replay)", lambda: [len(chunk) for chunk in iter_capture_chunks(capture)]),
        ("spool frame", lambda: [frame(encode_payload(LogEntry(e.uid, e.observed, e.event))) for e in entries]),
        ("spool read", lambda: [decode_entry(p) for p in payloads]),
        ("OTLP protobuf encode", batches(proto.encode)),
        ("OTLP JSON encode", batches(js.encode)),
    ]
    stock = _cpu_us_per_event(n, batches(lambda part: encode_logs([sdk.to_sdk(e) for e in part])
                                         .SerializeToString()))
    try:
        costs = {name: _cpu_us_per_event(n, work) for name, work in stages}
    finally:
        os.unlink(capture)
    per_event = 2 * costs[stages[0][0]] + costs["spool frame"] + costs["OTLP protobuf encode"]
    print(f"\nreplay over protobuf, in Python per event: {per_event:.1f} us (decode twice, frame, encode; "
          f"the spooled entry is kept, not read back): at most {1e6 / per_event:,.0f} events/s on one core, "
          f"before the HTTP or gRPC send and the collector")
    print(f"\nagent CPU per event of each stage, {n:,} events, best of 3 "
          f"(x stock = against the stock SDK's encoder in this run)\n")
    print(f"{'stage':34} {'us/event':>9} {'x stock':>8}")
    for name, us in costs.items():
        print(f"{name:34} {us:9.2f} {us / stock:8.2f}")
    print(f"{'stock SDK encode':34} {stock:9.2f} {1:8.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
