"""The parts of log records that repeat, encoded once per encoder.

mapping.record_parts() splits a record's attributes into parts. Most of a
record's attributes depend on a few values that repeat from event to event:
one process's identity, one kind of event, one rule. Encoding those takes
most of the time, so each encoder keeps the bytes of each part per key here
and encodes only the per-event parts (file, name, uid) each time.
"""

from __future__ import annotations

from typing import Any, Callable

from ..event import Event
from . import mapping


class EncodedParts:
    """A record's attributes as a list of encoded parts. `encode` turns one
    part's attributes into the encoder's bytes."""

    MAX = 8192  # keys kept per part (forgotten all at once past it)

    def __init__(self, encode: Callable[[dict[str, Any]], bytes]):
        self._encode = encode
        self._cache: dict[Callable, dict[Any, bytes]] = {}

    def __call__(self, ev: Event, uid: str, command_line: str, include_command_line: bool) -> list[bytes]:
        out = []
        encode = self._encode
        for build, key in mapping.record_parts(ev, uid, command_line, include_command_line):
            if build is None:
                out.append(encode(key))
                continue
            cache = self._cache.get(build)
            if cache is None:
                cache = self._cache[build] = {}
            got = cache.get(key)
            if got is None:
                if len(cache) >= self.MAX:
                    cache.clear()
                got = cache[key] = encode(build(key))
            out.append(got)
        return out
