"""The baseline: what each watched file looked like when last seen (path ->
metadata and hashes), in SQLite from the standard library.

WAL mode with synchronous=NORMAL: a committed change survives the agent being
killed (it may lose the last transactions on a power cut, never the file's
consistency). Writes are grouped in transactions by the caller (`batch()`):
a scan of 100,000 files is a few commits, not 100,000.
"""

from __future__ import annotations

import sqlite3
import stat
from contextlib import contextmanager
from typing import Iterator

import msgspec

SCHEMA_VERSION = 1

_SCHEMA = """
CREATE TABLE IF NOT EXISTS files (
    path TEXT PRIMARY KEY, parent TEXT NOT NULL,
    size INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, ino INTEGER NOT NULL,
    hashes BLOB NOT NULL, hash_skipped TEXT NOT NULL
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS files_parent ON files (parent);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS roots (path TEXT PRIMARY KEY);
"""


class FileState(msgspec.Struct, frozen=True):
    """A file as seen: metadata from lstat, content hashes (or why not)."""

    size: int
    mode: int  # st_mode
    uid: int
    gid: int
    mtime_ns: int
    ino: int
    hashes: dict[str, str] = {}  # algorithm -> lowercase hex
    hash_skipped: str = ""  # "", too_large, vanished, unreadable, not_regular


def same_metadata(before: FileState, now: FileState) -> bool:
    """Nothing lstat shows has moved: a scan need not read the content."""
    return (before.size, before.mtime_ns, before.ino, before.mode, before.uid, before.gid) == (
        now.size, now.mtime_ns, now.ino, now.mode, now.uid, now.gid)


def change(before: FileState | None, now: FileState | None) -> str:
    """The action that turns `before` into `now`: created, deleted, modified
    (the content: hashes, size or the file itself), attributes (mode, owner,
    or times over the same content), or "" when nothing changed."""
    if before is None:
        return "created" if now is not None else ""
    if now is None:
        return "deleted"
    if stat.S_ISDIR(before.mode) and stat.S_ISDIR(now.mode):
        # a directory's size and times follow its entries: those are reported
        # as the entries' own changes
        return "attributes" if (before.mode, before.uid, before.gid) != (
            now.mode, now.uid, now.gid) else ""
    if before.hashes and now.hashes and set(before.hashes) == set(now.hashes):
        content_changed = before.hashes != now.hashes
    else:  # not hashed (too large, not regular): the metadata is all there is
        content_changed = before.mtime_ns != now.mtime_ns
    if content_changed or (before.size, before.ino) != (now.size, now.ino) or (
            before.mode & 0o170000) != (now.mode & 0o170000):
        return "modified"
    if (before.mode, before.uid, before.gid, before.mtime_ns) != (
            now.mode, now.uid, now.gid, now.mtime_ns):
        return "attributes"
    return ""


_hashes_enc = msgspec.msgpack.Encoder()
_hashes_dec = msgspec.msgpack.Decoder(dict[str, str])


class BaselineError(RuntimeError):
    """The baseline file cannot be used (one line: which file, why)."""


class Baseline:
    def __init__(self, path: str):
        self.path = path
        try:
            self._db = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(_SCHEMA)
            version = self._meta("schema_version")
            if version is None:
                self._db.execute("INSERT INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
            elif version != str(SCHEMA_VERSION):
                raise BaselineError(f"baseline {path}: schema version {version}, this agent "
                                    f"reads {SCHEMA_VERSION}")
        except sqlite3.DatabaseError as exc:
            raise BaselineError(f"baseline {path}: {exc}") from None

    def _meta(self, key: str) -> str | None:
        row = self._db.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
        return row[0] if row else None

    def recorded(self, root: str) -> bool:
        """Whether a first full scan of root has completed into this baseline
        (a root watched for the first time is recorded without events)."""
        return self._db.execute("SELECT 1 FROM roots WHERE path = ?", (root,)).fetchone() is not None

    def mark_recorded(self, root: str) -> None:
        self._db.execute("INSERT OR REPLACE INTO roots VALUES (?)", (root,))

    @contextmanager
    def batch(self) -> Iterator[None]:
        """One transaction around many changes (inside another: part of it)."""
        if self._db.in_transaction:
            yield
            return
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def get(self, path: str) -> FileState | None:
        row = self._db.execute("SELECT size, mode, uid, gid, mtime_ns, ino, hashes, hash_skipped "
                               "FROM files WHERE path = ?", (path,)).fetchone()
        return None if row is None else _state(row)

    def put(self, path: str, state: FileState) -> None:
        self._db.execute("INSERT OR REPLACE INTO files VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                         (path, _parent(path), state.size, state.mode, state.uid, state.gid, state.mtime_ns,
                          state.ino, _hashes_enc.encode(state.hashes), state.hash_skipped))

    def delete(self, path: str) -> None:
        """Forget a file, or a directory and everything under it."""
        self._db.execute("DELETE FROM files WHERE path = ? OR (path > ? AND path < ?)",
                         (path, path + "/", path + "0"))  # "0" sorts right after "/"

    def rename(self, old: str, new: str) -> int:
        """A file or a whole directory moved: its entries follow (no
        delete/create per child). Returns how many entries moved."""
        with self.batch():
            self.delete(new)  # what the rename replaced
            cur = self._db.execute(
                "UPDATE files SET path = ? || substr(path, ?), parent = ? || substr(parent, ?) "
                "WHERE path > ? AND path < ?",
                (new, len(old) + 1, new, len(old) + 1, old + "/", old + "0"))
            moved = cur.rowcount
            cur = self._db.execute("UPDATE files SET path = ?, parent = ? WHERE path = ?",
                                   (new, _parent(new), old))
            return moved + cur.rowcount

    def under(self, root: str) -> Iterator[tuple[str, FileState]]:
        """Every entry at or under root, in path order."""
        root = root.rstrip("/") or "/"
        low, high = (root + "/", root + "0") if root != "/" else ("/", "0")
        for row in self._db.execute(
                "SELECT path, size, mode, uid, gid, mtime_ns, ino, hashes, hash_skipped FROM files "
                "WHERE path = ? OR (path >= ? AND path < ?) ORDER BY path", (root, low, high)):
            yield row[0], _state(row[1:])

    def children(self, directory: str) -> dict[str, FileState]:
        """The entries directly inside directory: name -> state."""
        cut = len(directory.rstrip("/")) + 1
        return {row[0][cut:]: _state(row[1:]) for row in self._db.execute(
            "SELECT path, size, mode, uid, gid, mtime_ns, ino, hashes, hash_skipped FROM files "
            "WHERE parent = ?", (directory,))}

    def __len__(self) -> int:
        return self._db.execute("SELECT count(*) FROM files").fetchone()[0]

    def close(self) -> None:
        self._db.close()


def _parent(path: str) -> str:
    head = path.rsplit("/", 1)[0]
    return head or "/"


def _state(row) -> FileState:
    size, mode, uid, gid, mtime_ns, ino, hashes, skipped = row
    return FileState(size, mode, uid, gid, mtime_ns, ino, _hashes_dec.decode(hashes), skipped)
