"""A pass over one watched tree against the baseline: what was created,
modified, deleted or changed in attributes since it was recorded.

Unchanged files cost one lstat (their metadata equals the baseline's: no
read); only what moved is hashed. The pass is a generator that yields after
every entry, so the monitor interleaves it with live events and bounds the
work per turn; the caller holds the transaction.
"""

from __future__ import annotations

import os
import stat
from typing import Iterator, NamedTuple

from .baseline import Baseline, FileState, change, same_metadata
from .dir_paths import DirPaths
from .excludes import Excludes
from .hashing import Hasher, metadata


class Found(NamedTuple):
    action: str  # created | modified | deleted | attributes
    path: str
    state: FileState | None  # None: deleted (before holds what it was)
    before: FileState | None


class Scan:
    def __init__(self, root: str, fs: bytes, baseline: Baseline, hasher: Hasher,
                 excludes: Excludes, dirs: DirPaths):
        self.root = root
        self.fs = fs
        self.baseline = baseline
        self.hasher = hasher
        self.excludes = excludes
        self.dirs = dirs
        self.files = 0  # entries looked at
        self.errors = 0  # directories that could not be listed

    def run(self) -> Iterator[Found | None]:
        """Found changes, and None after each entry (a place to pause)."""
        yield from self._entry(self.root, None)
        stack = [self.root] if os.path.isdir(self.root) and not os.path.islink(self.root) else []
        while stack:
            directory = stack.pop()
            yield from self._directory(directory, stack)

    def _directory(self, directory: str, stack: list[str]) -> Iterator[Found | None]:
        self.dirs.learn(self.fs, directory)
        try:
            with os.scandir(directory) as it:
                names = sorted(e.name for e in it)
        except OSError:
            self.errors += 1
            return
        known = self.baseline.children(directory)
        prefix = directory.rstrip("/") + "/"
        for name in names:
            path = prefix + name
            before = known.pop(name, None)
            if self.excludes.excluded(path):
                if before is not None:
                    self.baseline.delete(path)  # excluded since it was recorded
                continue
            is_dir = yield from self._entry(path, before)
            if is_dir:
                stack.append(path)
        for name, before in known.items():  # recorded, gone now
            path = prefix + name
            if self.excludes.excluded(path):
                self.baseline.delete(path)
                continue
            yield from self._gone(path, before)

    def _entry(self, path: str, before: FileState | None):
        """Compare one entry; True when it is a directory to descend into."""
        if before is None and path == self.root:
            before = self.baseline.get(path)
        try:
            st = os.lstat(path)
        except OSError:
            return False  # vanished between listing and looking: live events tell
        self.files += 1
        now = metadata(st)
        is_dir = stat.S_ISDIR(st.st_mode)
        if before is not None and same_metadata(before, now) and (
                is_dir or not stat.S_ISREG(st.st_mode) or before.hash_skipped
                or set(before.hashes) == set(self.hasher.algorithms)):
            state = before  # unchanged: nothing to read
        elif stat.S_ISREG(st.st_mode):
            state = self.hasher.state(path)
            if state is None:
                return False
        else:
            state = metadata(st, skipped="not_regular")
        if state is not before:
            action = change(before, state)
            self.baseline.put(path, state)
            if action:
                yield Found(action, path, state, before)
        yield None
        return is_dir

    def _gone(self, path: str, before: FileState) -> Iterator[Found | None]:
        if stat.S_ISDIR(before.mode):
            for child, state in list(self.baseline.under(path)):
                if child != path:
                    yield Found("deleted", child, None, state)
        self.baseline.delete(path)
        yield Found("deleted", path, None, before)
