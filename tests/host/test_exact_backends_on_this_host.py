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
from otel_fsnotify.backends.exact.records import (
    KIND_FANOTIFY, OUT_EVENT, REC_RESPONSE, Decoder)
from otel_fsnotify.enrich.procs import ProcTable
from otel_fsnotify.enrich.watches import WatchPaths
from otel_fsnotify.kernel import bcc
from otel_fsnotify.kernel.layout import KernelLayout
from otel_fsnotify.kernel.probes import kprobes_available, probe_fentry_load
from otel_fsnotify.kernel.ringbuf import RingReader
from otel_fsnotify.kernel.records import ROOT_NOT_PASSED

REPO = Path(__file__).resolve().parents[2]
AGENT = [sys.executable, "-m", "otel_fsnotify"]
root = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (BPF)")


def _decoder() -> Decoder:
    return Decoder(KernelLayout.load(), WatchPaths(), ProcTable())


def _proc(prefix: str, pid: int, comm: bytes, pcomm: bytes = b"bash") -> dict:
    return {f"{prefix}_pid": pid, f"{prefix}_tid": pid, f"{prefix}_ppid": 1,
            f"{prefix}_mntns_id": 4026531840, f"{prefix}_comm": comm, f"{prefix}_pcomm": pcomm}


def _record(tail: bytes = b"", **kw) -> bytes:
    """A ring record as the BPF program writes it: OUT_EVENT then the tail."""
    f = dict(ts_boot=1_000, group=0xffff888000001000, **_proc("tracee", 100, b"touch"),
             **_proc("tracer", 200, b"inotifywait"), kind=1, i_wd=1, i_mask=0x100,
             ts_now=2_000, rtype=1, walk_root_depth=ROOT_NOT_PASSED)
    f.update(kw)
    return OUT_EVENT.pack(**f, tail_len=len(tail)) + tail


@pytest.mark.skipif(kprobes_available() is None, reason="this kernel has kprobes")
def test_kprobe_backend_refuses_in_one_line():
    out = subprocess.run(AGENT + ["run", "--backend", "kprobe", "--output", "jsonl", "--duration", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    assert out.returncode != 0
    assert out.stderr.strip().splitlines() == [
        "otel-fsnotify: error: this kernel has no kprobes (CONFIG_KPROBES is unset)"], out.stderr


@root
def test_fentry_backend_refuses_in_one_line():
    if probe_fentry_load() is None:  # probed here, not at collection: it loads BPF
        pytest.skip("this kernel runs fentry; covered by the VM tests")
    out = subprocess.run(AGENT + ["run", "--backend", "fentry", "--output", "jsonl", "--duration", "1"],
                         capture_output=True, text=True, cwd=REPO, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode != 0 and len(lines) == 1, out.stderr
    assert lines[0].startswith("otel-fsnotify: error: fentry") and "BPF_TRACE_FENTRY" in lines[0]


EVERY_FILTER = Filters(tracer_pids=(1,), tracee_pids=(2,), tracer_group=0xffff888000001000,
                      inotify_only=True, tracer_comms=("inotifywait",), tracee_comms=("cat",),
                      exclude_comms=("sshd",), tracee_uids=(0,))


@root
@pytest.mark.parametrize("filters", [Filters(), EVERY_FILTER], ids=["no filter", "every filter"])
def test_bpf_program_passes_this_kernels_verifier(filters):
    """Compiled with this kernel's BTF offsets; the kprobe programs load (the
    verifier accepts the variable-size ring output, the path walk and the
    filter map lookups)."""
    be = exact.KprobeBackend(filters, logging.getLogger("test"))
    b = bcc.compile_bpf(exact.SOURCE, be._cflags(KernelLayout.load()))
    try:
        BPF = bcc.import_bcc().BPF
        for fn in ("on_inotify_handle_enter", "on_handle_return", "on_insert_enter",
                   "on_remove_first_enter", "on_remove_first_return", "on_destroy_enter"):
            assert b.load_func(fn.encode(), BPF.KPROBE).fd >= 0
        ring = RingReader(b[b"events"].map_fd, be.ring_bytes)
        ring.close()
    finally:
        b.cleanup()


def test_decode_fanotify_path_and_interrupted_verdict():
    dec = _decoder()
    perm = dec.layout.fa_type_path_perm
    raw = _record(kind=KIND_FANOTIFY, fa_type=perm, fa_mask=0x10000, fa_pid=100,
                  rtype=REC_RESPONSE, response=0, state=1, walk_depth=3, walk_complete=1,
                  tail=b"secret.txt\0etc\0srv\0")
    ev = dec.decode(raw, 0, len(raw))
    assert ev.type == "fa_resp" and ev.fa_response == "interrupted"
    assert ev.name == ev.path == "/srv/etc/secret.txt"
    assert ev.fa_type == "FANOTIFY_EVENT_TYPE_PATH_PERM" and ev.fa_mask_names == ["FAN_OPEN_PERM"]
    assert ev.timestamp == 2_000 + dec.offset  # a verdict's time is when it was answered
    assert ev.tracee_comm == "touch" and ev.tracer_comm == "inotifywait" and ev.tracee_pcomm == "bash"
    deep = _record(kind=KIND_FANOTIFY, fa_type=perm, walk_depth=2, walk_complete=0,
                   tail=b"f\0d\0")
    ev = dec.decode(deep, 0, len(deep))
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
        dec = _decoder()
        ino = os.stat(watched).st_ino
        raw = _record(**_proc("tracer", tracer.pid, b"inotifywait", b"sh"),
                      i_ino_dir=ino, i_ino=42, tail=b"new file\0", name_len=9)
        ev = dec.decode(raw, 0, len(raw))
        assert ev.type == "inotify" and ev.i_mask_names == ["IN_CREATE"]
        assert ev.name == "new file" and ev.path == f"{watched}/new file"
        assert ev.attribution == "exact" and ev.i_ino == 42 and ev.i_ino_dir == ino
        # a wd the tracer does not have: no path, counted
        other = _record(**_proc("tracer", tracer.pid, b"inotifywait", b"sh"), i_wd=7, tail=b"x\0")
        ev = dec.decode(other, 0, len(other))
        assert ev.path == "" and dec.watch_paths.unresolved == 1
    finally:
        tracer.terminate()
        tracer.wait(10)
