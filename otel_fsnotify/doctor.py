"""`otel-fsnotify doctor`: what this kernel and this process allow, tested for real.

Each check prints one line: name, ok/NO/warn, detail. The last line says which
backend `--backend auto` would pick and why. Exit 0 when some backend can run.
"""

from __future__ import annotations

import logging
import os
import platform

from .backends import BackendUnavailable, Filters, choose, ladder
from .backends.base import DEFAULT_RING_MIB
from .enrich.mirror import fid_mark_refusals
from .kernel import probes
from .kernel.bcc import BccError, describe_headers, import_bcc
from .kernel.btf import Btf, BtfError
from .kernel.layout import KernelLayout

_TRACEPOINT_PROBE = r"""
BPF_RINGBUF_OUTPUT(doctor_ring, 1);
TRACEPOINT_PROBE(syscalls, sys_enter_getppid) {
    u32 *slot = doctor_ring.ringbuf_reserve(sizeof(u32));
    if (!slot) return 0;
    *slot = bpf_get_current_pid_tgid() >> 32;
    doctor_ring.ringbuf_submit(slot, 0);
    return 0;
}
"""


def _lockdown() -> tuple[str, str]:
    path = "/sys/kernel/security/lockdown"
    if not os.path.exists("/sys/kernel/security/lsm"):
        os.system("mount -t securityfs securityfs /sys/kernel/security 2>/dev/null")
    try:
        with open(path) as fh:
            text = fh.read().strip()
        mode = text[text.index("[") + 1: text.index("]")] if "[" in text else text
        return ("ok" if mode == "none" else "warn"), f"{mode} ({text})"
    except OSError:
        return "warn", "unknown (no /sys/kernel/security/lockdown)"


def _btf() -> tuple[str, str]:
    try:
        btf = Btf.load()
    except BtfError as exc:
        return "NO", str(exc)
    layout = KernelLayout(btf)  # which names this kernel's version uses
    funcs = [f for f in (layout.insert_event, layout.inotify_handle, "fanotify_handle_event",
                         "fsnotify_remove_first_event", "fsnotify_destroy_event") if btf.has_func(f)]
    return "ok", f"/sys/kernel/btf/vmlinux; fsnotify functions: {', '.join(funcs) or 'none'}"


def _tracepoints() -> tuple[str, str]:
    """Really compile, load and attach a tracepoint + ring buffer program."""

    try:
        bcc = import_bcc()
        prog = bcc.BPF(text=_TRACEPOINT_PROBE.encode(), cflags=["-Wno-visibility"])
    except BccError as exc:
        return "NO", str(exc)
    except Exception as exc:  # bcc raises bare Exception
        return "NO", f"load failed: {str(exc).splitlines()[0]}"
    seen = []
    prog["doctor_ring"].open_ring_buffer(lambda _c, data, _s: seen.append(1))
    os.getppid()
    prog.ring_buffer_poll(200)
    prog.cleanup()
    if not seen:
        return "NO", "syscalls:sys_enter_getppid attached but no event arrived through the ring buffer"
    return "ok", "syscalls:sys_enter_getppid attached; ring buffer delivered events"


def _exact_checks() -> tuple[tuple[str, str], tuple[str, str]]:
    k = probes.kprobes_available()
    probes.lift_memlock_limit()  # as the agent does before loading (pre-5.11 accounting)
    f = probes.probe_fentry_load()
    return (("ok", "kprobe_events present") if k is None else ("NO", k),
            ("ok", "a fentry program loaded and attached") if f is None else ("NO", f))


def _fid_marks() -> tuple[str, str]:
    """Where the tracepoint backend's mirror can use file-handle marks."""
    try:
        probed, refused = fid_mark_refusals()
    except OSError as exc:
        return "NO", f"cannot create a file-handle fanotify group: {exc.strerror}"
    if not refused:
        return "ok", f"file-handle marks accepted on the {probed} filesystems mounted here"
    parts = []
    partial = [f"{t} at {p} ({e})" for t, p, e in refused if e != "EOPNOTSUPP"]
    none = [f"{t} at {p}" for t, p, e in refused if e == "EOPNOTSUPP"]
    if partial:
        parts.append(f"refused on {', '.join(partial)}: there the tracepoint backend attributes only "
                     "open, access, modify and close of inotify watches (no create, delete, move, "
                     "attrib, rename pairs)")
    if none:
        parts.append(f"no file handles at all on {', '.join(none)} (EOPNOTSUPP): inotify watches there "
                     "are not attributed by the tracepoint backend (mirror_mark_failed)")
    return "warn", "; ".join(parts)


def checks() -> list[tuple[str, str, str]]:
    rows = [("kernel", "ok", f"{platform.release()} ({platform.machine()})")]
    ok, detail = probes.capabilities()
    rows.append(("capabilities", "ok" if ok else "NO", detail))
    rows.append(("lockdown", *_lockdown()))
    rows.append(("btf", *_btf()))
    rows.append(("kernel headers", "ok", describe_headers()))
    rows.append(("tracepoints", *_tracepoints()))
    rows.append(("fanotify fids", *_fid_marks()))
    kprobe, fentry = _exact_checks()
    rows.append(("kprobes", *kprobe))
    rows.append(("fentry/fexit", *fentry))
    return rows


def auto_choice(rows: list[tuple[str, str, str]]) -> tuple[str | None, str]:
    """The backend `run --backend auto` would start, and why: the backends'
    own ladder, after the checks above (a tracepoint program that did not
    load here would not load for the backend either)."""
    status = {name: (st, detail) for name, st, detail in rows}
    skipped = []
    for name, _cls, reason in ladder("auto"):
        st, detail = status.get(RUNG_CHECK[name], ("ok", ""))
        if st != "ok":
            reason = detail  # the real load above says more than the cheap probe
        if reason:
            skipped.append(f"{name}: {reason}")
            continue
        return name, ("; ".join(skipped) + " -> " if skipped else "") + f"{name} loads"
    return None, "; ".join(skipped)


# the check of checks() each rung of the ladder needs
RUNG_CHECK = {"fentry": "fentry/fexit", "kprobe": "kprobes", "tracepoint": "tracepoints"}


MAP_BUDGET_MIB = 8  # the agent's BPF maps by default, at most


def bpf_memory(backend: str, ring_mib: int = DEFAULT_RING_MIB) -> tuple[str, str]:
    """The kernel memory the backend's maps take, measured: it is started
    (compiled, loaded, attached) and stopped again."""
    log = logging.getLogger("otel_fsnotify.doctor")
    log.setLevel(logging.WARNING)
    try:
        be = choose(backend, Filters(), log, ring_mib=ring_mib)
    except BackendUnavailable as exc:
        return "NO", f"{backend} did not start: {exc}"
    try:
        mem = probes.bpf_map_memory()
    finally:
        be.close()
    mib = mem.total / (1 << 20)
    return ("ok" if mib <= MAP_BUDGET_MIB else "warn",
            f"{mib:.1f} MiB in {mem.maps} maps for {backend}, of which the ring buffer "
            f"{mem.ring / (1 << 20):.1f} MiB (ring_buffer_mib = {ring_mib}; larger loses fewer "
            f"events in a burst)")


def main() -> int:
    rows = checks()
    for name, st, detail in rows:
        print(f"{name:<15} {st:<4} {detail}")
    choice, why = auto_choice(rows)
    print(f"{'auto backend':<15} {'ok' if choice else 'NO':<4} "
          + (f"{choice} (because {why})" if choice else f"none can run: {why}"))
    if choice:
        st, detail = bpf_memory(choice)
        print(f"{'bpf memory':<15} {st:<4} {detail}")
    return 0 if choice else 1
