"""The on-disk write-ahead spool: every event is written here before it is
sent, and removed once the collector acknowledged it.

Layout of `spool_dir` (the agent's own: 0700, owned by its user, no symlinks;
every file 0600, opened with O_NOFOLLOW):
- ``lock``: flock'ed by the one process that owns the spool;
- ``NNNNNNNNNNNN.seg``: append-only segments: an 8-byte header
  (``SEGMENT_MAGIC``), then frames ``[magic "OFSF"][u32 payload length]
  [u32 crc32(length, payload)][payload]``, the payload a msgpack-encoded
  `LogEntry` (one event). Segments of earlier versions (no header, frames
  ``[u32 length][u32 crc32(payload)][payload]``) are still read;
- ``position``: the first frame not yet acknowledged, in one of two fixed
  32-byte slots written in place in turn (sequence number + CRC pick the
  newer valid one), so acknowledging never needs free disk space.

A write is one os.write() of whole frames (a batch of them: append_many), so
an agent killed with SIGKILL loses nothing that append() accepted (the page
cache keeps it); with
`spool_fsync` the segment is also fsync'ed after each batch, which covers a
power cut. A write the disk cannot take (ENOSPC, a short write) is rolled
back, so no torn frame is left, and refused: the caller counts it.

Corruption costs only the frames it hits: a frame whose magic, length or CRC
is wrong is skipped up to the next valid frame, and the events lost are
counted (`corrupt_events` on open for a torn tail, `read()` for the rest).

The bound (`spool_max_bytes`) counts whole segment files: acknowledged
frames free space when their segment is finished and deleted (and, for a long
segment, as the acknowledged prefix is punched out of it); a write segment
whose frames are all acknowledged is closed and deleted as soon as the writer
needs its room (or rotates), so an empty spool never refuses events.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import fcntl
import os
import stat
import struct
import threading
import time
import zlib
from typing import NamedTuple

import msgspec

from ..otel.entry import LogEntry

SEGMENT_MAGIC = b"OFSNSEG2"
FRAME_MAGIC = b"OFSF"
_FRAME = struct.Struct("<4sII")  # magic, payload length, crc32(length bytes + payload)
_LEGACY = struct.Struct("<II")  # payload length, crc32(payload): segments before SEGMENT_MAGIC
_LEN = struct.Struct("<I")
MAX_FRAME = 1 << 20  # the largest payload a frame may carry
_CHUNK = 2 * MAX_FRAME + _FRAME.size  # bytes read at once: a whole frame always fits
_SEG_SUFFIX = ".seg"
_FILE_FLAGS = os.O_CLOEXEC | os.O_NOFOLLOW


class SpoolBusy(RuntimeError):
    """Another process owns this spool directory (a runtime condition, not bad input)."""


class SpoolUnsafe(RuntimeError):
    """The spool directory is not the agent's own (symlink, owner, permissions)."""


class Position(msgspec.Struct, frozen=True, order=True):
    segment: int
    offset: int


_entry_encoder = msgspec.msgpack.Encoder()
_entry_decoder = msgspec.msgpack.Decoder(LogEntry)


def _crc(payload: bytes) -> int:
    return zlib.crc32(payload, zlib.crc32(_LEN.pack(len(payload))))


def frame(payload: bytes) -> bytes:
    """One frame around a payload."""
    return _FRAME.pack(FRAME_MAGIC, len(payload), _crc(payload)) + payload


def encode_payload(entry: LogEntry) -> bytes:
    return _entry_encoder.encode(entry)


def encode_entry(entry: LogEntry) -> bytes:
    return frame(encode_payload(entry))


def decode_entry(payload: bytes) -> LogEntry:
    return _entry_decoder.decode(payload)


# ----------------------------------------------------------- frame parsing

def _valid_at(data: bytes, off: int) -> int:
    """End of the valid frame at data[off:], 0 if none, -1 if it runs past data."""
    if off + _FRAME.size > len(data):
        return -1
    magic, n, crc = _FRAME.unpack_from(data, off)
    if magic != FRAME_MAGIC or n > MAX_FRAME:
        return 0
    end = off + _FRAME.size + n
    if end > len(data):
        return -1
    return end if _crc(data[off + _FRAME.size:end]) == crc else 0


class Parsed(NamedTuple):
    payloads: list[bytes]
    used: int  # bytes consumed (valid frames and the damage skipped)
    lost: int  # events lost to damage in them
    last_end: int  # offset after the last valid frame (0: none)


def parse_frames(data: bytes, complete: bool, max_frames: int = 1 << 30) -> Parsed:
    """Frames of a segment's bytes. `complete`: data reaches the end of what
    was written (an invalid tail is then corruption, not a frame still to be
    read)."""
    out: list[bytes] = []
    off = lost = last_end = 0
    while len(out) < max_frames and off < len(data):
        end = _valid_at(data, off)
        if end > 0:
            out.append(data[off + _FRAME.size:end])
            off = last_end = end
            continue
        if end < 0 and not complete:
            break  # a frame continues past this chunk: read on from here
        nxt, skipped = _resync(data, off)
        if nxt < 0 and not complete:
            if off > 0 or len(data) < _CHUNK // 2:
                break  # maybe valid once more is read: look again from off
            nxt = len(data) - _FRAME.size  # a chunk of garbage: step over most of it
        lost += skipped
        off = nxt if nxt >= 0 else len(data)
    return Parsed(out, off, lost, last_end)


def _resync(data: bytes, off: int) -> tuple[int, int]:
    """From a bad frame at off: (the next valid frame's offset or -1, the
    events lost before it: one, plus every other frame start that failed)."""
    lost = 1
    pos = data.find(FRAME_MAGIC, off + 1)
    while pos >= 0:
        if _valid_at(data, pos) != 0:  # valid, or maybe valid past the chunk
            return pos, lost
        lost += 1
        pos = data.find(FRAME_MAGIC, pos + 1)
    return -1, lost


def parse_legacy_frames(data: bytes, complete: bool = True, max_frames: int = 1 << 30) -> Parsed:
    """Frames of a segment written before SEGMENT_MAGIC (no resync possible:
    a bad frame ends the segment, counted as one event lost)."""
    out: list[bytes] = []
    off = 0
    while len(out) < max_frames and off + _LEGACY.size <= len(data):
        n, crc = _LEGACY.unpack_from(data, off)
        end = off + _LEGACY.size + n
        if end > len(data) and not complete:
            break  # continues past this chunk
        if end > len(data) or zlib.crc32(data[off + _LEGACY.size:end]) != crc:
            return Parsed(out, len(data), 1, off)
        out.append(data[off + _LEGACY.size:end])
        off = end
    if complete and off < len(data):  # a few bytes, less than a header
        return Parsed(out, len(data), 1, off)
    return Parsed(out, off, 0, off)


# ----------------------------------------------------------- the directory

def own_directory(path: str) -> int:
    """Create (0700) or check the spool directory; an O_DIRECTORY fd of it.
    SpoolUnsafe when it is a symlink, not a directory, not owned by this
    user, or writable by group or others."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, mode=0o755, exist_ok=True)
    try:
        os.mkdir(path, 0o700)
    except FileExistsError:
        pass
    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode):
        raise SpoolUnsafe(f"spool_dir {path}: is a symbolic link (give the real directory)")
    if not stat.S_ISDIR(st.st_mode):
        raise SpoolUnsafe(f"spool_dir {path}: not a directory")
    if st.st_uid != os.geteuid():
        raise SpoolUnsafe(f"spool_dir {path}: owned by uid {st.st_uid}, not by the agent's "
                          f"uid {os.geteuid()}")
    if st.st_mode & 0o022:
        raise SpoolUnsafe(f"spool_dir {path}: writable by group or others (mode "
                          f"{stat.S_IMODE(st.st_mode):o}); chmod 700 it")
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | _FILE_FLAGS)
    if os.fstat(fd).st_ino != st.st_ino:  # swapped since the check
        os.close(fd)
        raise SpoolUnsafe(f"spool_dir {path}: changed while being opened")
    return fd


class PositionFile:
    """Two numbers kept in a file in place: two 32-byte slots written in turn
    (sequence, a, b, crc), so an update needs no free space and a torn write
    leaves the other slot. Created 0600 once (O_EXCL), read with O_NOFOLLOW."""

    SLOT = struct.Struct("<QQQI4x")

    def __init__(self, dir_fd: int, name: str):
        self.name = name
        self._dfd = os.dup(dir_fd)
        self._lock = threading.Lock()
        try:
            self.fd = os.open(name, os.O_RDWR | os.O_CREAT | os.O_EXCL | _FILE_FLAGS, 0o600,
                              dir_fd=dir_fd)
            os.write(self.fd, bytes(2 * self.SLOT.size))
        except FileExistsError:
            self.fd = os.open(name, os.O_RDWR | _FILE_FLAGS, dir_fd=dir_fd)
        self._seq, self.value = self._load()

    def _load(self) -> tuple[int, tuple[int, int]]:
        raw = os.pread(self.fd, 2 * self.SLOT.size, 0)
        best = (0, (0, 0))
        for i in range(len(raw) // self.SLOT.size):
            seq, a, b, crc = self.SLOT.unpack_from(raw, i * self.SLOT.size)
            if seq and crc == zlib.crc32(raw[i * self.SLOT.size: i * self.SLOT.size + 24]) \
                    and seq > best[0]:
                best = (seq, (a, b))
        return best

    def save(self, a: int, b: int = 0, fsync: bool = False) -> None:
        with self._lock:
            self._seq += 1
            body = struct.pack("<QQQ", self._seq, a, b)
            os.pwrite(self.fd, self.SLOT.pack(self._seq, a, b, zlib.crc32(body)),
                      (self._seq % 2) * self.SLOT.size)
            if fsync:
                os.fsync(self.fd)
            self.value = (a, b)

    def close(self) -> None:
        os.close(self.fd)
        os.close(self._dfd)

    def remove(self) -> None:
        """Close and delete the file."""
        os.unlink(self.name, dir_fd=self._dfd)
        self.close()


_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_FALLOC_PUNCH = 0x01 | 0x02  # FALLOC_FL_KEEP_SIZE | FALLOC_FL_PUNCH_HOLE
PUNCH_STEP = 256 << 10  # acknowledged bytes of a segment freed at a time


def _punch(fd: int, start: int, end: int) -> None:
    """Free the disk blocks of bytes [start, end) of a file, whole pages only
    (best effort: a filesystem without hole punching keeps them)."""
    start, end = (start + 4095) & ~4095, end & ~4095
    if end > start:
        _libc.fallocate(fd, _FALLOC_PUNCH, ctypes.c_long(start), ctypes.c_long(end - start))


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
        self._dfd = own_directory(directory)
        self._lockfd = os.open("lock", os.O_RDWR | os.O_CREAT | _FILE_FLAGS, 0o600, dir_fd=self._dfd)
        try:
            fcntl.flock(self._lockfd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lockfd)
            os.close(self._dfd)
            raise SpoolBusy(f"spool_dir {directory}: in use by another otel-fsnotify process") from None
        self._cv = threading.Condition()
        self.corrupt_events = 0  # events lost to a torn or damaged tail, found at open
        self.recovered = 0  # frames found unacknowledged at open
        self.write_errors = 0  # appends the disk refused (rolled back)
        self.last_write_error = ""
        self._inflight = 0  # frames handed to the reader, not acked yet
        self._sizes: dict[int, int] = {}  # segment -> bytes written (readable prefix)
        self._legacy: set[int] = set()  # segments in the format before SEGMENT_MAGIC
        self._punched: dict[int, int] = {}  # segment -> bytes freed at its start
        self._closed = False
        self._position = PositionFile(self._dfd, "position")
        cursor = self._recover(self._load_cursor())
        # always append to a fresh segment: never write after a repaired tail
        self._wseg = max(self._sizes, default=cursor.segment) + 1
        self._wfd = -1
        try:
            self._wfd = self._new_segment(self._wseg)
        except OSError as exc:  # a full disk: drain first, write once there is room
            self.last_write_error = exc.strerror or str(exc)
        if cursor.segment not in self._sizes:
            cursor = Position(self._wseg, len(SEGMENT_MAGIC))
        self.pending = self.recovered  # frames written and not yet acked
        self._acked = cursor  # first frame not acknowledged
        self._read = cursor  # first frame not yet handed to the reader
        self._rfds: dict[int, int] = {}
        self.total_bytes = sum(self._sizes.values())
        self._save_cursor(cursor)

    # ----------------------------------------------------------- files
    def _name(self, seg: int) -> str:
        return f"{seg:012d}{_SEG_SUFFIX}"

    def _segments(self) -> list[int]:
        out = []
        for name in os.listdir(self._dfd):
            if name.endswith(_SEG_SUFFIX) and name[:-len(_SEG_SUFFIX)].isdigit():
                out.append(int(name[:-len(_SEG_SUFFIX)]))
        return sorted(out)

    def _open_segment(self, seg: int, flags: int) -> int:
        return os.open(self._name(seg), flags | _FILE_FLAGS, 0o600, dir_fd=self._dfd)

    def _new_segment(self, seg: int) -> int:
        """A new segment file with its header; its write fd. OSError (nothing
        left behind) when the disk refuses."""
        fd = self._open_segment(seg, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_APPEND)
        try:
            if os.write(fd, SEGMENT_MAGIC) != len(SEGMENT_MAGIC):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        except OSError:
            os.close(fd)
            os.unlink(self._name(seg), dir_fd=self._dfd)
            raise
        self._sizes[seg] = len(SEGMENT_MAGIC)
        return fd

    def side_file(self, name: str) -> PositionFile:
        """A PositionFile of the spool's owner beside the segments (replay's
        place in its capture)."""
        return PositionFile(self._dfd, name)

    def _load_cursor(self) -> Position:
        if self._position.value != (0, 0):
            return Position(*self._position.value)
        try:  # a spool of an earlier version: JSON in `cursor`
            fd = os.open("cursor", os.O_RDONLY | _FILE_FLAGS, dir_fd=self._dfd)
        except OSError:
            return Position(0, 0)
        try:
            return msgspec.json.decode(os.read(fd, 4096), type=Position)
        except msgspec.DecodeError:
            return Position(0, 0)
        finally:
            os.close(fd)

    def _save_cursor(self, pos: Position) -> None:
        self._position.save(pos.segment, pos.offset, self.fsync)

    def _recover(self, cursor: Position) -> Position:
        """Take stock of the segments at open; the first unacknowledged position."""
        segs = self._segments()
        for seg in segs:
            if seg < cursor.segment:
                os.unlink(self._name(seg), dir_fd=self._dfd)
        segs = [s for s in segs if s >= cursor.segment]
        for seg in segs:
            self._sizes[seg] = self._scan(seg, cursor.offset if seg == cursor.segment else 0)
        if segs and cursor.segment not in self._sizes:
            cursor = Position(segs[0], self._start(segs[0]))
        elif segs and cursor.offset < self._start(cursor.segment):
            cursor = Position(cursor.segment, self._start(cursor.segment))
        return cursor

    def _start(self, seg: int) -> int:
        return 0 if seg in self._legacy else len(SEGMENT_MAGIC)

    def _scan(self, seg: int, start: int) -> int:
        """Count the frames from `start`, cut a torn tail (counted); the
        segment's readable size."""
        fd = self._open_segment(seg, os.O_RDWR)
        try:
            data = os.pread(fd, os.fstat(fd).st_size, 0)
            if data.startswith(SEGMENT_MAGIC):
                start = max(start, len(SEGMENT_MAGIC))
                parse = parse_frames
            else:
                self._legacy.add(seg)
                parse = parse_legacy_frames
            found = parse(data[start:], complete=True)
            self.recovered += len(found.payloads)
            # damage with valid frames after it is read() past (and counted
            # there); a damaged tail (torn by a power cut) is cut here
            end = start + found.last_end
            if end < len(data):
                self.corrupt_events += max(1, parse(data[end:], complete=True).lost)
                os.ftruncate(fd, end)
            return end
        finally:
            os.close(fd)

    # ----------------------------------------------------------- writer
    def append(self, data: bytes) -> bool:
        """Append one encoded frame; False (nothing written, nothing left
        behind) when the spool is full or the disk refuses (last_write_error)."""
        return self.append_many([data]) == 1

    def append_many(self, frames: list[bytes]) -> int:
        """Append encoded frames in order, as few writes as the segment size
        allows (one, usually); the number accepted. The rest, from the first
        one that did not fit or that the disk refused, is not written."""
        done = 0
        single = False  # after a batch the disk refused: frame by frame
        with self._cv:
            while done < len(frames) and not self._closed:
                end = done
                try:
                    if self._wfd < 0:
                        self._wfd = self._new_segment(self._wseg)
                    if self._sizes[self._wseg] >= self.segment_bytes:
                        self._rotate()
                    if self.total_bytes + len(frames[done]) > self.max_bytes:
                        # the write segment only frees its room by rotating: if every
                        # frame in it is acknowledged, reclaim it before refusing
                        if not self._reclaim_write_segment_locked() \
                                or self.total_bytes + len(frames[done]) > self.max_bytes:
                            break
                    # as many as fit the bound and (past the first) this segment
                    room = min(self.max_bytes - self.total_bytes,
                               max(self.segment_bytes - self._sizes[self._wseg], len(frames[done])))
                    size = 0
                    while end < len(frames) and size + len(frames[end]) <= room \
                            and not (single and end > done):
                        size += len(frames[end])
                        end += 1
                    data = frames[done] if end == done + 1 else b"".join(frames[done:end])
                    self._write_locked(data)
                except OSError as exc:
                    if end > done + 1:  # maybe a part fits: try again one by one
                        single = True
                        continue
                    self.write_errors += 1
                    self.last_write_error = exc.strerror or str(exc)
                    break
                self._sizes[self._wseg] += size
                self.total_bytes += size
                self.pending += end - done
                done = end
            if done:
                self._cv.notify_all()
        return done

    def _write_locked(self, data: bytes) -> None:
        """Whole frames or nothing: a short or failed write is rolled back,
        and the segment closed so its acknowledged frames can free the disk."""
        size = self._sizes[self._wseg]
        try:
            written = os.write(self._wfd, data)
        except OSError as exc:  # ENOSPC, EDQUOT, EIO...: said as the kernel said it
            written, err = -1, exc
        else:
            err = OSError(errno.ENOSPC, f"{os.strerror(errno.ENOSPC)} (short write)")
        if written == len(data):
            return
        os.ftruncate(self._wfd, size)  # no torn frame behind
        if size > len(SEGMENT_MAGIC):
            try:
                self._rotate()
            except OSError:
                pass  # no room for a new segment yet: the next append tries again
        raise err

    def _rotate(self) -> None:
        old = self._wseg
        wfd = self._new_segment(old + 1)
        if self.fsync:
            os.fsync(self._wfd)
        os.close(self._wfd)
        self._wfd, self._wseg = wfd, old + 1
        self._drop_acked_segment_locked(old)

    def _reclaim_write_segment_locked(self) -> bool:
        """Writer side, lock held: if every frame of the write segment is
        acknowledged (and nothing is in flight), rotate and delete it.
        True if room was freed."""
        end = Position(self._wseg, self._sizes.get(self._wseg, 0))
        if end.offset <= len(SEGMENT_MAGIC) or self._acked != end:
            return False
        self._rotate()
        return True

    def _remove_segment_locked(self, seg: int) -> None:
        """Lock held: close, delete and forget segment `seg` (fully delivered)."""
        fd = self._rfds.pop(seg, None)
        if fd is not None:
            os.close(fd)
        try:
            os.unlink(self._name(seg), dir_fd=self._dfd)
        except FileNotFoundError:
            pass
        self.total_bytes -= self._sizes.pop(seg)
        self._legacy.discard(seg)
        self._punched.pop(seg, None)

    def _drop_acked_segment_locked(self, seg: int) -> None:
        """Lock held, `seg` is no longer written: delete it if the reader has
        acknowledged all of it, moving the cursor to the next segment. The
        reader may be between read() calls only: nothing of `seg` is in flight
        because _acked is at its end."""
        if self._acked != Position(seg, self._sizes.get(seg, -1)):
            return
        later = min(s for s in self._sizes if s > seg)
        nxt = Position(later, self._start(later))
        self._remove_segment_locked(seg)
        self._acked = nxt
        if self._read <= Position(seg, 1 << 62):
            self._read = nxt
        self._save_cursor(nxt)

    def sync(self) -> None:
        with self._cv:
            if self.fsync and not self._closed and self._wfd >= 0:
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
        return any(s > pos.segment and n > self._start(s) for s, n in self._sizes.items())

    def unread(self) -> int:
        """Frames written and not yet handed to the reader."""
        with self._cv:
            return self.pending - self._inflight

    def wait_for_frames(self, n: int, timeout: float) -> None:
        """Wait until at least n frames are unread or timeout passes."""
        deadline = time.monotonic() + timeout
        with self._cv:
            while self.pending - self._inflight < n:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    return
                self._cv.wait(left)

    def read(self, max_frames: int) -> tuple[list[bytes], Position, int]:
        """Up to max_frames payloads after the read position, the position
        after them (to pass to ack), and the events lost to corruption in
        between (count them when acknowledging). Does not wait."""
        out: list[bytes] = []
        lost = 0
        pos = self._read
        while len(out) < max_frames:
            with self._cv:
                size = self._sizes.get(pos.segment, 0)
                later = [s for s in self._sizes if s > pos.segment]
            if pos.offset >= size:
                if not later:
                    break
                pos = Position(min(later), self._start(min(later)))
                continue
            fd = self._rfds.get(pos.segment)
            if fd is None:
                fd = self._rfds[pos.segment] = self._open_segment(pos.segment, os.O_RDONLY)
            want = min(size - pos.offset, _CHUNK)
            chunk = os.pread(fd, want, pos.offset)
            complete = pos.offset + len(chunk) >= size
            parse = parse_legacy_frames if pos.segment in self._legacy else parse_frames
            found = parse(chunk, complete, max_frames - len(out))
            out.extend(found.payloads)
            lost += found.lost
            if found.used == 0:
                break  # nothing readable here yet
            pos = Position(pos.segment, pos.offset + found.used)
        with self._cv:
            self._read = pos
            self._inflight += len(out)
        return out, pos, lost

    def rewind(self) -> None:
        """Forget frames handed out but not acked (they will be read again)."""
        with self._cv:
            self._read = self._acked
            self._inflight = 0

    def ack(self, pos: Position, frames: int) -> None:
        """Everything before `pos` is delivered (or counted as lost)."""
        with self._cv:
            self._save_cursor(pos)
            self._acked = pos
            self.pending -= frames
            self._inflight -= frames
            for seg in [s for s in self._sizes if s < pos.segment]:
                self._remove_segment_locked(seg)
            # a finished segment that is fully acked and not the write segment
            if pos.segment != self._wseg and pos.offset >= self._sizes.get(pos.segment, 0):
                later = [s for s in self._sizes if s > pos.segment]
                if later:
                    nxt = Position(min(later), self._start(min(later)))
                    self._remove_segment_locked(pos.segment)
                    self._acked = nxt
                    if self._read.segment == pos.segment:
                        self._read = nxt
                    self._save_cursor(nxt)
            else:
                self._punch_acked_locked(pos)
            self._cv.notify_all()

    def _punch_acked_locked(self, pos: Position) -> None:
        """Free the disk blocks of a segment's acknowledged prefix as it grows
        (the first page, with the segment header, stays): what lets a full
        disk drain. The segment's size still counts until it is deleted."""
        done = self._punched.get(pos.segment, 0)
        if pos.offset - done < PUNCH_STEP or pos.segment in self._legacy:
            return
        try:
            fd = self._open_segment(pos.segment, os.O_WRONLY)
        except OSError:
            return
        try:
            _punch(fd, max(done, 4096), pos.offset)
        finally:
            os.close(fd)
        self._punched[pos.segment] = pos.offset

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
            if self._wfd >= 0:
                if self.fsync:
                    os.fsync(self._wfd)
                os.close(self._wfd)
            for fd in self._rfds.values():
                os.close(fd)
            self._rfds.clear()
            self._position.close()
            self._cv.notify_all()
        os.close(self._lockfd)
        os.close(self._dfd)
