"""The event schema and mask decoding, as a user of jsonl and --fields sees them."""

import json

import pytest

from otel_fsnotify import masks
from otel_fsnotify.event import FIELD_NAMES, CaptureError, Event, from_json_line, iter_capture, to_json_line

DESIGN_FIELDS = """timestamp type tracer_pid tracer_tid tracer_ppid tracer_uid tracer_gid tracer_ruid tracer_suid
tracer_mntns_id
tracer_comm tracer_pcomm tracer_exe tracee_pid tracee_tid tracee_ppid tracee_uid tracee_gid tracee_ruid
tracee_suid
tracee_mntns_id tracee_comm tracee_pcomm tracee_exe tracee_container_id tracee_container_runtime
tracee_pod_uid tracee_pod_namespace tracee_pod_name tracee_cgroup prio i_wd i_mask i_cookie
i_ino i_ino_dir i_mask_names fa_type fa_mask fa_pid fa_flags fa_f_flags fa_mask_names fa_response
name path host_path attribution action origin old_path file_size file_mode file_uid file_gid file_mtime
file_ino file_hashes hash_skipped tags severity rules""".split()


def test_schema_has_exactly_the_design_fields():
    assert sorted(FIELD_NAMES) == sorted(DESIGN_FIELDS)


def test_jsonl_round_trip_keeps_every_field_and_64bit_inodes():
    ev = Event(timestamp=1_700_000_000_123_456_789, type="inotify", tracer_comm="inotifywait",
               tracee_comm="touch", tracee_pid=42, i_mask=0x08000020, i_ino=2**63 + 5,
               i_mask_names=["IN_OPEN", "FS_EVENT_ON_CHILD"], name="ABCDE", attribution="exact")
    line = to_json_line(ev)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    assert json.loads(line)["i_ino"] == 2**63 + 5
    assert from_json_line(line) == ev


def test_unknown_field_in_capture_is_an_error_naming_file_and_line(tmp_path):
    cap = tmp_path / "cap.jsonl"
    cap.write_bytes(to_json_line(Event()) + b"\n" + b'{"type":"inotify","bogus":1}\n')
    it = iter_capture(str(cap))
    assert next(it)[0] == 1
    with pytest.raises(CaptureError, match=r"cap\.jsonl:3: .*bogus"):
        next(it)


def test_seed_mask_examples_decode_with_internal_bits_named():
    # The seed gadget's README: 0x08000020 = FS_OPEN | FS_EVENT_ON_CHILD
    assert masks.inotify_mask_names(134217760) == ["IN_OPEN", "FS_EVENT_ON_CHILD"]
    assert masks.inotify_mask_names(134217732) == ["IN_ATTRIB", "FS_EVENT_ON_CHILD"]
    assert masks.inotify_mask_names(134217736) == ["IN_CLOSE_WRITE", "FS_EVENT_ON_CHILD"]


def test_unnamed_bits_are_shown_not_dropped():
    assert masks.inotify_mask_names(0x00800000 | 0x1) == ["IN_ACCESS", "0x00800000"]
    assert masks.fanotify_mask_names(0x00010000 | 0x40000000) == ["FAN_OPEN_PERM", "FAN_ONDIR"]
    assert masks.inotify_mask_names(0x4000) == ["IN_Q_OVERFLOW"]


def test_actions_and_responses():
    assert masks.action(0x100 | 0x40000000) == "create"
    assert masks.action(0x40) == "rename"
    assert masks.action(0x8) == "close_write"
    assert masks.action(0x4000) == "overflow"
    assert masks.action(0x10000, fanotify=True) == "open"
    assert masks.action(0x8000, fanotify=True) == "error"
    assert masks.fa_response_name(1) == "allow"
    assert masks.fa_response_name(2) == "deny"
    assert masks.fa_response_name(0x10 | 2) == "deny"  # FAN_AUDIT | FAN_DENY
    assert masks.fanotify_event_type_name(3) == "FANOTIFY_EVENT_TYPE_PATH_PERM"
