"""The OTLP resource: who sends (service, version, host, backend), with the
OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES variables honoured."""

from __future__ import annotations

import os
import socket
import urllib.parse
from typing import Any, Callable, Mapping

from .. import __version__

def _machine_id() -> str:
    for path in ("/etc/machine-id", "/var/lib/dbus/machine-id"):
        try:
            with open(path) as fh:
                mid = fh.read().strip()
            if mid:
                return mid
        except OSError:
            pass
    return ""


def parse_resource_attributes(text: str) -> dict[str, str]:
    """OTEL_RESOURCE_ATTRIBUTES: ``k1=v1,k2=v2``, percent-encoded values.

    Malformed items are skipped (the spec says to ignore the whole variable
    on error; we keep the good pairs and say nothing is invented).
    """
    out: dict[str, str] = {}
    for item in text.split(","):
        if "=" not in item:
            continue
        k, v = item.split("=", 1)
        k = k.strip()
        if k:
            out[k] = urllib.parse.unquote(v.strip())
    return out


def build_resource(backend: str = "", environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Resource attributes: service, host, backend; OTEL_* variables honoured.

    Precedence: built-in < OTEL_RESOURCE_ATTRIBUTES < OTEL_SERVICE_NAME.
    Returned as a plain dict; the exporters turn it into their own type.
    """
    env = os.environ if environ is None else environ
    res: dict[str, Any] = {
        "service.name": "otel-fsnotify",
        "service.version": __version__,
        "host.name": socket.gethostname(),
        "os.type": "linux",
    }
    mid = _machine_id()
    if mid:
        res["host.id"] = mid
    if backend:
        res["fsnotify.backend"] = backend
    res.update(parse_resource_attributes(env.get("OTEL_RESOURCE_ATTRIBUTES", "")))
    svc = env.get("OTEL_SERVICE_NAME", "").strip()
    if svc:
        res["service.name"] = svc
    return res


class PerContainer:
    """The agent's resource plus one container's attributes
    (mapping.resource_of), built by `build` once per container: each encoder
    sends one resource per container and builds it in its own form."""

    MAX = 4096  # containers remembered (forgotten all at once past it)

    def __init__(self, base: Mapping[str, Any], build: Callable[[dict[str, Any]], Any]):
        self._base = dict(base)
        self._build = build
        self._built: dict[tuple, Any] = {}

    def __call__(self, extra: tuple) -> Any:
        got = self._built.get(extra)
        if got is None:
            if len(self._built) > self.MAX:
                self._built.clear()
            got = self._built[extra] = self._build({**self._base, **dict(extra)})
        return got
