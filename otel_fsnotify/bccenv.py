"""Prepare the host for bcc and load BPF programs: the only module importing bcc.

bcc picks its tracefs path when it is imported, and needs a kernel headers tree
(kheaders.py), so both are made ready first.
"""

from __future__ import annotations

import os

from . import kheaders

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "bpf")
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class BccError(RuntimeError):
    """bcc missing, or a BPF program that will not compile, load or attach."""


def tracefs_path() -> str | None:
    for path in TRACEFS_DIRS:
        if os.path.exists(os.path.join(path, "events")):
            return path
    return None


def ensure_tracefs() -> str:
    path = tracefs_path()
    if path:
        return path
    try:
        os.makedirs("/sys/kernel/tracing", exist_ok=True)
        if os.system("mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null") != 0:
            raise OSError("mount failed")
    except OSError:
        raise BccError("tracefs is not mounted at /sys/kernel/tracing and mounting it failed "
                       "(needs CAP_SYS_ADMIN; in a container, mount the host's /sys/kernel/tracing)") from None
    return "/sys/kernel/tracing"


def import_bcc():
    """Return the bcc module after making tracefs and headers ready."""
    ensure_tracefs()
    try:
        kheaders.ensure()
    except kheaders.HeadersError as exc:
        raise BccError(str(exc)) from None
    try:
        import bcc  # Debian's python3-bpfcc
    except ImportError:
        raise BccError("bcc is not importable: apt-get install python3-bpfcc "
                       "(the PyPI package named 'bcc' is an unrelated project)") from None
    if not hasattr(bcc, "BPF"):
        raise BccError(f"the 'bcc' module at {getattr(bcc, '__file__', '?')} is not BPF Compiler "
                       "Collection; install Debian's python3-bpfcc")
    return bcc


def read_source(name: str) -> str:
    with open(os.path.join(BPF_DIR, name)) as fh:
        return fh.read()


def compile_bpf(source_name: str, cflags: list[str]):
    """Compile and load bpf/<source_name> with bcc; BccError with one line on failure."""
    bcc = import_bcc()
    text = read_source(source_name)
    try:
        return bcc.BPF(text=text.encode(), cflags=["-Wno-macro-redefined", "-Wno-visibility"] + cflags)
    except Exception as exc:  # bcc raises bare Exception
        raise BccError(f"bpf/{source_name}: {exc}") from None
