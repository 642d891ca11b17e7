"""Unit tests: Event -> OTLP log record mapping, resource, settings, spool."""

from __future__ import annotations

import json

import os

import msgspec
import pytest

from otel_fsnotify.otel import mapping as otel_map, resource as otel_resource
from otel_fsnotify.delivery.outcome import parse_retry_after
from otel_fsnotify.delivery.sdk import SdkExporter
from otel_fsnotify.otel import otlp_json
from otel_fsnotify.otel.otlp_json import JsonEncoder
from otel_fsnotify.delivery.settings import OtlpSettings, SettingsError
from otel_fsnotify.otel.entry import LogEntry
from otel_fsnotify.event import Event

INOTIFY = Event(timestamp=1_700_000_000_000_000_001, type="inotify",
                tracer_pid=10, tracer_tid=11, tracer_ppid=1, tracer_uid=1000, tracer_gid=1001,
                tracer_mntns_id=4026531841, tracer_comm="inotifywait", tracer_pcomm="bash",
                tracer_exe="/usr/bin/inotifywait",
                tracee_pid=20, tracee_tid=21, tracee_ppid=19, tracee_uid=0, tracee_gid=0,
                tracee_mntns_id=4026532000, tracee_comm="touch", tracee_pcomm="sh",
                tracee_exe="/usr/bin/touch", tracee_container_id="abc123",
                prio=0, i_wd=3, i_mask=0x40000100, i_cookie=0, i_ino=2**64 - 2, i_ino_dir=77,
                i_mask_names=["IN_CREATE", "IN_ISDIR"], name="newdir", path="/srv/data/newdir",
                attribution="inferred")

DENY = Event(timestamp=5, type="fa_resp", tracer_pid=30, tracer_comm="fapolicyd",
             tracee_pid=40, tracee_comm="cat", fa_type="FANOTIFY_EVENT_TYPE_PATH_PERM",
             fa_mask=0x10000, fa_mask_names=["FAN_OPEN_PERM"], fa_response="deny",
             name="/etc/shadow", attribution="exact")


def test_inotify_record_semconv_and_watcher_attributes():
    a = otel_map.attributes(INOTIFY, uid="U1")
    assert a["process.pid"] == 20
    assert a["process.parent_pid"] == 19
    assert a["process.executable.name"] == "touch"
    assert a["process.executable.path"] == "/usr/bin/touch"
    assert a["process.user.id"] == 0  # root is a fact when the process is known
    assert a["fsnotify.tracee.gid"] == 0
    assert "container.id" not in a  # a resource attribute: one ResourceLogs per container
    assert otel_map.resource_of(INOTIFY) == (("container.id", "abc123"),)
    assert a["file.path"] == "/srv/data/newdir"
    assert a["file.name"] == "newdir"
    assert a["file.directory"] == "/srv/data"
    assert a["file.inode"] == str(2**64 - 2)  # string per semconv, beyond int64
    assert a["fsnotify.watcher.pid"] == 10
    assert a["fsnotify.watcher.tid"] == 11
    assert a["fsnotify.watcher.parent_pid"] == 1
    assert a["fsnotify.watcher.executable.name"] == "inotifywait"
    assert a["fsnotify.watcher.executable.path"] == "/usr/bin/inotifywait"
    assert a["fsnotify.watcher.user.id"] == 1000
    assert a["fsnotify.watcher.group.id"] == 1001
    assert a["fsnotify.watcher.mntns_id"] == 4026531841
    assert a["fsnotify.type"] == "inotify"
    assert a["fsnotify.mask"] == 0x40000100
    assert a["fsnotify.mask.names"] == ["IN_CREATE", "IN_ISDIR"]
    assert a["fsnotify.action"] == "create"
    assert a["fsnotify.inotify.wd"] == 3
    assert "fsnotify.inotify.cookie" not in a  # 0 = none, not invented
    assert a["fsnotify.attribution"] == "inferred"
    assert a["log.record.uid"] == "U1"
    assert "process.command_line" not in a
    assert otel_map.event_name(INOTIFY) == "fsnotify.inotify"
    assert otel_map.severity(INOTIFY) == (9, "INFO")
    assert otel_map.body(INOTIFY) == "touch (pid 20) create /srv/data/newdir; read by inotifywait (pid 10)"


def test_deny_is_warn_with_verdict_in_body():
    assert otel_map.severity(DENY) == (13, "WARN")
    assert otel_map.event_name(DENY) == "fsnotify.fanotify.response"
    a = otel_map.attributes(DENY)
    assert a["fsnotify.fanotify.response"] == "deny"
    assert a["fsnotify.fanotify.type"] == "FANOTIFY_EVENT_TYPE_PATH_PERM"
    assert a["file.path"] == "/etc/shadow"
    assert a["fsnotify.action"] == "open"
    assert "denied" in otel_map.body(DENY) and "cat (pid 40)" in otel_map.body(DENY)
    allow = Event(type="fa_resp", fa_response="allow")
    assert otel_map.severity(allow) == (9, "INFO")


def test_unknown_tracee_gets_no_process_attributes():
    ev = Event(type="inotify", tracer_pid=5, tracer_comm="w", i_mask=2, name="f", attribution="unknown")
    a = otel_map.attributes(ev)
    assert not any(k.startswith("process.") for k in a)
    assert a["file.name"] == "f" and "file.path" not in a
    assert a["fsnotify.attribution"] == "unknown"
    assert "unknown process" in otel_map.body(ev)


def test_command_line_only_when_enabled():
    assert "process.command_line" not in otel_map.attributes(INOTIFY, command_line="touch x")
    a = otel_map.attributes(INOTIFY, command_line="touch x", include_command_line=True)
    assert a["process.command_line"] == "touch x"


def test_json_and_protobuf_paths_send_the_same_attributes():
    entry = LogEntry("U9", 123, INOTIFY)
    res = otel_resource.build_resource("tracepoint", environ={})
    body = JsonEncoder(res).encode([entry])
    json_rec = msgspec.json.decode(body, type=otlp_json.ExportLogsServiceRequest) \
        .resourceLogs[0].scopeLogs[0].logRecords[0]
    settings = OtlpSettings.from_env({}, protocol="http/protobuf", endpoint="http://127.0.0.1:9")
    sdk_rec = SdkExporter(settings, res).to_sdk(entry).log_record
    assert [kv.key for kv in json_rec.attributes] == list(sdk_rec.attributes.keys())
    assert json_rec.eventName == sdk_rec.event_name == "fsnotify.inotify"
    assert json_rec.timeUnixNano == str(sdk_rec.timestamp)
    assert json_rec.observedTimeUnixNano == "123" and sdk_rec.observed_timestamp == 123
    assert sdk_rec.severity_number.value == json_rec.severityNumber == 9


def test_resource_defaults_and_env(tmp_path):
    r = otel_resource.build_resource("tracepoint", environ={})
    assert r["service.name"] == "otel-fsnotify"
    assert r["service.version"]
    assert r["host.name"]
    assert r["fsnotify.backend"] == "tracepoint"
    if os.path.exists("/etc/machine-id"):
        assert r["host.id"] == open("/etc/machine-id").read().strip()
    r = otel_resource.build_resource("kprobe", environ={
        "OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=prod,team=a%2Cb,service.name=from-attrs,bad",
        "OTEL_SERVICE_NAME": "fim-agent"})
    assert r["deployment.environment"] == "prod"
    assert r["team"] == "a,b"
    assert r["service.name"] == "fim-agent"  # OTEL_SERVICE_NAME wins
    r = otel_resource.build_resource("", environ={"OTEL_RESOURCE_ATTRIBUTES": "service.name=x"})
    assert r["service.name"] == "x" and "fsnotify.backend" not in r


def test_settings_env_precedence_and_overrides():
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://a:4318", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
           "OTEL_EXPORTER_OTLP_LOGS_PROTOCOL": "http/json", "OTEL_EXPORTER_OTLP_TIMEOUT": "2500",
           "OTEL_EXPORTER_OTLP_HEADERS": "api-key=s%3Dcret, x=1", "OTEL_EXPORTER_OTLP_COMPRESSION": "gzip"}
    s = OtlpSettings.from_env(env)
    assert s.protocol == "http/json"  # LOGS_ wins over the generic variable
    assert s.timeout == 2.5
    assert s.headers == {"api-key": "s=cret", "x": "1"}
    assert s.compression == "gzip"
    assert s.logs_url() == "http://a:4318/v1/logs"
    s = OtlpSettings.from_env(env, protocol="grpc", endpoint="http://b:4317", batch_size=10, timeout=None)
    assert (s.protocol, s.logs_url(), s.batch_size, s.timeout) == ("grpc", "http://b:4317", 10, 2.5)
    s = OtlpSettings.from_env({"OTEL_EXPORTER_OTLP_LOGS_ENDPOINT": "https://c/custom/logs"})
    assert s.logs_url() == "https://c/custom/logs"
    s = OtlpSettings.from_env({"OTEL_EXPORTER_OTLP_INSECURE": "true"}, protocol="grpc", endpoint="c:4317")
    assert s.logs_url() == "http://c:4317"


@pytest.mark.parametrize("env,over,key", [
    ({"OTEL_EXPORTER_OTLP_PROTOCOL": "thrift"}, {}, "otlp.protocol"),
    ({"OTEL_EXPORTER_OTLP_TIMEOUT": "soon"}, {}, "OTEL_EXPORTER_OTLP_TIMEOUT"),
    ({"OTEL_EXPORTER_OTLP_HEADERS": "novalue"}, {}, "OTEL_EXPORTER_OTLP_HEADERS"),
    ({"OTEL_EXPORTER_OTLP_INSECURE": "maybe"}, {}, "OTEL_EXPORTER_OTLP_INSECURE"),
    ({}, {"batch_size": "many"}, "otlp.batch_size"),
    ({}, {"batch_size": 0}, "otlp.batch_size"),
    ({}, {"compression": "zstd"}, "otlp.compression"),
    ({}, {"endpoint": "ftp://x"}, "otlp.endpoint"),
    ({}, {"certificate": "/nonexistent/ca.pem"}, "otlp.certificate"),
    ({}, {"spool_max_bytes": 10}, "otlp.spool_max_bytes"),
    ({}, {"no_such_key": 1}, "otlp.no_such_key"),
])
def test_bad_settings_give_one_line_naming_the_key(env, over, key):
    with pytest.raises(SettingsError) as exc:
        OtlpSettings.from_env(env, **over)
    msg = str(exc.value)
    assert isinstance(exc.value, ValueError)
    assert key in msg and "\n" not in msg


def test_retry_after_parsing():
    assert parse_retry_after("3") == 3.0
    assert parse_retry_after(None) is None
    assert parse_retry_after("garbage") is None
    assert 0 <= parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0


def test_unknown_tid_is_left_out_not_copied_from_the_pid():
    from otel_fsnotify.event import Event
    from otel_fsnotify.otel.mapping import attributes

    a = attributes(Event(type="inotify", tracee_pid=10, tracer_pid=20, tracer_tid=21, name="x"))
    assert "fsnotify.tracee.tid" not in a
    assert a["fsnotify.watcher.tid"] == 21


def test_bare_pid_does_not_claim_root():
    from otel_fsnotify.event import Event
    from otel_fsnotify.otel.mapping import attributes

    a = attributes(Event(type="fanotify", tracee_pid=77, name="/etc/x"))
    assert a["process.pid"] == 77
    assert "process.user.id" not in a and "fsnotify.tracee.gid" not in a
    b = attributes(Event(type="fanotify", tracee_pid=77, tracee_comm="cat", name="/etc/x"))
    assert b["process.user.id"] == 0  # identity read from the task: uid 0 is root


def test_a_watch_mode_change_maps_to_file_semconv_hashes_and_its_paths_severity():
    from otel_fsnotify.otel.mapping import attributes, body, event_name, severity

    ev = Event(timestamp=1, type="fim", action="renamed", origin="live", path="/etc/app/new.conf",
               old_path="/etc/app/new.conf.tmp", name="new.conf", file_size=12, file_mode=0o100640,
               file_uid=0, file_gid=42, file_mtime=1_700_000_000_500_000_000, file_ino=77,
               file_hashes={"sha256": "ab" * 32, "md5": "cd" * 16}, tags=["pci"], severity="error",
               tracee_pid=9, tracee_comm="sed", attribution="exact", fa_mask=0x10000000,
               fa_mask_names=["FAN_RENAME"])
    a = attributes(ev)
    assert event_name(ev) == "fsnotify.fim" and severity(ev) == (17, "ERROR")
    assert {k: a[k] for k in ("file.path", "file.name", "file.directory", "file.size", "file.mode",
                              "file.owner.id", "file.group.id", "file.modified", "file.inode")} == {
        "file.path": "/etc/app/new.conf", "file.name": "new.conf", "file.directory": "/etc/app",
        "file.size": 12, "file.mode": "0640", "file.owner.id": "0", "file.group.id": "42",
        "file.modified": "2023-11-14T22:13:20.500000000Z", "file.inode": "77"}
    assert a["file.hash.sha256"] == "ab" * 32 and a["file.hash.md5"] == "cd" * 16
    assert (a["fsnotify.action"], a["fsnotify.origin"], a["fsnotify.old_path"], a["fsnotify.tags"]) == (
        "renamed", "live", "/etc/app/new.conf.tmp", ["pci"])
    assert a["process.pid"] == 9 and not any(k.startswith("fsnotify.watcher.") for k in a)
    assert body(ev) == "renamed /etc/app/new.conf (was /etc/app/new.conf.tmp) by sed (pid 9)"
    scan = Event(type="fim", action="deleted", origin="scan", path="/etc/old")
    assert body(scan) == "deleted /etc/old: found by comparing with the baseline"
    assert "file.size" not in attributes(scan) and severity(scan) == (9, "INFO")


def test_the_actor_is_named_by_its_executable_and_its_effective_uid():
    ev = Event(type="fim", action="modified", path="/etc/x", tracee_pid=9, tracee_comm="sh",
               tracee_exe="/usr/bin/dash", tracee_uid=1234, tracee_ruid=0, tracee_suid=1234)
    a = otel_map.attributes(ev)
    assert (a["process.executable.name"], a["process.executable.path"], a["process.command"]) == (
        "dash", "/usr/bin/dash", "sh")
    assert (a["process.user.id"], a["process.real_user.id"], a["process.saved_user.id"]) == (1234, 0, 1234)
    unknown = otel_map.attributes(Event(type="fim", action="modified", path="/etc/x", tracee_pid=9))
    assert "process.user.id" not in unknown and "process.executable.name" not in unknown


@pytest.mark.parametrize("encoder", ["json", "proto"])
def test_records_are_grouped_into_one_resource_per_container(encoder):
    from otel_fsnotify.otel.otlp_proto import ProtoEncoder

    pod = "1b2c3d4e-0000-4000-8000-123456789abc"
    a = dict(tracee_container_id="a" * 64, tracee_container_runtime="containerd", tracee_pod_uid=pod)
    b = dict(tracee_container_id="b" * 64, tracee_container_runtime="cri-o")
    evs = [Event(name="1", **a), Event(name="2"), Event(name="3", **b), Event(name="4", **a)]
    entries = [LogEntry(f"u{i}", 1, ev) for i, ev in enumerate(evs)]
    base = {"service.name": "otel-fsnotify", "host.name": "n1"}
    if encoder == "json":
        req = json.loads(JsonEncoder(base).encode(entries))["resourceLogs"]
        groups = [({kv["key"]: list(kv["value"].values())[0] for kv in rl["resource"]["attributes"]},
                   [r["attributes"] for r in rl["scopeLogs"][0]["logRecords"]]) for rl in req]
    else:
        req = ProtoEncoder(base).request(entries).resource_logs
        groups = [({kv.key: kv.value.string_value for kv in rl.resource.attributes},
                   list(rl.scope_logs[0].log_records)) for rl in req]
    assert [len(records) for _res, records in groups] == [2, 1, 1]
    first, plain, crio = (res for res, _records in groups)
    assert first == {**base, "container.id": "a" * 64, "container.runtime": "containerd", "k8s.pod.uid": pod}
    assert plain == base
    assert crio == {**base, "container.id": "b" * 64, "container.runtime": "cri-o"}
