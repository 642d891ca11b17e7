"""`otel-fsnotify doctor`: what this kernel and this process allow, tested for real.

Each check prints one line: name, ok/NO/warn, detail. The last line says which
backend `--backend auto` would pick and why. Exit 0 when some backend can run.
"""

from __future__ import annotations

import os
import platform

from .kernel import bcc as kbcc
from .backends import AUTO_ORDER, backend_class
from .backends.base import BackendUnavailable

# include/uapi/linux/capability.h
CAPS = {"CAP_SYS_ADMIN": 21, "CAP_BPF": 39, "CAP_PERFMON": 38,
        "CAP_DAC_READ_SEARCH": 2, "CAP_SYS_PTRACE": 19}

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


def _caps() -> tuple[bool, str]:
    eff = 0
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("CapEff:"):
                eff = int(line.split()[1], 16)
    have = [n for n, bit in CAPS.items() if eff >> bit & 1]
    missing = [n for n in CAPS if n not in have]
    ok = "CAP_SYS_ADMIN" in have or {"CAP_BPF", "CAP_PERFMON"} <= set(have)
    detail = "has " + (", ".join(have) or "none") + ("; missing " + ", ".join(missing) if missing else "")
    return ok, detail


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
    from .kernel.btf import Btf, BtfError

    try:
        btf = Btf.load()
    except BtfError as exc:
        return "NO", str(exc)
    funcs = [f for f in ("fsnotify_insert_event", "fsnotify_add_event", "inotify_handle_inode_event",
                         "inotify_handle_event", "fanotify_handle_event",
                         "fsnotify_remove_first_event", "fsnotify_destroy_event") if btf.has_func(f)]
    return "ok", f"/sys/kernel/btf/vmlinux; fsnotify functions: {', '.join(funcs) or 'none'}"


def _tracepoints() -> tuple[str, str]:
    """Really compile, load and attach a tracepoint + ring buffer program."""
    from .kernel.bcc import BccError, import_bcc

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
    try:
        from .backends import exact
    except ImportError as exc:
        reason = f"exact backends not built in this version ({exc})"
        return ("NO", reason), ("NO", reason)
    k = exact.kprobes_available()
    f = exact.probe_fentry_load()
    return (("ok", "kprobe_events present") if k is None else ("NO", k),
            ("ok", "a fentry program loaded and attached") if f is None else ("NO", f))


def checks() -> list[tuple[str, str, str]]:
    rows = [("kernel", "ok", f"{platform.release()} ({platform.machine()})")]
    ok, detail = _caps()
    rows.append(("capabilities", "ok" if ok else "NO", detail))
    rows.append(("lockdown", *_lockdown()))
    rows.append(("btf", *_btf()))
    rows.append(("kernel headers", "ok", kbcc.describe_headers()))
    rows.append(("tracepoints", *_tracepoints()))
    kprobe, fentry = _exact_checks()
    rows.append(("kprobes", *kprobe))
    rows.append(("fentry/fexit", *fentry))
    return rows


def auto_choice(rows: list[tuple[str, str, str]]) -> tuple[str | None, str]:
    status = {name: (st, detail) for name, st, detail in rows}
    needs = {"fentry": "fentry/fexit", "kprobe": "kprobes", "tracepoint": "tracepoints"}
    skipped = []
    for name in AUTO_ORDER:
        st, detail = status[needs[name]]
        if st != "ok":
            skipped.append(f"{name}: {detail}")
            continue
        try:
            reason = backend_class(name).probe()
        except BackendUnavailable as exc:
            reason = str(exc)
        if reason:
            skipped.append(f"{name}: {reason}")
            continue
        return name, ("; ".join(skipped) + " -> " if skipped else "") + f"{name} loads"
    return None, "; ".join(skipped)


def main() -> int:
    rows = checks()
    for name, st, detail in rows:
        print(f"{name:<15} {st:<4} {detail}")
    choice, why = auto_choice(rows)
    print(f"{'auto backend':<15} {'ok' if choice else 'NO':<4} "
          + (f"{choice} (because {why})" if choice else f"none can run: {why}"))
    return 0 if choice else 1
