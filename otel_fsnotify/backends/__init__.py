"""Backend registry and the `auto` ladder: fentry, then kprobe, then tracepoint."""

from __future__ import annotations

import importlib
import logging

from .base import Backend, BackendUnavailable, Filters

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


def choose(name: str, filters: Filters, emit, log: logging.Logger) -> Backend:
    """Start the named backend, or for `auto` the first on the ladder that loads."""
    names = AUTO_ORDER if name == "auto" else (name,)
    reasons = []
    for candidate in names:
        try:
            cls = backend_class(candidate)
            reason = cls.probe()
            if reason:
                raise BackendUnavailable(reason)
            backend = cls(filters, emit, log)
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


__all__ = ["Backend", "BackendUnavailable", "Filters", "REGISTRY", "CHOICES", "choose", "backend_class"]
