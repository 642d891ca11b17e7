"""Backend registry and the `auto` ladder: fentry, then kprobe, then tracepoint.

`ladder()` is the one place that walks the ladder: `run` starts the first
backend that loads (`choose`), `doctor` shows the same reasoning without
starting anything.
"""

from __future__ import annotations

import importlib
import logging
from typing import Iterator

from ..kernel.probes import lift_memlock_limit
from .base import DEFAULT_RING_MIB, Backend, BackendUnavailable, Filters

# name -> "module:Class"; imported lazily so a missing backend never breaks the others.
REGISTRY: dict[str, str] = {
    "fentry": "otel_fsnotify.backends.exact:FentryBackend",
    "kprobe": "otel_fsnotify.backends.exact:KprobeBackend",
    "tracepoint": "otel_fsnotify.backends.tracepoint:TracepointBackend",
}
AUTO_ORDER = ("fentry", "kprobe", "tracepoint")
CHOICES = ("auto",) + AUTO_ORDER


def backend_class(name: str) -> type[Backend]:
    module, _, cls = REGISTRY[name].partition(":")
    try:
        return getattr(importlib.import_module(module), cls)
    except (ImportError, AttributeError) as exc:
        raise BackendUnavailable(f"backend {name} is not built in this version ({exc})") from None


def ladder(name: str = "auto") -> Iterator[tuple[str, type[Backend] | None, str | None]]:
    """(backend, class, why it cannot run or None) for the named backend, or
    for `auto` each rung in order. Only the cheap checks (`probe()`)."""
    for candidate in AUTO_ORDER if name == "auto" else (name,):
        try:
            cls = backend_class(candidate)
            reason = cls.probe()
        except BackendUnavailable as exc:
            cls, reason = None, str(exc)
        yield candidate, cls, reason


def choose(name: str, filters: Filters, log: logging.Logger, own_group_fd: int = -1,
           ring_mib: int = DEFAULT_RING_MIB) -> Backend:
    """Start the named backend, or for `auto` the first on the ladder that loads.
    own_group_fd: the agent's watch-mode fanotify group, whose actors the
    backend resolves (`Backend.fim_actor`); ring_mib: its ring buffer."""
    lift_memlock_limit()  # before any load: pre-5.11 kernels charge BPF memory to it
    reasons = []
    for candidate, cls, reason in ladder(name):
        try:
            if reason:
                raise BackendUnavailable(reason)
            backend = cls(filters, log)
            backend.own_group_fd = own_group_fd
            backend.ring_bytes = ring_mib << 20
            backend.start()
        except BackendUnavailable as exc:
            if name != "auto":
                raise
            reasons.append(f"{candidate}: {exc}")
            log.info("backend %s unavailable: %s", candidate, exc)
            continue
        if name == "auto":
            why = "; ".join(reasons) if reasons else "first on the ladder"
            log.info("backend auto -> %s (%s)", candidate, why)
        return backend
    raise BackendUnavailable("no backend can run on this kernel: " + "; ".join(reasons))


__all__ = ["Backend", "BackendUnavailable", "Filters", "REGISTRY", "CHOICES", "AUTO_ORDER",
           "choose", "backend_class", "ladder"]
