"""rotel logs processor: alerts to the alerts pipeline, the rest to audit.

Run by the gateway collector (config/collector/gateway.env):

    rotel-agent start --otlp-with-logs-processor config/collector/route_alerts.py ...

A record that matched a detection rule in the agent (it carries
`security_rule.uuid`, and its severity is WARN or above) is sent on to the
alerts collector (OTLP/HTTP JSON to $OTEL_FSNOTIFY_ALERTS_ENDPOINT) and taken
out of this batch; everything else goes on to this collector's exporter, the
audit trail. A record the alerts collector does not accept stays in the
audit stream, so nothing is lost between the two.
"""

import json
import os
import sys
import urllib.request

from rotel_sdk.open_telemetry.logs.v1 import ResourceLogs

ALERTS = os.environ.get("OTEL_FSNOTIFY_ALERTS_ENDPOINT", "").rstrip("/")
MIN_SEVERITY = int(os.environ.get("OTEL_FSNOTIFY_ALERT_MIN_SEVERITY", "13"))  # WARN
TIMEOUT_S = 5.0


def is_alert(record) -> bool:
    if record.severity_number < MIN_SEVERITY:
        return False
    return any(kv.key == "security_rule.uuid" for kv in record.attributes)


def any_value(value) -> dict:
    """An AnyValue's payload as OTLP/JSON."""
    v = value.value if hasattr(value, "value") else value
    if isinstance(v, bool):
        return {"boolValue": v}
    if isinstance(v, int):
        return {"intValue": str(v)}
    if isinstance(v, float):
        return {"doubleValue": v}
    if isinstance(v, str):
        return {"stringValue": v}
    if isinstance(v, (bytes, bytearray)):
        return {"bytesValue": v.hex()}
    items = getattr(v, "values", None)
    if items is not None:
        return {"arrayValue": {"values": [any_value(x) for x in items]}}
    return {"stringValue": str(v)}


def key_values(kvs) -> list:
    return [{"key": kv.key, "value": any_value(kv.value)} for kv in kvs]


def record_json(r) -> dict:
    out = {"timeUnixNano": str(r.time_unix_nano), "observedTimeUnixNano": str(r.observed_time_unix_nano),
           "severityNumber": r.severity_number, "severityText": r.severity_text,
           "attributes": key_values(r.attributes)}
    if r.body is not None:
        out["body"] = any_value(r.body)
    name = getattr(r, "event_name", None)
    if name:
        out["eventName"] = name
    return out


def send(resource_logs, scope, records) -> bool:
    resource = resource_logs.resource
    body = {"resourceLogs": [{
        "resource": {"attributes": key_values(resource.attributes) if resource else []},
        "scopeLogs": [{"scope": {"name": scope.name if scope else ""},
                       "logRecords": [record_json(r) for r in records]}]}]}
    req = urllib.request.Request(f"{ALERTS}/v1/logs", data=json.dumps(body).encode(), method="POST",
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=TIMEOUT_S) as resp:
            return 200 <= resp.status < 300
    except OSError as exc:
        sys.stderr.write(f"route_alerts: alerts collector {ALERTS}: {exc}; kept in the audit stream\n")
        return False


def process_logs(resource_logs: ResourceLogs):
    if not ALERTS:
        return
    for scope_logs in resource_logs.scope_logs:
        alerts = [r for r in scope_logs.log_records if is_alert(r)]
        if alerts and send(resource_logs, scope_logs.scope, alerts):
            scope_logs.log_records = [r for r in scope_logs.log_records if not is_alert(r)]
