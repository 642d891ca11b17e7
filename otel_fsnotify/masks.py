"""Decode inotify (IN_*) and fanotify (FAN_*) event masks.

Exact backends see the kernel's internal fsnotify mask (FS_*), which shares the
uapi bit values for the public events but also carries internal bits such as
FS_EVENT_ON_CHILD. Those are named with their FS_ name so nothing is silently
dropped; bits nobody has named come out as hex (``0x00800000``).
"""

from __future__ import annotations

# include/uapi/linux/inotify.h
IN_BITS: dict[int, str] = {
    0x00000001: "IN_ACCESS",
    0x00000002: "IN_MODIFY",
    0x00000004: "IN_ATTRIB",
    0x00000008: "IN_CLOSE_WRITE",
    0x00000010: "IN_CLOSE_NOWRITE",
    0x00000020: "IN_OPEN",
    0x00000040: "IN_MOVED_FROM",
    0x00000080: "IN_MOVED_TO",
    0x00000100: "IN_CREATE",
    0x00000200: "IN_DELETE",
    0x00000400: "IN_DELETE_SELF",
    0x00000800: "IN_MOVE_SELF",
    0x00002000: "IN_UNMOUNT",
    0x00004000: "IN_Q_OVERFLOW",
    0x00008000: "IN_IGNORED",
    0x40000000: "IN_ISDIR",
}

# include/uapi/linux/fanotify.h
FAN_BITS: dict[int, str] = {
    0x00000001: "FAN_ACCESS",
    0x00000002: "FAN_MODIFY",
    0x00000004: "FAN_ATTRIB",
    0x00000008: "FAN_CLOSE_WRITE",
    0x00000010: "FAN_CLOSE_NOWRITE",
    0x00000020: "FAN_OPEN",
    0x00000040: "FAN_MOVED_FROM",
    0x00000080: "FAN_MOVED_TO",
    0x00000100: "FAN_CREATE",
    0x00000200: "FAN_DELETE",
    0x00000400: "FAN_DELETE_SELF",
    0x00000800: "FAN_MOVE_SELF",
    0x00001000: "FAN_OPEN_EXEC",
    0x00004000: "FAN_Q_OVERFLOW",
    0x00008000: "FAN_FS_ERROR",
    0x00010000: "FAN_OPEN_PERM",
    0x00020000: "FAN_ACCESS_PERM",
    0x00040000: "FAN_OPEN_EXEC_PERM",
    0x00100000: "FAN_PRE_ACCESS",
    0x01000000: "FAN_MNT_ATTACH",
    0x02000000: "FAN_MNT_DETACH",
    0x08000000: "FAN_EVENT_ON_CHILD",
    0x10000000: "FAN_RENAME",
    0x40000000: "FAN_ONDIR",
}

# include/linux/fsnotify_backend.h: bits of the internal mask that inotify's
# uapi does not define. Shown by exact backends, which read the kernel mask.
FS_INTERNAL_BITS: dict[int, str] = {
    0x00001000: "FS_OPEN_EXEC",
    0x00010000: "FS_OPEN_PERM",
    0x00020000: "FS_ACCESS_PERM",
    0x00040000: "FS_OPEN_EXEC_PERM",
    0x00100000: "FS_PRE_ACCESS",
    0x08000000: "FS_EVENT_ON_CHILD",
    0x10000000: "FS_RENAME",
    0x20000000: "FS_DN_MULTISHOT",
}

# fs/notify/fanotify/fanotify.h: enum fanotify_event_type, in kernel order.
FANOTIFY_EVENT_TYPES: tuple[str, ...] = (
    "FANOTIFY_EVENT_TYPE_FID",
    "FANOTIFY_EVENT_TYPE_FID_NAME",
    "FANOTIFY_EVENT_TYPE_PATH",
    "FANOTIFY_EVENT_TYPE_PATH_PERM",
    "FANOTIFY_EVENT_TYPE_OVERFLOW",
    "FANOTIFY_EVENT_TYPE_FS_ERROR",
    "FANOTIFY_EVENT_TYPE_MNT",
)

# include/uapi/linux/fanotify.h: response values written by a permission listener.
FAN_ALLOW = 0x01
FAN_DENY = 0x02


def _names(mask: int, *tables: dict[int, str]) -> list[str]:
    names: list[str] = []
    bit = 1
    while bit <= mask:
        if mask & bit:
            for table in tables:
                if bit in table:
                    names.append(table[bit])
                    break
            else:
                names.append(f"0x{bit:08x}")
        bit <<= 1
    return names


def inotify_mask_names(mask: int) -> list[str]:
    """IN_* names for an inotify (or internal FS_*) mask, low bit first."""
    return _names(mask, IN_BITS, FS_INTERNAL_BITS)


def fanotify_mask_names(mask: int) -> list[str]:
    """FAN_* names for a fanotify mask, low bit first."""
    return _names(mask, FAN_BITS)


_NAMES_CACHE: dict[tuple[bool, int], list[str]] = {}
_NAMES_CACHE_MAX = 4096


def names(mask: int, fanotify: bool) -> list[str]:
    """inotify_mask_names / fanotify_mask_names memoised per mask, for the
    backends' hot paths. The list is shared between events: never mutate it."""
    got = _NAMES_CACHE.get((fanotify, mask))
    if got is None:
        got = fanotify_mask_names(mask) if fanotify else inotify_mask_names(mask)
        if len(_NAMES_CACHE) < _NAMES_CACHE_MAX:
            _NAMES_CACHE[(fanotify, mask)] = got
    return got


def fanotify_event_type_name(index: int) -> str:
    if 0 <= index < len(FANOTIFY_EVENT_TYPES):
        return FANOTIFY_EVENT_TYPES[index]
    return f"FANOTIFY_EVENT_TYPE_{index}"


def fa_response_name(response: int) -> str:
    """Name a permission response (FAN_ALLOW/FAN_DENY, possibly with FAN_AUDIT bits)."""
    if response & FAN_DENY:
        return "deny"
    if response & FAN_ALLOW:
        return "allow"
    return "na"


# Normalised action, in the order of precedence used when several bits are set
# (a rename is a rename before it is an attribute change, and so on).
_ACTIONS: tuple[tuple[int, str], ...] = (
    (0x00004000, "overflow"),
    (0x00008000, "ignored"),  # IN_IGNORED / FAN_FS_ERROR share the bit; see action()
    (0x10000000, "rename"),
    (0x00000040, "rename"),
    (0x00000080, "rename"),
    (0x00000800, "rename"),
    (0x00000100, "create"),
    (0x00000200, "delete"),
    (0x00000400, "delete"),
    (0x00002000, "unmount"),
    (0x00040000, "open_exec"),
    (0x00001000, "open_exec"),
    (0x00010000, "open"),
    (0x00020000, "access"),
    (0x00100000, "access"),
    (0x00000020, "open"),
    (0x00000008, "close_write"),
    (0x00000010, "close_nowrite"),
    (0x00000002, "modify"),
    (0x00000004, "attrib"),
    (0x00000001, "access"),
)


def action(mask: int, fanotify: bool = False) -> str:
    """One normalised verb for a mask (create, modify, delete, rename...)."""
    for bit, verb in _ACTIONS:
        if mask & bit:
            if bit == 0x00008000 and fanotify:
                return "error"
            return verb
    return "other"
