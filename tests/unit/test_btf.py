"""BTF offsets are read from the running kernel, not from header files."""

import struct

import pytest

from otel_fsnotify.kernel.btf import Btf, BtfError
from otel_fsnotify.kernel.layout import offset_macros


def _tiny_btf() -> bytes:
    """A hand-built BTF blob: struct outer { int a; struct { long b; }; struct inner in; }."""
    strings = b"\0int\0outer\0a\0b\0in\0inner\0c\0long\0"
    off = {s: strings.index(s.encode() + b"\0") for s in ("int", "outer", "a", "b", "in", "inner", "c", "long")}
    types = b""
    # 1: int (4 bytes)
    types += struct.pack("<III", off["int"], 1 << 24, 4) + struct.pack("<I", 32)
    # 2: long (8 bytes)
    types += struct.pack("<III", off["long"], 1 << 24, 8) + struct.pack("<I", 64)
    # 3: anonymous struct { long b; }
    types += struct.pack("<III", 0, (4 << 24) | 1, 8) + struct.pack("<III", off["b"], 2, 0)
    # 4: struct inner { int pad; int c; }  (c at byte 4)
    types += struct.pack("<III", off["inner"], (4 << 24) | 2, 8)
    types += struct.pack("<III", off["a"], 1, 0) + struct.pack("<III", off["c"], 1, 32)
    # 5: struct outer { int a; <anon> at 8; struct inner in at 16 }
    types += struct.pack("<III", off["outer"], (4 << 24) | 3, 24)
    types += struct.pack("<III", off["a"], 1, 0) + struct.pack("<III", 0, 3, 64)
    types += struct.pack("<III", off["in"], 4, 128)
    hdr = struct.pack("<HBBIIIII", 0xEB9F, 1, 0, 24, 0, len(types), len(types), len(strings))
    return hdr + types + strings


def test_offsets_from_a_known_blob():
    btf = Btf(_tiny_btf(), "tiny")
    assert btf.offsetof("outer", "a") == 0
    assert btf.offsetof("outer", "b") == 8  # found inside the anonymous member
    assert btf.offsetof("outer", "in.c") == 20
    assert btf.struct_size("outer") == 24
    assert offset_macros(btf, {"OUTER_IN_C": ("outer", "in.c")}) == ["-DOUTER_IN_C=20"]
    with pytest.raises(BtfError, match="struct outer has no member nope"):
        btf.offsetof("outer", "nope")
    with pytest.raises(BtfError, match="not BTF"):
        Btf(b"\0" * 32, "junk")


def test_running_kernel_has_the_fsnotify_structs():
    btf = Btf.load()
    assert btf.offsetof("task_struct", "tgid") > 0
    assert btf.struct_size("fsnotify_event") >= 16
    assert btf.has_func("fsnotify_destroy_event")
