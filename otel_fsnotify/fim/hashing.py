"""A file's state for the baseline: lstat metadata and content hashes, read
once for every algorithm, bounded in size and (during scans) in rate.

Content is read with O_NOFOLLOW (a symlink is not followed: it is
`not_regular`) and O_NOATIME where the kernel allows it, so hashing does not
change what it measures. A file rewritten while it is hashed is hashed again
(once); one that vanishes is `vanished`, one the agent may not read
`unreadable`.
"""

from __future__ import annotations

import errno
import hashlib
import os
import stat
import time

from .baseline import FileState

ALGORITHMS = ("sha256", "sha1", "md5", "blake2b")
DEFAULT_MAX_FILE_SIZE = 100 << 20
CHUNK = 1 << 20


class HashConfigError(ValueError):
    """An algorithm this agent does not have (one line)."""


class Hasher:
    def __init__(self, algorithms: list[str] | tuple[str, ...] = ("sha256",),
                 max_file_size: int = DEFAULT_MAX_FILE_SIZE, bytes_per_s: float = 0.0):
        unknown = [a for a in algorithms if a not in ALGORITHMS]
        if unknown or not algorithms:
            raise HashConfigError(f"hash {unknown[0] if unknown else '(none)'!r}: expected one or "
                                  f"more of {', '.join(ALGORITHMS)}")
        self.algorithms = tuple(dict.fromkeys(algorithms))
        self.max_file_size = max_file_size
        self.bytes_per_s = bytes_per_s  # 0: as fast as the disk goes
        self.bytes_hashed = 0
        self._window = (time.monotonic(), 0)  # (start, bytes since) for the rate limit

    def state(self, path: str) -> FileState | None:
        """The file as it is now; None if it does not exist."""
        try:
            st = os.lstat(path)
        except FileNotFoundError:
            return None
        except OSError:
            return FileState(0, 0, 0, 0, 0, 0, hash_skipped="unreadable")
        if not stat.S_ISREG(st.st_mode):
            return metadata(st, skipped="not_regular")
        if st.st_size > self.max_file_size:
            return metadata(st, skipped="too_large")
        for _attempt in range(2):
            got = self._hash(path)
            if isinstance(got, str):
                return metadata(st, skipped=got)
            hashes, before, after = got
            if (before.st_size, before.st_mtime_ns) == (after.st_size, after.st_mtime_ns):
                return metadata(after, hashes=hashes)
            st = after  # rewritten while read: once more
        return metadata(st, hashes=hashes)

    def _hash(self, path: str):
        """(hashes, stat before, stat after) or the reason it was skipped."""
        try:
            fd = _open_quietly(path)
        except FileNotFoundError:
            return "vanished"
        except OSError as exc:
            return "not_regular" if exc.errno == errno.ELOOP else "unreadable"
        try:
            before = os.fstat(fd)
            if not stat.S_ISREG(before.st_mode):
                return "not_regular"
            digests = [hashlib.new(a) for a in self.algorithms]
            while chunk := os.read(fd, CHUNK):
                for d in digests:
                    d.update(chunk)
                self._account(len(chunk))
            after = os.fstat(fd)
        except OSError:
            return "unreadable"
        finally:
            os.close(fd)
        return {a: d.hexdigest() for a, d in zip(self.algorithms, digests)}, before, after

    def _account(self, n: int) -> None:
        """Count hashed bytes; sleep to hold bytes_per_s when it is set."""
        self.bytes_hashed += n
        if not self.bytes_per_s:
            return
        start, done = self._window
        done += n
        ahead = done / self.bytes_per_s - (time.monotonic() - start)
        if ahead > 0:
            time.sleep(ahead)
        if done > self.bytes_per_s * 10:  # a fresh window now and then
            self._window = (time.monotonic(), 0)
        else:
            self._window = (start, done)


def _open_quietly(path: str) -> int:
    flags = os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK
    try:
        return os.open(path, flags | os.O_NOATIME)
    except PermissionError:  # O_NOATIME needs the file's owner or CAP_FOWNER
        return os.open(path, flags)


def metadata(st: os.stat_result, hashes: dict[str, str] | None = None, skipped: str = "") -> FileState:
    return FileState(size=st.st_size, mode=st.st_mode, uid=st.st_uid, gid=st.st_gid,
                     mtime_ns=st.st_mtime_ns, ino=st.st_ino, hashes=hashes or {},
                     hash_skipped=skipped)
