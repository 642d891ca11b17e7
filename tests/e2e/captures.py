"""Synthetic jsonl captures (the `run --output jsonl` format) for replay tests."""

from __future__ import annotations

import time

from otel_fsnotify.event import Event, to_json_line


def sample_events(n: int, start_ns: int | None = None):
    """n varied events: inotify, fanotify, fa_resp allow/deny."""
    t0 = start_ns or time.time_ns()
    kinds = ("inotify", "fanotify", "fa_resp")
    for i in range(n):
        kind = kinds[i % 3]
        if kind == "inotify":
            yield Event(timestamp=t0 + i, type="inotify", tracer_pid=100, tracer_tid=100, tracer_ppid=1,
                        tracer_comm="inotifywait", tracer_exe="/usr/bin/inotifywait",
                        tracee_pid=2000 + i % 50, tracee_tid=2000 + i % 50, tracee_ppid=1999,
                        tracee_uid=1000, tracee_gid=1000, tracee_comm="touch", tracee_pcomm="bash",
                        tracee_exe="/usr/bin/touch", tracee_mntns_id=4026531841,
                        i_wd=1, i_mask=0x100, i_mask_names=["IN_CREATE"], i_ino=1000 + i, i_ino_dir=42,
                        name=f"f{i}", path=f"/watched/f{i}", attribution="inferred")
        elif kind == "fanotify":
            yield Event(timestamp=t0 + i, type="fanotify", tracer_pid=300, tracer_comm="fanotify_listen",
                        tracee_pid=4000, tracee_comm="cat", tracee_container_id="c0ffee",
                        fa_type="FANOTIFY_EVENT_TYPE_PATH", fa_mask=0x20, fa_mask_names=["FAN_OPEN"],
                        fa_pid=4000, name=f"/etc/f{i}", attribution="exact")
        else:
            yield Event(timestamp=t0 + i, type="fa_resp", tracer_pid=300, tracer_comm="fapolicyd",
                        tracee_pid=4001, tracee_comm="cat", fa_type="FANOTIFY_EVENT_TYPE_PATH_PERM",
                        fa_mask=0x10000, fa_mask_names=["FAN_OPEN_PERM"],
                        fa_response="deny" if i % 2 else "allow", name=f"/secret/f{i}",
                        attribution="exact")


def write_capture(path, n: int) -> str:
    with open(path, "wb") as fh:
        for ev in sample_events(n):
            fh.write(to_json_line(ev))
    return str(path)
