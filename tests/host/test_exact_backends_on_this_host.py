"""The exact backends on the dev/CI host (no VM): what can be checked here.

This kernel has no kprobes and refuses fentry, so the backends must say so in
one line; the BPF program still compiles and its kprobe programs pass this
kernel's verifier; and a ring record decodes into the Event a user sees,
including the inotify path resolved from a real inotifywait's watch.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

import pytest

from otel_fsnotify.backends import exact
from otel_fsnotify.backends.base import Filters
from otel_fsnotify.kernel.btf import Btf

REPO = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "otel_fsnotify"]
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")


def _backend(cls=exact.KprobeBackend) -> exact._ExactBackend:
    be = cls(Filters(), lambda e: None, logging.getLogger("test"))
    be._layout = exact.KernelLayout(Btf.load())
    return be


def _record(**kw) -> bytes:
    """A ring record as the BPF program writes it: HDR then the tail."""
    proc = lambda p, comm: (p, p, 1, 0, 0, 4026531840, comm, b"bash")  # noqa: E731
    f = dict(ts_boot=1_000, group=0xffff888000001000, i_ino=0, i_ino_dir=0,
             tracee=proc(100, b"touch"), tracer=proc(200, b"inotifywait"),
             kind=exact.KIND_INOTIFY, prio=0, i_wd=1, i_mask=0x100, i_cookie=0,
             fa_type=0, fa_mask=0, fa_pid=0, fa_flags=0, fa_f_flags=0, name_len=0,
             ts_now=2_000, rtype=exact.REC_EVENT, response=0, state=0, path_depth=0,
             path_complete=0, tail=b"")
    f.update(kw)
    tail = f.pop("tail")
    return exact.HDR.pack(
        f["ts_boot"], f["group"], f["i_ino"], f["i_ino_dir"], *f["tracee"], *f["tracer"],
        f["kind"], f["prio"], f["i_wd"], f["i_mask"], f["i_cookie"], f["fa_type"], f["fa_mask"],
        f["fa_pid"], f["fa_flags"], f["fa_f_flags"], f["name_len"], 0,
        f["ts_now"], f["rtype"], f["response"], f["state"], f["path_depth"], f["path_complete"],
        len(tail)) + tail


@pytest.mark.skipif(exact.kprobes_available() is None, reason="this kernel has kprobes")
def test_kprobe_backend_refuses_in_one_line():
    out = subprocess.run(AGENT + ["run", "--backend", "kprobe", "--output", "jsonl", "--duration", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "otel-fsnotify: error: this kernel has no kprobes (CONFIG_KPROBES is unset)"], out.stderr


@root
def test_fentry_backend_refuses_in_one_line():
    if exact.probe_fentry_load() is None:  # probed here, not at collection: it loads BPF
        pytest.skip("this kernel runs fentry; covered by the VM tests")
    out = subprocess.run(AGENT + ["run", "--backend", "fentry", "--output", "jsonl", "--duration", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert lines[0].startswith("otel-fsnotify: error: fentry") and "BPF_TRACE_FENTRY" in lines[0]


@root
def test_bpf_program_passes_this_kernels_verifier():
    """Compiled with this kernel's BTF offsets; the kprobe programs load (the
    verifier accepts the variable-size ring output and the path walk)."""
    from otel_fsnotify.kernel import bcc as bccenv

    be = _backend()
    b = bccenv.compile_bpf(exact.SOURCE, be._cflags())
    try:
        bcc = bccenv.import_bcc()
        for fn in ("on_inotify_handle_enter", "on_handle_return", "on_insert_enter",
                   "on_remove_first_enter", "on_remove_first_return", "on_destroy_enter"):
            assert b.load_func(fn.encode(), bcc.BPF.KPROBE).fd >= 0
        ring = exact.RingReader(b[b"events"].map_fd, exact.RINGBUF_PAGES * 4096)
        ring.close()
    finally:
        b.cleanup()


def test_decode_fanotify_path_and_interrupted_verdict():
    be = _backend()
    perm = be._layout.fa_type_path_perm
    raw = _record(kind=exact.KIND_FANOTIFY, fa_type=perm, fa_mask=0x10000, fa_pid=100,
                  rtype=exact.REC_RESPONSE, response=0, state=1, path_depth=3, path_complete=1,
                  tail=b"secret.txt\0etc\0srv\0")
    ev = be.decode(raw, 0, len(raw))
    assert ev.type == "fa_resp" and ev.fa_response == "interrupted"
    assert ev.name == ev.path == "/srv/etc/secret.txt"
    assert ev.fa_type == "FANOTIFY_EVENT_TYPE_PATH_PERM" and ev.fa_mask_names == ["FAN_OPEN_PERM"]
    assert ev.timestamp == 2_000 + be._offset  # a verdict's time is when it was answered
    assert ev.tracee_comm == "touch" and ev.tracer_comm == "inotifywait" and ev.tracee_pcomm == "bash"
    deep = _record(kind=exact.KIND_FANOTIFY, fa_type=perm, path_depth=2, path_complete=0,
                   tail=b"f\0d\0")
    ev = be.decode(deep, 0, len(deep))
    assert ev.name == ".../d/f" and ev.path == ""  # the head is unknown: no invented path


@root
def test_decode_inotify_path_from_a_real_watch(tmp_path):
    watched = tmp_path / "watched dir"
    watched.mkdir()
    tracer = subprocess.Popen(["inotifywait", "-m", str(watched)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE)
    try:
        for line in tracer.stderr:
            if b"Watches established" in line:
                break
        be = _backend()
        ino = os.stat(watched).st_ino
        raw = _record(tracer=(tracer.pid, tracer.pid, 1, 0, 0, 1, b"inotifywait", b"sh"),
                      i_ino_dir=ino, i_ino=42, tail=b"new file\0", name_len=9)
        ev = be.decode(raw, 0, len(raw))
        assert ev.type == "inotify" and ev.i_mask_names == ["IN_CREATE"]
        assert ev.name == "new file" and ev.path == f"{watched}/new file"
        assert ev.attribution == "exact" and ev.i_ino == 42 and ev.i_ino_dir == ino
        # a wd the tracer does not have: no path, counted
        other = _record(tracer=(tracer.pid, tracer.pid, 1, 0, 0, 1, b"inotifywait", b"sh"),
                        i_wd=7, tail=b"x\0")
        ev = be.decode(other, 0, len(other))
        assert ev.path == "" and be.counters()["inotify_path_unresolved"] == 1
    finally:
        tracer.terminate()
        tracer.wait(10)
