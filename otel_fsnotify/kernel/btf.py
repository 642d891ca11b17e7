"""Read struct layouts, enums and functions from the running kernel's BTF.

The portability rule of this project: every kernel struct field the BPF code
reads is at an offset resolved here, from /sys/kernel/btf/vmlinux, and handed
to the BPF compiler as a -D macro. bcc compiles against whatever kernel headers
tree exists (on the dev machines: Debian's 6.1 headers under a 6.18 kernel), so
offsetof() in BPF C would silently read the wrong bytes.

Only the parts of BTF needed for that are decoded: struct/union members (with
anonymous members flattened), enums, typedef/modifier chains and FUNC names.
"""

from __future__ import annotations

import functools
import struct

VMLINUX = "/sys/kernel/btf/vmlinux"

BTF_MAGIC = 0xEB9F
KIND_INT, KIND_PTR, KIND_ARRAY, KIND_STRUCT, KIND_UNION, KIND_ENUM = 1, 2, 3, 4, 5, 6
KIND_FWD, KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT = 7, 8, 9, 10, 11
KIND_FUNC, KIND_FUNC_PROTO, KIND_VAR, KIND_DATASEC, KIND_FLOAT = 12, 13, 14, 15, 16
KIND_DECL_TAG, KIND_TYPE_TAG, KIND_ENUM64 = 17, 18, 19

# Bytes that follow the 12-byte common header, per kind: fixed part and per-vlen item.
_EXTRA = {
    KIND_INT: (4, 0), KIND_ARRAY: (12, 0), KIND_STRUCT: (0, 12), KIND_UNION: (0, 12),
    KIND_ENUM: (0, 8), KIND_FUNC_PROTO: (0, 8), KIND_VAR: (4, 0), KIND_DATASEC: (0, 12),
    KIND_DECL_TAG: (4, 0), KIND_ENUM64: (0, 12),
}
_MODIFIERS = (KIND_TYPEDEF, KIND_VOLATILE, KIND_CONST, KIND_RESTRICT, KIND_TYPE_TAG)


class BtfError(RuntimeError):
    """BTF missing, malformed, or lacking a struct/member/function we need."""


class Btf:
    def __init__(self, data: bytes, source: str = VMLINUX):
        self.source = source
        if len(data) < 24:
            raise BtfError(f"{source}: too short to be BTF")
        magic, _ver, _flags, hdr_len = struct.unpack_from("<HBBI", data, 0)
        if magic != BTF_MAGIC:
            raise BtfError(f"{source}: not BTF (magic 0x{magic:04x})")
        type_off, type_len, str_off, str_len = struct.unpack_from("<IIII", data, 8)
        self._strs = data[hdr_len + str_off: hdr_len + str_off + str_len]
        self._data = data
        # id -> (kind, name_off, vlen, kind_flag, size_or_type, extra_offset)
        self._types: list[tuple[int, int, int, int, int, int]] = [(0, 0, 0, 0, 0, 0)]
        self._by_name: dict[tuple[int, str], int] = {}
        pos, end = hdr_len + type_off, hdr_len + type_off + type_len
        unpack = struct.unpack_from
        while pos < end:
            name_off, info, size = unpack("<III", data, pos)
            kind = (info >> 24) & 0x1F
            vlen = info & 0xFFFF
            fixed, per = _EXTRA.get(kind, (0, 0))
            self._types.append((kind, name_off, vlen, info >> 31, size, pos + 12))
            if name_off and kind in (KIND_STRUCT, KIND_UNION, KIND_ENUM, KIND_ENUM64,
                                     KIND_FUNC, KIND_TYPEDEF):
                self._by_name.setdefault((kind, self._str(name_off)), len(self._types) - 1)
            pos += 12 + fixed + per * vlen

    @classmethod
    @functools.lru_cache(maxsize=2)
    def load(cls, path: str = VMLINUX) -> "Btf":
        try:
            with open(path, "rb") as fh:
                return cls(fh.read(), path)
        except OSError as exc:
            raise BtfError(f"{path}: kernel BTF not readable ({exc.strerror}); "
                           "the kernel needs CONFIG_DEBUG_INFO_BTF=y") from None

    def _str(self, off: int) -> str:
        end = self._strs.index(b"\0", off)
        return self._strs[off:end].decode()

    def _resolve(self, type_id: int) -> int:
        while self._types[type_id][0] in _MODIFIERS:
            type_id = self._types[type_id][4]
        return type_id

    def _members(self, type_id: int):
        kind, _n, vlen, kflag, _s, extra = self._types[type_id]
        for i in range(vlen):
            name_off, mtype, off = struct.unpack_from("<III", self._data, extra + 12 * i)
            bit_off, bit_size = (off & 0xFFFFFF, off >> 24) if kflag else (off, 0)
            yield (self._str(name_off) if name_off else ""), mtype, bit_off, bit_size

    def _find_member(self, type_id: int, name: str):
        """(type_id, bit offset, bitfield size or 0) of a member, looking
        inside anonymous members."""
        for mname, mtype, bit_off, bit_size in self._members(type_id):
            if mname == name:
                return mtype, bit_off, bit_size
            if not mname:
                inner = self._resolve(mtype)
                if self._types[inner][0] in (KIND_STRUCT, KIND_UNION):
                    found = self._find_member(inner, name)
                    if found:
                        return found[0], bit_off + found[1], found[2]
        return None

    def struct_id(self, name: str) -> int:
        for kind in (KIND_STRUCT, KIND_UNION):
            tid = self._by_name.get((kind, name))
            if tid:
                return tid
        raise BtfError(f"{self.source}: no struct {name} in kernel BTF")

    def struct_size(self, name: str) -> int:
        return self._types[self.struct_id(name)][4]

    def offsetof(self, struct_name: str, member_path: str) -> int:
        """Byte offset of ``member_path`` (dots descend into embedded structs)."""
        tid = self.struct_id(struct_name)
        total = 0
        for part in member_path.split("."):
            found = self._find_member(self._resolve(tid), part)
            if found is None:
                raise BtfError(f"{self.source}: struct {struct_name} has no member "
                               f"{member_path} in this kernel")
            tid, bit_off, bit_size = found
            if bit_off % 8 or bit_size:
                raise BtfError(f"{struct_name}.{member_path} is a bitfield")
            total += bit_off // 8
        return total

    def bitfield(self, struct_name: str, member: str) -> tuple[int, int]:
        """(bit offset, bit width) of a bitfield member such as fanotify_event.type."""
        found = self._find_member(self._resolve(self.struct_id(struct_name)), member)
        if found is None:
            raise BtfError(f"{self.source}: struct {struct_name} has no member {member} in this kernel")
        _tid, bit_off, bit_size = found
        if not bit_size:
            raise BtfError(f"{struct_name}.{member} is not a bitfield")
        return bit_off, bit_size

    def has_member(self, struct_name: str, member_path: str) -> bool:
        try:
            self.offsetof(struct_name, member_path)
            return True
        except BtfError:
            return False

    def enum_members(self, enum_name: str) -> dict[str, int]:
        tid = self._by_name.get((KIND_ENUM, enum_name))
        if tid is None:
            raise BtfError(f"{self.source}: no enum {enum_name} in kernel BTF")
        _k, _n, vlen, _f, _s, extra = self._types[tid]
        out = {}
        for i in range(vlen):
            name_off, val = struct.unpack_from("<Ii", self._data, extra + 8 * i)
            out[self._str(name_off)] = val
        return out

    def has_func(self, name: str) -> bool:
        return (KIND_FUNC, name) in self._by_name

    def func_id(self, name: str) -> int:
        """BTF type id of a kernel function (0 if absent), for attaching by id."""
        return self._by_name.get((KIND_FUNC, name), 0)
