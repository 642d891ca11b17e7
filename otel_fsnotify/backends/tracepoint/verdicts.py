"""fanotify permission verdicts: the answer a listener wrote (fa_resp allow /
deny), and the ones it never gave (interrupted): the tracee killed while it
waited, or the listener's fanotify file closed (close(2) or exit), when the
kernel allows every event still pending itself.

A permission event waits here, keyed by (listener pid, event fd), from the
listener's read until one of those happens.
"""

from __future__ import annotations

import time
from typing import Callable

import msgspec

from ... import masks
from ...enrich.identity import Identities
from ...event import Event
from ...kernel.abi import FAN_RESPONSE
from .records import Clock

KILLED_KEEP_S = 2.0  # a killed tracee's pid is remembered this long
MAX_PENDING_PERM = 65_536  # permission events awaiting an answer (oldest forgotten, counted)
MAX_ANSWERED_LATE = 4096  # settled-by-the-kernel keys remembered for a late answer


class Verdicts:
    def __init__(self, emit: Callable[[Event], None], identities: Identities, clock: Clock):
        self.emit = emit
        self.identities = identities
        self.clock = clock
        # (tracer pid, event fd) -> (fanotify Event, group) not answered yet
        self._pending: dict[tuple[int, int], tuple[Event, int]] = {}
        self._killed: dict[int, float] = {}  # pid/tid killed out of a wait -> when (monotonic)
        self._answered_late: set[tuple[int, int]] = set()  # pending settled as interrupted
        self.counters = {"response_unmatched": 0, "response_failed": 0,
                         "response_interrupted": 0, "response_after_interrupt": 0,
                         "response_pending_dropped": 0}

    def awaiting(self, key: tuple[int, int], ev: Event, group: int) -> None:
        """A listener read permission event `ev`: its answer is due."""
        pending = self._pending
        if len(pending) >= MAX_PENDING_PERM:  # listeners that never answer
            del pending[next(iter(pending))]
            self.counters["response_pending_dropped"] += 1
        pending[key] = (ev, group)
        if ev.tracee_pid in self._killed or ev.tracee_tid in self._killed:
            # killed before its listener's read was seen
            self._interrupted(key, ev.timestamp)

    def response(self, h, body: bytes) -> None:
        """A listener wrote struct fanotify_response (REC_RESPONSE)."""
        if h.ret < 0:
            self.counters["response_failed"] += 1
            return
        efd, response = FAN_RESPONSE.unpack_from(body, 0)
        key = (h.proc_pid, efd)
        pending = self._pending.pop(key, None)
        if pending is None:
            if key in self._answered_late:
                # the kernel had already settled it (tracee killed): the
                # listener's answer changed nothing, and was reported as such
                self._answered_late.discard(key)
                self.counters["response_after_interrupt"] += 1
                return
            self.counters["response_unmatched"] += 1
            ev = msgspec.structs.replace(self.identities.tracer(h), attribution="unknown")
        else:
            ev = pending[0]
        self.emit(msgspec.structs.replace(
            ev, type="fa_resp", timestamp=self.clock.wall(h.ts),
            fa_response=masks.fa_response_name(response), **self.identities.tracer_fields(h)))

    def _interrupted(self, key: tuple[int, int], ts: int) -> None:
        """The kernel settled this permission event without the listener's answer."""
        ev, _group = self._pending.pop(key)
        self._answered_late.add(key)
        if len(self._answered_late) > MAX_ANSWERED_LATE:
            self._answered_late.clear()
        self.counters["response_interrupted"] += 1
        self.emit(msgspec.structs.replace(ev, type="fa_resp", timestamp=ts,
                                          fa_response="interrupted"))

    def killed(self, h) -> None:
        """A task left a syscall with SIGKILL pending (REC_KILLED): if it is
        the tracee of a permission event still unanswered, that wait was
        interrupted."""
        tgid, tid = h.proc_pid, h.proc_tid
        ts = self.clock.wall(h.ts)
        self._killed[tgid] = self._killed[tid] = time.monotonic()
        for key, (ev, _group) in list(self._pending.items()):
            if ev.tracee_pid == tgid or ev.tracee_tid == tid:
                self._interrupted(key, ts)

    def group_gone(self, h) -> None:
        """The last reference to a permission listener's fanotify file is going
        (REC_GROUP_GONE): the kernel allows every event still pending."""
        group, ts = h.group, self.clock.wall(h.ts)
        for key, (_ev, g) in list(self._pending.items()):
            if g == group:
                self._interrupted(key, ts)

    def expire(self) -> None:
        limit = time.monotonic() - KILLED_KEEP_S
        for pid in [p for p, t in self._killed.items() if t < limit]:
            del self._killed[pid]
