"""A real fanotify listener (ctypes; the ABI from otel_fsnotify.kernel.abi) for the tests.

    python -m tests.harness.fanotify_listener MODE PATH [options]   (from the repository root)

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
import errno
import os
import signal
import sys

from otel_fsnotify.kernel.abi import (
    FAN_ALLOW, FAN_CLASS_CONTENT, FAN_CLASS_NOTIF, FAN_CLOEXEC, FAN_CLOSE_NOWRITE,
    FAN_CLOSE_WRITE, FAN_DENY, FAN_EVENT_ON_CHILD, FAN_MARK_ADD, FAN_MARK_FILESYSTEM,
    FAN_MARK_MOUNT, FAN_METADATA, FAN_MODIFY, FAN_NOFD, FAN_OPEN, FAN_OPEN_PERM, FAN_Q_OVERFLOW,
    FAN_REPORT_DIR_FID, FAN_REPORT_FID, FAN_REPORT_NAME, FAN_REPORT_TID, FAN_RESPONSE,
    fanotify_init, fanotify_mark)

MODES = {
    "notify": (FAN_CLASS_NOTIF, FAN_OPEN | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE | FAN_MODIFY),
    "perm-allow": (FAN_CLASS_CONTENT, FAN_OPEN_PERM),
    "perm-deny": (FAN_CLASS_CONTENT, FAN_OPEN_PERM),
    "stall": (FAN_CLASS_CONTENT, FAN_OPEN_PERM),
}


def _fd_path(fd: int) -> str:
    if fd == FAN_NOFD:
        return ""
    try:
        return os.readlink(f"/proc/self/fd/{fd}")
    except OSError:
        return ""


def _stop(signum, frame):
    raise SystemExit(0)


def _arguments(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mode", choices=sorted(MODES))
    ap.add_argument("path", help="file or directory to mark (directory: its children too)")
    ap.add_argument("--mount", action="store_true", help="mark the whole mount instead")
    ap.add_argument("--filesystem", action="store_true", help="mark the whole filesystem")
    ap.add_argument("--mask", type=lambda s: int(s, 0), default=0, help="override the event mask")
    ap.add_argument("--fid", action="store_true",
                    help="FAN_REPORT_DFID_NAME | FAN_REPORT_FID: events carry file handles and "
                         "names, no fd (needed for --mask with FAN_CREATE etc.)")
    ap.add_argument("--tid", action="store_true", help="FAN_REPORT_TID: events carry thread ids")
    ap.add_argument("--count", type=int, default=0, help="exit after this many events")
    ap.add_argument("--quiet", action="store_true", help="print only READY and a final total")
    return ap.parse_args(argv)


def _open_group(args) -> int:
    """The fanotify group with its mark in place (OSError if refused)."""
    klass, mask = MODES[args.mode]
    mask = args.mask or mask
    mark_flags = FAN_MARK_ADD
    if args.mount:
        mark_flags |= FAN_MARK_MOUNT
    elif args.filesystem:
        mark_flags |= FAN_MARK_FILESYSTEM
    elif os.path.isdir(args.path):
        mask |= FAN_EVENT_ON_CHILD
    init = FAN_CLOEXEC | klass
    if args.fid:
        init |= FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME
    if args.tid:
        init |= FAN_REPORT_TID
    fan = fanotify_init(init)
    fanotify_mark(fan, mark_flags, mask, args.path)
    return fan


def _handle(fan: int, args, emask: int, efd: int, pid: int) -> None:
    """Print one event; answer it in the permission modes (not "stall")."""
    path = _fd_path(efd)
    if not args.quiet:
        tag = "OVERFLOW" if emask & FAN_Q_OVERFLOW else "EVENT"
        print(f"{tag} pid={pid} mask=0x{emask:x} fd={efd} path={path}", flush=True)
    if emask & FAN_OPEN_PERM and args.mode != "stall":
        verdict = FAN_DENY if args.mode == "perm-deny" else FAN_ALLOW
        os.write(fan, FAN_RESPONSE.pack(efd, verdict))
        if not args.quiet:
            print(f"RESPONSE pid={pid} response={'deny' if verdict == FAN_DENY else 'allow'} "
                  f"path={path}", flush=True)
    if efd >= 0 and args.mode != "stall":
        os.close(efd)


def _listen(fan: int, args, seen: list[int]) -> None:
    """Read and handle events until signalled or --count; seen[0] counts them
    (kept when a signal ends the loop)."""
    while True:
        try:
            buf = os.read(fan, 64 * 1024)
        except InterruptedError:
            continue
        off = 0
        while off + FAN_METADATA.size <= len(buf):
            event_len, _vers, _res, _mlen, emask, efd, pid = FAN_METADATA.unpack_from(buf, off)
            off += event_len or FAN_METADATA.size
            seen[0] += 1
            _handle(fan, args, emask, efd, pid)
            if args.count and seen[0] >= args.count:
                return


def main(argv=None) -> int:
    args = _arguments(argv)
    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    try:
        fan = _open_group(args)
    except OSError as exc:
        print(f"fanotify_listener: {exc}", file=sys.stderr)
        return 1
    print("READY", flush=True)
    seen = [0]
    status = 0
    try:
        _listen(fan, args, seen)
    except SystemExit:
        pass
    except OSError as exc:
        if exc.errno != errno.EBADF:
            print(f"fanotify_listener: {exc}", file=sys.stderr)
            status = 1
    finally:
        if args.quiet:
            print(f"TOTAL {seen[0]}", flush=True)
    return status


if __name__ == "__main__":
    sys.exit(main())
