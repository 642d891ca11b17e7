"""Ring buffer records declared once: a table of (field, struct code) in the C
struct's order builds both the `struct.Struct` that unpacks it and a named
tuple type, so decoders read `rec.tgid`, never position 3.

Packing is "=" (native order, no padding): the C structs are laid out so that
no padding falls inside them, and each program asserts its size against the
one computed here (passed as a -D macro), so a field added on one side only
fails the compile instead of shifting every field after it.
"""

from __future__ import annotations

import struct
from collections import namedtuple
from typing import Any, Sequence

Fields = Sequence[tuple[str, str]]

# struct proc_id (bpf/fsnotify_common.h)
PROC_ID: Fields = (
    ("pid", "I"), ("tid", "I"), ("ppid", "I"), ("uid", "I"), ("gid", "I"), ("ruid", "I"),
    ("suid", "I"), ("mntns_id", "I"),
    ("comm", "16s"), ("pcomm", "16s"),
)
# struct path_walk (bpf/fsnotify_common.h)
PATH_WALK: Fields = (("len", "I"), ("depth", "I"), ("complete", "I"), ("root_depth", "I"))
ROOT_NOT_PASSED = 0xFFFFFFFF  # path_walk.root_depth: the walk never passed the reader's root


def walked_path(components: bytes, depth: int, complete: int, root_depth: int) -> tuple[str, str]:
    """From a path_walk's components (leaf first, NUL-ended): (the path as
    the reading task resolves it, the path from its mount namespace's root).
    They differ when the reader runs under another root (chroot,
    RootDirectory=); a file outside that root is resolved from the
    namespace's root, as d_path() does. A walk cut short (too deep, too
    long) gives ("...<the part walked>", "")."""
    if not depth:
        return "", ""
    parts = components.split(b"\0")[:depth]
    parts.reverse()
    ns_path = "/" + b"/".join(parts).decode(errors="replace")
    if not complete:
        return "..." + ns_path, ""
    if root_depth >= depth:  # ROOT_NOT_PASSED, or passed at the namespace's root
        return ns_path, ns_path
    return "/" + b"/".join(parts[depth - root_depth:]).decode(errors="replace"), ns_path


def nested(prefix: str, fields: Fields) -> list[tuple[str, str]]:
    """An embedded struct's fields, named prefix_field."""
    return [(f"{prefix}_{name}", code) for name, code in fields]


class RecordLayout:
    """One C record: `unpack_from(buf, off)` gives a named tuple; `size` is
    what the C side asserts; `pack(**fields)` builds one (tests, missing
    fields 0 / b"")."""

    def __init__(self, name: str, fields: Fields):
        self.name = name
        self.fields = tuple(fields)
        self.struct = struct.Struct("=" + "".join(code for _, code in self.fields))
        self.size = self.struct.size
        self.type = namedtuple(name, [n for n, _ in self.fields])
        make, unpack = self.type._make, self.struct.unpack_from
        self.unpack_from = lambda buf, off=0: make(unpack(buf, off))

    def pack(self, **values: Any) -> bytes:
        unknown = set(values) - set(self.type._fields)
        if unknown:
            raise KeyError(f"{self.name} has no field {sorted(unknown)[0]}")
        return self.struct.pack(*(values.get(n, b"" if code.endswith("s") else 0)
                                  for n, code in self.fields))

    def size_macro(self, macro: str) -> str:
        return f"-D{macro}={self.size}"


def cstr(raw: bytes) -> str:
    """A NUL-padded C string (comm, a name) as text."""
    return raw.split(b"\0", 1)[0].decode("utf-8", errors="replace")
