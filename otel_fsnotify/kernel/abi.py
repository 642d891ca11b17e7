"""The inotify / fanotify user-space ABI in one place: flag and event bit
values, the records a listener reads and writes, and libc wrappers.

Values are from include/uapi/linux/fanotify.h and inotify.h. The *names* of
mask bits (for i_mask_names / fa_mask_names) live in masks.py; this module
holds what code needs to build, parse and call.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import struct

# -- fanotify_init(2) flags ----------------------------------------------------
FAN_CLOEXEC = 0x1
FAN_NONBLOCK = 0x2
FAN_CLASS_NOTIF = 0x0
FAN_CLASS_CONTENT = 0x4
FAN_CLASS_PRE_CONTENT = 0x8
FAN_CLASS_PERM_BITS = FAN_CLASS_CONTENT | FAN_CLASS_PRE_CONTENT
FAN_UNLIMITED_QUEUE = 0x10
FAN_REPORT_PIDFD = 0x80
FAN_REPORT_TID = 0x100
FAN_REPORT_FID = 0x200
FAN_REPORT_DIR_FID = 0x400
FAN_REPORT_NAME = 0x800
FAN_REPORT_TARGET_FID = 0x1000
FAN_REPORT_FD_ERROR = 0x2000
FAN_REPORT_MNT = 0x4000
FAN_REPORT_DFID_NAME = FAN_REPORT_DIR_FID | FAN_REPORT_NAME  # 5.9
# any of these: events carry info records (file handles, names), no fd
FAN_REPORT_FID_BITS = (FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME
                       | FAN_REPORT_TARGET_FID | FAN_REPORT_MNT)

# -- fanotify_mark(2) flags ----------------------------------------------------
FAN_MARK_ADD = 0x1
FAN_MARK_REMOVE = 0x2
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100

# -- fanotify event bits ---------------------------------------------------------
FAN_ACCESS = 0x1
FAN_MODIFY = 0x2
FAN_ATTRIB = 0x4
FAN_CLOSE_WRITE = 0x8
FAN_CLOSE_NOWRITE = 0x10
FAN_OPEN = 0x20
FAN_MOVED_FROM = 0x40
FAN_MOVED_TO = 0x80
FAN_CREATE = 0x100
FAN_DELETE = 0x200
FAN_DELETE_SELF = 0x400
FAN_MOVE_SELF = 0x800
FAN_Q_OVERFLOW = 0x4000
FAN_OPEN_PERM = 0x10000
FAN_ACCESS_PERM = 0x20000
FAN_OPEN_EXEC_PERM = 0x40000
FAN_PRE_ACCESS = 0x100000
FAN_PERM_EVENTS = FAN_OPEN_PERM | FAN_ACCESS_PERM | FAN_OPEN_EXEC_PERM | FAN_PRE_ACCESS
FAN_EVENT_ON_CHILD = 0x08000000
FAN_RENAME = 0x10000000  # 5.17: one event with both names
FAN_ONDIR = 0x40000000

# -- responses -------------------------------------------------------------------
FAN_ALLOW = 0x1
FAN_DENY = 0x2
FAN_NOFD = -1

# -- info records after the metadata (FID modes) ---------------------------------
FAN_EVENT_INFO_TYPE_FID = 1
FAN_EVENT_INFO_TYPE_DFID_NAME = 2
FAN_EVENT_INFO_TYPE_DFID = 3
FAN_EVENT_INFO_TYPE_OLD_DFID_NAME = 10
FAN_EVENT_INFO_TYPE_NEW_DFID_NAME = 12
# info types whose record ends with a NUL-terminated name after the handle
FAN_NAME_INFO_TYPES = (FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_OLD_DFID_NAME,
                       FAN_EVENT_INFO_TYPE_NEW_DFID_NAME)

# -- inotify ---------------------------------------------------------------------
IN_Q_OVERFLOW = 0x4000
IN_IGNORED = 0x8000
IN_ISDIR = 0x40000000
# inotify and fanotify share these event bits (IN_ACCESS .. IN_MOVE_SELF)
SHARED_EVENTS = 0x00000FFF

# -- open flags used with fanotify -----------------------------------------------
O_RDONLY = os.O_RDONLY
O_LARGEFILE = 0o100000  # os.O_LARGEFILE is 0 on 64-bit Python builds
O_PATH = 0o10000000
AT_FDCWD = -100

# -- records ---------------------------------------------------------------------
# struct fanotify_event_metadata: event_len, vers, reserved, metadata_len, mask, fd, pid
FAN_METADATA = struct.Struct("=IBBHQii")
# struct fanotify_event_info_header: info_type, pad, len
FAN_INFO_HDR = struct.Struct("=BBH")
# an info record's handle: after the header (4) and fsid (8): handle_bytes, handle_type
FAN_INFO_HANDLE_AT = 12
FILE_HANDLE_HDR = struct.Struct("=Ii")
# struct fanotify_response: fd, response
FAN_RESPONSE = struct.Struct("=iI")
# struct inotify_event: wd, mask, cookie, len (name follows)
INOTIFY_EVENT = struct.Struct("=iIII")

# -- libc --------------------------------------------------------------------------
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
libc.fanotify_init.restype = ctypes.c_int
libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                               ctypes.c_char_p]
libc.fanotify_mark.restype = ctypes.c_int
libc.inotify_init1.argtypes = [ctypes.c_int]
libc.inotify_init1.restype = ctypes.c_int
libc.open_by_handle_at.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_int]
libc.open_by_handle_at.restype = ctypes.c_int
libc.name_to_handle_at.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                                   ctypes.POINTER(ctypes.c_int), ctypes.c_int]
libc.name_to_handle_at.restype = ctypes.c_int
libc.statfs.argtypes = [ctypes.c_char_p, ctypes.c_void_p]
libc.statfs.restype = ctypes.c_int

MAX_HANDLE_SZ = 128
AT_SYMLINK_FOLLOW = 0x400
# struct statfs (x86_64): seven longs, then __kernel_fsid_t f_fsid (two ints)
STATFS_SIZE = 120
STATFS_FSID_AT = 56


def errno_error(what: str) -> OSError:
    """An OSError from the errno the last libc call left."""
    e = ctypes.get_errno()
    return OSError(e, f"{what}: {os.strerror(e)}")


def fanotify_init(flags: int, event_f_flags: int = O_RDONLY | O_LARGEFILE) -> int:
    """A new fanotify group's fd; OSError on failure."""
    fd = libc.fanotify_init(flags, event_f_flags)
    if fd < 0:
        raise errno_error("fanotify_init")
    return fd


def fanotify_mark(fd: int, flags: int, mask: int, path: str | bytes,
                  dirfd: int = AT_FDCWD) -> None:
    """fanotify_mark(2) on a path; OSError on failure."""
    raw = path.encode() if isinstance(path, str) else path
    if libc.fanotify_mark(fd, flags, mask, dirfd, raw) < 0:
        raise errno_error(f"fanotify_mark {raw.decode(errors='replace')}")


def inotify_init1(flags: int) -> int:
    fd = libc.inotify_init1(flags)
    if fd < 0:
        raise errno_error("inotify_init1")
    return fd


def open_by_handle_at(mount_fd: int, handle_type: int, handle: bytes, flags: int) -> int:
    """An fd of the object behind an exportfs file handle; OSError on failure."""
    fh = FILE_HANDLE_HDR.pack(len(handle), handle_type) + handle
    buf = ctypes.create_string_buffer(fh, len(fh))
    fd = libc.open_by_handle_at(mount_fd, buf, flags)
    if fd < 0:
        raise errno_error("open_by_handle_at")
    return fd


def name_to_handle_at(path: str) -> tuple[int, bytes]:
    """(handle_type, handle bytes) of path (not following a final symlink):
    the handle fanotify reports for that object; OSError on failure."""
    buf = ctypes.create_string_buffer(FILE_HANDLE_HDR.size + MAX_HANDLE_SZ)
    FILE_HANDLE_HDR.pack_into(buf, 0, MAX_HANDLE_SZ, 0)
    mount_id = ctypes.c_int()
    if libc.name_to_handle_at(AT_FDCWD, os.fsencode(path), buf, ctypes.byref(mount_id), 0) < 0:
        raise errno_error(f"name_to_handle_at {path}")
    size, htype = FILE_HANDLE_HDR.unpack_from(buf, 0)
    return htype, buf.raw[FILE_HANDLE_HDR.size: FILE_HANDLE_HDR.size + size]


def fsid(path: str) -> bytes:
    """The filesystem id statfs(2) gives for path: the 8 bytes fanotify puts
    in each info record (struct fanotify_event_info_fid.fsid)."""
    buf = ctypes.create_string_buffer(STATFS_SIZE)
    if libc.statfs(os.fsencode(path), buf) < 0:
        raise errno_error(f"statfs {path}")
    return buf.raw[STATFS_FSID_AT: STATFS_FSID_AT + 8]
