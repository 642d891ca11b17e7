"""Polling until something happened, for tests that watch other processes."""

from __future__ import annotations

import time


def until(cond, timeout: float = 10.0):
    """cond()'s first truthy value, polled; its last value after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        got = cond()
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.05)


def until_stable(count, want: int, timeout: float = 60.0) -> int:
    """Poll count() until it reaches want or stops growing for a second."""
    deadline = time.monotonic() + timeout
    last, since = -1, time.monotonic()
    while time.monotonic() < deadline:
        n = count()
        if n >= want:
            return n
        if n != last:
            last, since = n, time.monotonic()
        elif time.monotonic() - since > 1.0:
            return n
        time.sleep(0.1)
    return count()


def until_still(value, still_s: float, timeout: float, interval: float = 0.1):
    """Poll value() until it has not changed for still_s (or timeout); its last value."""
    deadline = time.monotonic() + timeout
    last, since = value(), time.monotonic()
    while time.monotonic() - since < still_s and time.monotonic() < deadline:
        time.sleep(interval)
        now = value()
        if now != last:
            last, since = now, time.monotonic()
    return last


def lines(path) -> int:
    """How many whole lines the file has now (read once, to its end as it
    is now: not a line cut by a write still under way)."""
    with open(path, "rb") as fh:
        return fh.read().count(b"\n")
