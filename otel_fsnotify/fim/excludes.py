"""Which paths under the watched trees are left out (`--exclude GLOB`).

A pattern without "/" matches a basename anywhere (`*.swp`, `.git`); one
with "/" matches the full path, anchored at both ends: `*` and `?` stay
within one path component, `**` spans any number of them (`/var/log/**`,
`**/node_modules/**`). A path pattern that can match nothing under any
watched path is a mistake, refused at start with one line.
"""

from __future__ import annotations

import fnmatch
import os
import re

_GLOB_CHARS = "*?["


class ExcludeError(ValueError):
    """A pattern that cannot work (one line naming it)."""


def _path_regex(pattern: str) -> re.Pattern:
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**", i):
            out.append(".*")
            i += 2
            if pattern.startswith("/", i) and out[-1] == ".*":
                out[-1] = "(?:.*/)?"  # `**/` also matches no directory at all
                i += 1
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        elif pattern[i] == "[":
            end = pattern.find("]", i + 2)
            if end < 0:
                out.append(re.escape("["))
                i += 1
                continue
            body = pattern[i + 1:end].replace("\\", "\\\\")
            out.append("[^" + body[1:] + "]" if body.startswith("!") else "[" + body + "]")
            i = end + 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _literal_dir(pattern: str) -> str:
    """The directory a path pattern is fixed to before its first wildcard."""
    cut = min((pattern.find(c) for c in _GLOB_CHARS if c in pattern), default=len(pattern))
    head = pattern[:cut]
    return head if cut == len(pattern) else head[: head.rfind("/") + 1] or "/"


def _under(path: str, root: str) -> bool:
    root = root.rstrip("/") or "/"
    return path == root or path.startswith(root if root.endswith("/") else root + "/")


class Excludes:
    def __init__(self, patterns: list[str], watched: list[str]):
        self.patterns = list(patterns)
        self._names: list[str] = []
        self._paths: list[re.Pattern] = []
        for pattern in patterns:
            if not pattern or pattern.strip() != pattern:
                raise ExcludeError(f"exclude {pattern!r}: empty, or spaces around it")
            if "/" not in pattern:
                self._names.append(pattern)
                continue
            if not pattern.startswith(("/", "**")):
                raise ExcludeError(f"exclude {pattern!r}: a pattern with / matches the full path: "
                                   "start it with / or **")
            if not any(self._can_match(pattern, w) for w in watched):
                raise ExcludeError(f"exclude {pattern!r} can never match a path under the watched "
                                   f"paths ({', '.join(watched)})")
            self._paths.append(_path_regex(pattern.rstrip("/") or "/"))

    @staticmethod
    def _can_match(pattern: str, watched: str) -> bool:
        if pattern.startswith("**"):
            return True
        fixed = _literal_dir(pattern)
        watched = os.path.normpath(watched)
        return _under(fixed.rstrip("/") or "/", watched) or _under(watched, fixed.rstrip("/") or "/")

    def excluded(self, path: str) -> bool:
        """Whether path (absolute, normalised) is left out: it, or a directory
        above it, matches a pattern (an excluded directory takes its subtree)."""
        parts = path.split("/")
        for depth in range(len(parts), 1, -1):
            if any(fnmatch.fnmatchcase(parts[depth - 1], p) for p in self._names):
                return True
            prefix = "/".join(parts[:depth])
            if any(rx.fullmatch(prefix) for rx in self._paths):
                return True
        return False

    def __bool__(self) -> bool:
        return bool(self.patterns)
