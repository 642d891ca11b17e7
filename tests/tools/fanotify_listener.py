#!/usr/bin/env python3
"""A real fanotify listener (ctypes, no dependencies) for the tests.

Modes:
  notify      FAN_OPEN|FAN_CLOSE_WRITE|FAN_CLOSE_NOWRITE|FAN_MODIFY (or --mask) notifications
  perm-allow  FAN_OPEN_PERM, answers FAN_ALLOW
  perm-deny   FAN_OPEN_PERM, answers FAN_DENY (the opener gets EPERM)
  stall       FAN_OPEN_PERM, never answers (to produce interrupted verdicts)

Prints ``READY`` once the mark is in place, then one line per event:
  EVENT pid=<pid> mask=0x<mask> fd=<fd> path=<path>
and, for permission modes, after answering:
  RESPONSE pid=<pid> response=allow|deny path=<path>
Exits 0 on SIGTERM/SIGINT, or after --count events. Needs CAP_SYS_ADMIN.
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import errno
import os
import signal
import struct
import sys

FAN_CLOEXEC = 0x1
FAN_CLASS_NOTIF = 0x0
FAN_CLASS_CONTENT = 0x4
FAN_MARK_ADD = 0x1
FAN_MARK_MOUNT = 0x10
FAN_MARK_FILESYSTEM = 0x100

FAN_ACCESS = 0x1
FAN_MODIFY = 0x2
FAN_CLOSE_WRITE = 0x8
FAN_CLOSE_NOWRITE = 0x10
FAN_OPEN = 0x20
FAN_Q_OVERFLOW = 0x4000
FAN_OPEN_PERM = 0x10000
FAN_EVENT_ON_CHILD = 0x08000000
FAN_ALLOW = 0x1
FAN_DENY = 0x2
FAN_NOFD = -1

O_RDONLY = 0
O_LARGEFILE = 0o100000

METADATA = struct.Struct("=IBBHQii")  # struct fanotify_event_metadata (24 bytes)
RESPONSE = struct.Struct("=iI")  # struct fanotify_response

MODES = {
    "notify": (FAN_CLASS_NOTIF, FAN_OPEN | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE | FAN_MODIFY),
    "perm-allow": (FAN_CLASS_CONTENT, FAN_OPEN_PERM),
    "perm-deny": (FAN_CLASS_CONTENT, FAN_OPEN_PERM),
    "stall": (FAN_CLASS_CONTENT, FAN_OPEN_PERM),
}

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.fanotify_init.argtypes = [ctypes.c_uint, ctypes.c_uint]
_libc.fanotify_init.restype = ctypes.c_int
_libc.fanotify_mark.argtypes = [ctypes.c_int, ctypes.c_uint, ctypes.c_uint64, ctypes.c_int,
                                ctypes.c_char_p]
_libc.fanotify_mark.restype = ctypes.c_int


def _check(ret: int, what: str) -> int:
    if ret < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return ret


def fanotify_init(flags: int, event_f_flags: int = O_RDONLY | O_LARGEFILE) -> int:
    return _check(_libc.fanotify_init(flags, event_f_flags), "fanotify_init")


def fanotify_mark(fd: int, flags: int, mask: int, path: str, dirfd: int = -100) -> None:
    _check(_libc.fanotify_mark(fd, flags, mask, dirfd, path.encode()), f"fanotify_mark {path}")


def _fd_path(fd: int) -> str:
    if fd == FAN_NOFD:
        return ""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _stop(signum, frame):
    raise SystemExit(0)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("path", help="file or directory to mark (directory: its children too)")
    ap.add_argument("--mount", action="store_true", help="mark the whole mount instead")
    ap.add_argument("--filesystem", action="store_true", help="mark the whole filesystem")
    ap.add_argument("--mask", type=lambda s: int(s, 0), default=0, help="override the event mask")
    ap.add_argument("--count", type=int, default=0, help="exit after this many events")
    ap.add_argument("--quiet", action="store_true", help="print only READY and a final total")
    args = ap.parse_args(argv)

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    klass, mask = MODES[args.mode]
    mask = args.mask or mask
    mark_flags = FAN_MARK_ADD
    if args.mount:
        mark_flags |= FAN_MARK_MOUNT
    elif args.filesystem:
        mark_flags |= FAN_MARK_FILESYSTEM
    elif os.path.isdir(args.path):
        mask |= FAN_EVENT_ON_CHILD
    try:
        fan = fanotify_init(FAN_CLOEXEC | klass)
        fanotify_mark(fan, mark_flags, mask, args.path)
    except OSError as exc:
        print(f"fanotify_listener: {exc}", file=sys.stderr)
        return 1
    print("READY", flush=True)

    seen = 0
    try:
        while True:
            try:
                buf = os.read(fan, 64 * 1024)
            except InterruptedError:
                continue
            off = 0
            while off + METADATA.size <= len(buf):
                event_len, _vers, _res, _mlen, emask, efd, pid = METADATA.unpack_from(buf, off)
                off += event_len or METADATA.size
                path = _fd_path(efd)
                seen += 1
                if not args.quiet:
                    tag = "OVERFLOW" if emask & FAN_Q_OVERFLOW else "EVENT"
                    print(f"{tag} pid={pid} mask=0x{emask:x} fd={efd} path={path}", flush=True)
                if emask & FAN_OPEN_PERM and args.mode != "stall":
                    verdict = FAN_DENY if args.mode == "perm-deny" else FAN_ALLOW
                    os.write(fan, RESPONSE.pack(efd, verdict))
                    if not args.quiet:
                        print(f"RESPONSE pid={pid} response={'deny' if verdict == FAN_DENY else 'allow'} "
                              f"path={path}", flush=True)
                if efd >= 0 and args.mode != "stall":
                    os.close(efd)
                if args.count and seen >= args.count:
                    return 0
    except SystemExit:
        pass
    except OSError as exc:
        if exc.errno != errno.EBADF:
            print(f"fanotify_listener: {exc}", file=sys.stderr)
            return 1
    finally:
        if args.quiet:
            print(f"TOTAL {seen}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
