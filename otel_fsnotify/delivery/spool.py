"""The on-disk write-ahead spool: every event is written here before it is
sent, and removed once the collector acknowledged it.

Layout of `spool_dir`:
- ``lock``: flock'ed by the one process that owns the spool;
- ``NNNNNNNNNNNN.seg``: append-only segments of frames
  ``[u32 payload length][u32 crc32(payload)][payload]`` where the payload is a
  msgpack-encoded `LogEntry`;
- ``cursor``: JSON ``{"segment": n, "offset": o}``, the first frame not yet
  acknowledged, replaced atomically (write + rename) after each acknowledgement.

A write is one os.write() of a whole frame, so an agent killed with SIGKILL
loses nothing that submit() accepted (the page cache keeps it); with
`spool_fsync` the segment is also fsync'ed after each batch, which covers a
power cut. On open, a torn frame at the end of a segment (power cut) is cut
off and counted as ``spool_corrupt``. The bound (`spool_max_bytes`) counts
whole segment files, so acknowledged frames free space when their segment is
finished and deleted; a write segment whose frames are all acknowledged is
closed and deleted as soon as the writer needs its room (or rotates), so an
empty spool never refuses events.
"""

from __future__ import annotations

import fcntl
import os
import struct
import threading
import time
import zlib

import msgspec

from ..otel.entry import LogEntry

_HDR = struct.Struct("<II")
_SEG_SUFFIX = ".seg"


class SpoolBusy(RuntimeError):
    """Another process owns this spool directory (a runtime condition, not bad input)."""


class Position(msgspec.Struct, frozen=True, order=True):
    segment: int
    offset: int


_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(LogEntry)


def encode_entry(entry: LogEntry) -> bytes:
    payload = _entry_encoder.encode(entry)
    return _HDR.pack(len(payload), zlib.crc32(payload)) + payload


def decode_entry(payload: bytes) -> LogEntry:
    return _entry_decoder.decode(payload)


class Spool:
    """Bounded, ordered, crash-safe queue of encoded frames on disk.

    One writer (append) and one reader (read / ack) may use it from two threads.
    """

    def __init__(self, directory: str, max_bytes: int, segment_bytes: int,
                 fsync: bool = False):
        self.dir = directory
        self.max_bytes = max_bytes
        self.segment_bytes = segment_bytes
        self.fsync = fsync
        os.makedirs(directory, mode=0o700, exist_ok=True)
        self._lockfd = os.open(os.path.join(directory, "lock"), os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfd)
            raise SpoolBusy(f"spool_dir {directory}: in use by another otel-fsnotify process") from None
        self._cv = threading.Condition()
        self.corrupt = 0  # frames/bytes cut off at open
        self.recovered = 0  # frames found unacknowledged at open
        self._inflight = 0  # frames handed to the reader, not acked yet
        self._sizes: dict[int, int] = {}  # segment -> bytes written (readable prefix)
        self._closed = False
        cursor = self._load_cursor()
        segs = sorted(self._segments())
        for seg in segs:
            if seg < cursor.segment:
                os.unlink(self._path(seg))
        segs = [s for s in segs if s >= cursor.segment]
        for seg in segs:
            start = cursor.offset if seg == cursor.segment else 0
            size, frames = self._scan(seg, start)
            self._sizes[seg] = size
            self.recovered += frames
        if not segs or cursor.segment not in self._sizes:
            cursor = Position(segs[0] if segs else (max([cursor.segment, 0]) + 1), 0)
            if cursor.segment not in self._sizes:
                self._sizes[cursor.segment] = 0
                open(self._path(cursor.segment), "ab").close()
        self.pending = self.recovered  # frames written and not yet acked
        self._acked = cursor  # first frame not acknowledged
        self._read = cursor  # first frame not yet handed to the reader
        # always append to a fresh segment: never write after a repaired tail
        self._wseg = max(self._sizes) + 1
        self._sizes[self._wseg] = 0
        self._wfd = os.open(self._path(self._wseg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._rfds: dict[int, int] = {}
        self.total_bytes = sum(self._sizes.values())
        self._save_cursor(cursor)

    # ----------------------------------------------------------- files
    def _path(self, seg: int) -> str:
        return os.path.join(self.dir, f"{seg:012d}{_SEG_SUFFIX}")

    def _segments(self) -> list[int]:
        out = []
        for name in os.listdir(self.dir):
            if name.endswith(_SEG_SUFFIX) and name[:-len(_SEG_SUFFIX)].isdigit():
                out.append(int(name[:-len(_SEG_SUFFIX)]))
        return out

    def _load_cursor(self) -> Position:
        try:
            with open(os.path.join(self.dir, "cursor"), "rb") as fh:
                return msgspec.json.decode(fh.read(), type=Position)
        except (OSError, msgspec.DecodeError):
            return Position(0, 0)

    def _save_cursor(self, pos: Position, tmp_name: str = "cursor.tmp") -> None:
        # the writer thread saves through its own temporary name (see _reclaim)
        tmp = os.path.join(self.dir, tmp_name)
        with open(tmp, "wb") as fh:
            fh.write(msgspec.json.encode(pos))
            if self.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, os.path.join(self.dir, "cursor"))

    def _scan(self, seg: int, start: int) -> tuple[int, int]:
        """Validate frames from `start`; cut a torn/corrupt tail. -> (size, frames)."""
        path = self._path(seg)
        with open(path, "rb") as fh:
            data = fh.read()
        off, frames = start, 0
        while off + _HDR.size <= len(data):
            n, crc = _HDR.unpack_from(data, off)
            end = off + _HDR.size + n
            if end > len(data) or zlib.crc32(data[off + _HDR.size:end]) != crc:
                break
            off, frames = end, frames + 1
        if off < len(data):
            self.corrupt += 1
            with open(path, "r+b") as fh:
                fh.truncate(off)
        return off, frames

    # ----------------------------------------------------------- writer
    def append(self, frame: bytes) -> bool:
        """Append one encoded frame; False (and nothing written) when full."""
        with self._cv:
            if self._closed:
                return False
            if self._sizes[self._wseg] >= self.segment_bytes:
                self._rotate()
            if self.total_bytes + len(frame) > self.max_bytes:
                # the write segment only frees its room by rotating: if every
                # frame in it is acknowledged, reclaim it before refusing
                if not self._reclaim_write_segment_locked() \
                        or self.total_bytes + len(frame) > self.max_bytes:
                    return False
            os.write(self._wfd, frame)
            self._sizes[self._wseg] += len(frame)
            self.total_bytes += len(frame)
            self.pending += 1
            self._cv.notify_all()
            return True

    def _rotate(self) -> None:
        if self.fsync:
            os.fsync(self._wfd)
        os.close(self._wfd)
        old = self._wseg
        self._wseg += 1
        self._sizes[self._wseg] = 0
        self._wfd = os.open(self._path(self._wseg), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        self._drop_acked_segment_locked(old)

    def _reclaim_write_segment_locked(self) -> bool:
        """Writer side, lock held: if every frame of the write segment is
        acknowledged (and nothing is in flight), rotate and delete it.
        True if room was freed."""
        end = Position(self._wseg, self._sizes[self._wseg])
        if end.offset == 0 or self._acked != end:
            return False
        self._rotate()
        return True

    def _remove_segment_locked(self, seg: int) -> None:
        """Lock held: close, delete and forget segment `seg` (fully delivered)."""
        fd = self._rfds.pop(seg, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self._path(seg))
        except FileNotFoundError:
            pass
        self.total_bytes -= self._sizes.pop(seg)

    def _drop_acked_segment_locked(self, seg: int) -> None:
        """Lock held, `seg` is no longer written: delete it if the reader has
        acknowledged all of it, moving the cursor to the next segment. The
        reader may be between read() calls only: nothing of `seg` is in flight
        because _acked is at its end."""
        if self._acked != Position(seg, self._sizes.get(seg, -1)):
            return
        nxt = Position(min(s for s in self._sizes if s > seg), 0)
        self._remove_segment_locked(seg)
        self._acked = nxt
        if self._read <= Position(seg, 1 << 62):
            self._read = nxt
        self._save_cursor(nxt, "cursor.wtmp")

    def sync(self) -> None:
        with self._cv:
            if self.fsync and not self._closed:
                os.fsync(self._wfd)

    # ----------------------------------------------------------- reader
    def wait_for_data(self, timeout: float) -> bool:
        with self._cv:
            if self._has_unread_locked():
                return True
            self._cv.wait(timeout)
            return self._has_unread_locked()

    def _has_unread_locked(self) -> bool:
        pos = self._read
        if pos.offset < self._sizes.get(pos.segment, 0):
            return True
        return any(s > pos.segment and n > 0 for s, n in self._sizes.items())

    def wait_for_frames(self, n: int, timeout: float) -> None:
        """Wait until at least n frames are unread or timeout passes."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.pending - self._inflight < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return
                self._cv.wait(left)

    def read(self, max_frames: int) -> tuple[list[bytes], Position]:
        """Up to max_frames payloads after the read position, and the position
        after them (to pass to ack). Does not wait."""
        out: list[bytes] = []
        pos = self._read
        while len(out) < max_frames:
            with self._cv:
                size = self._sizes.get(pos.segment, 0)
                later = [s for s in self._sizes if s > pos.segment]
            if pos.offset >= size:
                if not later:
                    break
                pos = Position(min(later), 0)
                continue
            fd = self._rfds.get(pos.segment)
            if fd is None:
                fd = self._rfds[pos.segment] = os.open(self._path(pos.segment), os.O_RDONLY)
            chunk = os.pread(fd, min(size - pos.offset, 1 << 20), pos.offset)
            off = 0
            while len(out) < max_frames and off + _HDR.size <= len(chunk):
                n, _crc = _HDR.unpack_from(chunk, off)
                end = off + _HDR.size + n
                if end > len(chunk):
                    break
                out.append(chunk[off + _HDR.size:end])
                off = end
            if off == 0:  # frame larger than the chunk: read it alone
                n, _crc = _HDR.unpack(os.pread(fd, _HDR.size, pos.offset))
                out.append(os.pread(fd, n, pos.offset + _HDR.size))
                off = _HDR.size + n
            pos = Position(pos.segment, pos.offset + off)
        with self._cv:
            self._read = pos
            self._inflight += len(out)
        return out, pos

    def rewind(self) -> None:
        """Forget frames handed out but not acked (they will be read again)."""
        with self._cv:
            self._read = self._acked
            self._inflight = 0

    def ack(self, pos: Position, frames: int) -> None:
        """Everything before `pos` is delivered (or counted as lost)."""
        self._save_cursor(pos)
        with self._cv:
            self._acked = pos
            self.pending -= frames
            self._inflight -= frames
            for seg in [s for s in self._sizes if s < pos.segment]:
                self._remove_segment_locked(seg)
            # a finished segment that is fully acked and not the write segment
            if pos.segment != self._wseg and pos.offset >= self._sizes.get(pos.segment, 0):
                later = [s for s in self._sizes if s > pos.segment]
                if later:
                    nxt = Position(min(later), 0)
                    self._remove_segment_locked(pos.segment)
                    self._acked = nxt
                    if self._read.segment == pos.segment:
                        self._read = nxt
                    self._save_cursor(nxt)
            self._cv.notify_all()

    def wait_empty(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.pending > 0:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cv.wait(min(left, 0.5))
            return True

    def wake(self) -> None:
        with self._cv:
            self._cv.notify_all()

    def close(self) -> None:
        with self._cv:
            if self._closed:
                return
            self._closed = True
            if self.fsync:
                os.fsync(self._wfd)
            os.close(self._wfd)
            for fd in self._rfds.values():
                os.close(fd)
            self._rfds.clear()
            self._cv.notify_all()
        os.close(self._lockfd)
