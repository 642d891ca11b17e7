"""The mirror's events, remembered until an inotify event a tracer reads is
matched to one (enrich/mirror.py fills it, backends/tracepoint/inotify.py asks).

Each event is kept under every (watched object, name, event bit) it is for
(an object is (sdev, ino): inode numbers repeat across filesystems), in a
`Series` per key, for WINDOW_S or until MAX_HITS newer entries came (an
event under two keys is two entries).
"""

from __future__ import annotations

from bisect import bisect_left
from collections import deque

WINDOW_S = 5.0  # a mirror event can be matched this long after it was read
MAX_HITS = 100_000  # bound on remembered entries (~650 B each, with their share of the event)
NO_MATCH = (0, 0, 0, 0)  # (pid, tid, child inode, when drained) of no event

_BITS: dict[int, tuple[int, ...]] = {}


def bits_of(mask: int) -> tuple[int, ...]:
    """The shared event bits set in mask, low first (cached per mask)."""
    bits = _BITS.get(mask)
    if bits is None:
        bits = tuple(1 << i for i in range(12) if mask & (1 << i))
        if len(_BITS) < 4096:
            _BITS[mask] = bits
    return bits


class Series:
    """Mirror events of one (watched object, name, event bit), oldest first.

    Each consumer (tracer pid, fd) has a cursor: the sequence number of the
    next event it may match, so matching is FIFO per consumer and O(log n)
    even when one file gets thousands of events inside the window.
    """

    __slots__ = ("key", "seqs", "hits", "start", "cursors", "run", "mixed")

    def __init__(self, key: tuple):
        self.key = key  # its key in RememberedEvents._hits
        self.seqs: list[int] = []
        # (pid, tid, child inode, when drained: CLOCK_MONOTONIC ns), 0 when unknown
        self.hits: list[tuple[int, int, int, int]] = []
        self.start = 0  # entries before start have expired
        self.cursors: dict = {}
        self.run = 0  # index where the last run of entries of one actor (pid, tid) begins
        self.mixed = False  # it has held entries of two actors since it began

    def add(self, seq: int, hit: tuple[int, int, int, int]) -> None:
        hits = self.hits
        if hits and hits[-1][:2] != hit[:2]:
            self.run = len(hits)
            self.mixed = True
        self.seqs.append(seq)
        hits.append(hit)

    def match(self, consumer) -> tuple[tuple[int, int, int, int], bool] | None:
        """(the oldest entry this consumer has not matched yet, whether it is
        certain), None if none.

        Positional matching drifts when inotify merged identical consecutive
        events (same wd, mask, name: e.g. two processes touching one file
        while the listener did not read) that the mirror keeps apart: the
        consumer's true entry is then a later one. It is certain only when
        every entry from the cursor to the newest has the same actor (the
        mirror is drained before a read is decoded, so the true entry is
        among them)."""
        seqs = self.seqs
        i = bisect_left(seqs, self.cursors.get(consumer, 0), self.start)
        if i >= len(seqs):
            return None
        self.cursors[consumer] = seqs[i] + 1
        return self.hits[i], i >= self.run

    def merged_into(self, consumer) -> tuple[int, int, int, int] | None:
        """The entry an event of this series that never got its own mirror
        event was merged into, or None when that cannot be said for sure.

        fanotify merges an event into a queued one of the same process and
        object; inotify keeps both. The mirror is drained after the ring and
        before a read is decoded, so every event of the read has its mirror
        event in by then: one without an entry of its own was merged into an
        event of its actor still queued when it happened. That event is the
        last one this consumer matched or a later one (an older one still
        queued would have taken the matched one's merge too). So it is the
        last matched entry's actor when every entry this series has held
        since it began (since its key was last quiet for WINDOW_S) has one
        actor: no other process's event can be the one it merged into."""
        cursor = self.cursors.get(consumer)
        if cursor is None or self.mixed:
            return None
        i = bisect_left(self.seqs, cursor, self.start) - 1
        if i < self.start or self.seqs[i] != cursor - 1:
            return None  # the last matched entry itself has expired
        return self.hits[i]

    def drop_oldest(self) -> bool:
        """Expire the oldest entry; True when the series is empty."""
        self.start += 1
        if self.start >= len(self.seqs):
            return True
        if self.start > 512 and self.start * 2 > len(self.seqs):
            del self.seqs[: self.start]
            del self.hits[: self.start]
            self.run = max(0, self.run - self.start)
            self.start = 0
        return False


class RememberedEvents:
    """The mirror events of the last WINDOW_S (at most MAX_HITS), by key."""

    def __init__(self):
        # (watched object, name, event bit) -> Series
        self._hits: dict[tuple, Series] = {}
        # (when read, its Series) per entry of an event under a key, oldest first
        self._order: deque = deque()
        self._seq = 0

    def __len__(self) -> int:
        """Entries remembered (an event under two keys is two)."""
        return len(self._order)

    def add(self, now: float, seen_ns: int, mask: int, pid: int, tid: int,
            keys: list[tuple], child_ino: int) -> None:
        """One mirror event, read at `now` (monotonic s) and seen_ns, for
        every (watched object, name relative to it) in keys; the
        child's inode goes with the keys that name a child."""
        seq = self._seq
        self._seq = seq + 1
        hits, order = self._hits, self._order
        bits = bits_of(mask)
        for obj, name in keys:
            # the child's inode belongs to events naming a child only
            hit = (pid, tid, child_ino if name else 0, seen_ns)
            for bit in bits:
                key = (obj, name, bit)
                series = hits.get(key)
                if series is None:
                    series = hits[key] = Series(key)
                series.add(seq, hit)
                order.append((now, series))

    def expire(self, now: float) -> None:
        """Forget the events read before now - WINDOW_S, and the oldest past MAX_HITS."""
        order = self._order
        if not order:
            return
        limit = now - WINDOW_S
        hits = self._hits
        while order and (order[0][0] < limit or len(order) > MAX_HITS):
            _when, series = order.popleft()
            if series.drop_oldest():
                del hits[series.key]

    def match(self, obj, name: str, mask: int, consumer) -> tuple[tuple[int, int, int, int], bool]:
        """((pid, tid, child inode, when drained), certain) of the oldest
        event of (obj, name, any bit of mask) this consumer (tracer pid, fd)
        has not matched yet; (NO_MATCH, False) if none. tid and child inode
        are 0 when unknown; certain: see Series.match."""
        hits = self._hits
        for bit in bits_of(mask):
            series = hits.get((obj, name, bit))
            if series is not None:
                got = series.match(consumer)
                if got is not None:
                    return got
        return NO_MATCH, False

    def merged(self, obj, name: str, mask: int, consumer) -> tuple[int, int, int, int]:
        """(pid, tid, child inode, when drained) of the mirror event an
        inotify event with none of its own was merged into (Series.merged_into),
        NO_MATCH when that is not certain."""
        hits = self._hits
        for bit in bits_of(mask):
            series = hits.get((obj, name, bit))
            if series is not None:
                got = series.merged_into(consumer)
                if got is not None:
                    return got
        return NO_MATCH
