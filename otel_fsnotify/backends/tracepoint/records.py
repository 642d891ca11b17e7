"""The tracepoint program's ring records (bpf/fsnotify_tracepoint.bpf.c), and
the two kinds that span several records: a listener's read(2), cut into
chunks, and the paths of its fanotify events, sent ahead of it.

Timestamps in records are CLOCK_MONOTONIC (bpf_ktime_get_ns); `Clock` turns
them into Unix time.
"""

from __future__ import annotations

import time

from ...kernel.records import PATH_WALK, PROC_ID, RecordLayout, nested, walked_path

# struct rec_hdr; `len` bytes of data follow each header
HDR = RecordLayout("rec_hdr", [
    ("ts", "Q"), ("group", "Q"), ("cgroup", "Q"), ("kind", "I"), *nested("proc", PROC_ID),
    ("fd", "i"), ("ret", "i"), ("prio", "I"), ("listener", "I"), ("total", "I"),
    ("offset", "I"), ("len", "I"), ("pidns", "I"), ("nspid", "I"), ("event_off", "I"),
    ("queued", "I"), *nested("walk", PATH_WALK),
])

# rec_hdr.kind (the REC_* defines of the program)
REC_READ = 1        # bytes a tracer read from a listener fd (one chunk)
REC_RESPONSE = 2    # struct fanotify_response written by a tracer
REC_ADD_WATCH = 3   # inotify_add_watch returned a wd: rescan fdinfo
REC_FORK = 4        # new process (not thread)
REC_EXEC = 5        # process exec'd: comm, exe, creds, mntns
REC_EXIT = 6        # process (thread group leader) exited
REC_FAN_PATH = 7    # the path of a fanotify event's file (components leaf first)
REC_KILLED = 8      # a task takes SIGKILL leaving a failed syscall
REC_GROUP_GONE = 9  # the last reference to a permission listener's file is going
REC_THREAD = 10     # a new thread (tid, tgid)
REC_CREDS = 11      # a process changed its user or group ids (set*id)

# slots of the per-CPU `counters` array (CNT_* in the program)
# (ringbuf_lost counts records; ringbuf_lost_events the events they held: a
# read's record carries up to 4 KiB of events)
COUNTERS = ("ringbuf_lost", "read_truncated", "pending_map_full", "path_too_deep", "ringbuf_lost_events")

CHUNK = 4096  # bytes per ring buffer record of a read (CHUNK in the program)
MAX_READ = 16 * CHUNK  # bytes of one read captured (MAX_CHUNKS * CHUNK)
CLOCK_SYNC_S = 2.0  # the monotonic -> wall clock offset is re-read this often
STALE_READ_S = 2.0  # a read whose next chunk has not come for this long lost it in the ring


class Clock:
    """Record timestamps to Unix ns. The offset is re-read every CLOCK_SYNC_S,
    so a step of the wall clock (NTP, date -s) moves the events' timestamps
    with it within that time."""

    def __init__(self):
        self.offset = 0
        self._next = 0.0
        self.sync(time.monotonic())

    def sync(self, now: float) -> None:
        if now >= self._next:
            self.offset = time.time_ns() - time.monotonic_ns()
            self._next = now + CLOCK_SYNC_S

    def wall(self, mono_ns: int) -> int:
        return mono_ns + self.offset


class ReadAssembler:
    """A listener's read(2), from its chunk records (in order per thread).

    Only the contiguous prefix received is handed on: bytes after a chunk lost
    in the ring, or past MAX_READ, are counted, not guessed. The program sends
    nothing of a read after its first lost chunk, so such a read is finished
    by the thread's next read (`finish()` when that one begins with fanotify
    paths), by `stale()` once no chunk came for STALE_READ_S, or by `rest()`
    at the end."""

    def __init__(self):
        # tid -> [hdr, bytes so far, no gap yet, monotonic time of its last chunk]
        self._partial: dict[int, list] = {}
        self.counters = {"read_incomplete": 0, "read_bytes_unparsed": 0}

    def add(self, h, data: bytes, now: float = 0.0) -> list[tuple]:
        """Take one REC_READ chunk; returns the reads it completes as (hdr, bytes)."""
        total, off, ln = h.total, h.offset, h.len
        tid = h.proc_tid
        done = []
        ent = self._partial.get(tid)
        if off == 0 and ent is not None:  # the previous read's last chunk never came
            done.append(self._finish(tid))
            ent = None
        if off == 0 and ln >= total:  # the whole read in one record (no copy of it)
            done.append((h, data if len(data) <= total else data[:total]))
            return done
        if off == 0:
            ent = self._partial[tid] = [h, bytearray(), True, now]
        elif ent is None:  # its first chunk was lost: nothing to attach to
            self.counters["read_bytes_unparsed"] += ln
            return done
        ent[3] = now
        if ent[2] and off == len(ent[1]) and ln:
            ent[1] += data[:ln]
        else:
            ent[2] = False  # a gap: what follows is not parsed
        if off + CHUNK >= min(total, MAX_READ):  # the last chunk
            done.append(self._finish(tid))
        return done

    def finish(self, tid: int) -> list[tuple]:
        """The thread's read still waiting for a chunk, if any: the thread
        began another read (a fanotify read sends its paths first)."""
        return [self._finish(tid)] if tid in self._partial else []

    def stale(self, now: float) -> list[tuple]:
        """The reads whose next chunk has not come for STALE_READ_S: it was
        lost (the program sends all of a read's chunks in one run)."""
        old = [tid for tid, ent in self._partial.items() if now - ent[3] >= STALE_READ_S]
        return [self._finish(tid) for tid in old]

    def rest(self) -> list[tuple]:
        """Every read still waiting for a chunk (the agent is stopping)."""
        return [self._finish(tid) for tid in list(self._partial)]

    def _finish(self, tid: int) -> tuple:
        h, data, _contiguous, _last = self._partial.pop(tid)
        missing = h.total - len(data)
        if missing > 0:
            self.counters["read_incomplete"] += 1
            self.counters["read_bytes_unparsed"] += missing
        return h, bytes(data)


NO_PATH = ("", "")  # FanPaths: no path walked for an event


class FanPaths:
    """The paths the kernel walked for a fanotify read's events (one record
    each, sent before the read), by the reading thread and the event's offset
    in its read."""

    def __init__(self):
        # tid -> {event offset: (path as the reader resolves it, from the namespace's root)}
        self._by_tid: dict[int, dict[int, tuple[str, str]]] = {}

    def add(self, h, data: bytes) -> None:
        if h.walk_complete:  # the walk reached the root
            path = walked_path(data[: h.walk_len], h.walk_depth, 1, h.walk_root_depth)
        else:
            path = NO_PATH
        if h.event_off == 0:  # a new read's first event: forget leftovers of a lost read
            self._by_tid[h.proc_tid] = {0: path}
        else:
            self._by_tid.setdefault(h.proc_tid, {})[h.event_off] = path

    def take(self, tid: int) -> dict[int, tuple[str, str]]:
        """{event offset: path} for this thread's read, now being decoded."""
        return self._by_tid.pop(tid, None) or {}
