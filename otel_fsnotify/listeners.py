"""`otel-fsnotify listeners`: every inotify and fanotify instance on the host,
what each watches, and how close each user is to the kernel's limits.

Read from /proc/*/fd and /proc/*/fdinfo (enrich/watches.py parses both
APIs' lines). A watched object's path comes from the file handle the
kernel prints for it, opened with open_by_handle_at(2) and placed in the
owner's view of the mounts (what `inotifywait` in a container watches is
shown where the container sees it). Nothing is loaded into the kernel, so
the `struct fsnotify_group` address that `--tracer-group` takes is not
listed: fdinfo does not print it, and reading it from the kernel would take
a BPF iterator over tasks' files, which bcc's Python cannot attach.
`--tracer-pid` selects the same listener by its pid.

A listener shared by several fds (inherited over fork, passed over a socket,
dup(2)) is one instance: listed and counted once, under the first process
that holds it, with the others in `also_held_by`. kcmp(2) says whether two
fds are one open file; where it is refused (no CONFIG_KCMP, a seccomp
filter), each fd is listed on its own.

The limits are per user (the kernel charges an instance, a watch, a group
or a mark to the effective uid that created it); the owner's current euid
stands in for that.
"""

from __future__ import annotations

import ctypes
import os
import platform
import sys

import msgspec

from .enrich import procs
from .enrich.mounts import MountViews, unescape
from .enrich.watches import FanMark, Listener, Watch, scan_pid
from .kernel.abi import O_PATH
from .event import utf8_text
from .masks import fanotify_mask_names, inotify_mask_names
from .table import printable

# fanotify_init(2) flags, include/uapi/linux/fanotify.h (the class is two bits)
FAN_CLASSES = {0x0: "notif", 0x4: "content", 0x8: "pre-content"}
FAN_INIT_BITS = {
    0x01: "FAN_CLOEXEC", 0x02: "FAN_NONBLOCK", 0x10: "FAN_UNLIMITED_QUEUE",
    0x20: "FAN_UNLIMITED_MARKS", 0x40: "FAN_ENABLE_AUDIT", 0x80: "FAN_REPORT_PIDFD",
    0x100: "FAN_REPORT_TID", 0x200: "FAN_REPORT_FID", 0x400: "FAN_REPORT_DIR_FID",
    0x800: "FAN_REPORT_NAME", 0x1000: "FAN_REPORT_TARGET_FID", 0x2000: "FAN_REPORT_FD_ERROR",
    0x4000: "FAN_REPORT_MNT",
}
# /proc/sys/fs/...: the per-user limits, by the name the row shows
LIMITS = {
    "max_user_instances": "inotify/max_user_instances",
    "max_user_watches": "inotify/max_user_watches",
    "max_user_groups": "fanotify/max_user_groups",
    "max_user_marks": "fanotify/max_user_marks",
}
SHOWN_PER_LISTENER = 8  # watched objects listed under a row of the table (json: all)


class Watched(msgspec.Struct):
    """One inotify watch or fanotify mark, and where its object is."""

    kind: str  # "inode" | "mount" | "filesystem"
    path: str  # as the owner sees it; "" when it cannot be resolved
    mount: str  # "ext4 at /": the filesystem, by its first mount in the owner's view
    mask: list[str]
    wd: int = -1  # inotify's watch descriptor (-1 for fanotify marks)
    ignored_mask: list[str] = []


class Holder(msgspec.Struct):
    """Another process fd by which one listener instance is held."""

    pid: int
    fd: int
    comm: str


class ListenerRow(msgspec.Struct):
    pid: int
    comm: str
    exe: str
    uid: int
    fd: int
    api: str  # "inotify" | "fanotify"
    fanotify_class: str = ""
    fanotify_flags: list[str] = []
    watches: int = 0  # inotify watches or fanotify marks
    watched: list[Watched] = []
    also_held_by: list[Holder] = []  # the same instance in other fds (fork, dup, SCM_RIGHTS)


class UserLimits(msgspec.Struct):
    uid: int
    used: dict[str, int]
    limit: dict[str, int]  # -1 where this kernel has no such limit


class Report(msgspec.Struct):
    listeners: list[ListenerRow]
    limits: list[UserLimits]
    unreadable_pids: int = 0  # processes whose fds this user may not read


def _flag_names(flags: int, table: dict[int, str]) -> list[str]:
    out, rest = [], flags
    for bit, name in table.items():
        if flags & bit:
            out.append(name)
            rest &= ~bit
    if rest:
        out.append(f"0x{rest:x}")
    return out


def _read(path: str) -> str:
    try:
        with open(path) as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _mount_by_id(pid: int, mnt_id: int) -> tuple[str, str]:
    """(mount point, filesystem type) of a mount id in pid's view, ("", "") if none."""
    try:
        with open(f"/proc/{pid}/mountinfo") as fh:
            for line in fh:
                parts = line.split(" ")
                if int(parts[0]) == mnt_id:
                    fstype = line.partition(" - ")[2].split(" ", 1)[0]
                    return unescape(parts[4]), fstype
    except (OSError, ValueError, IndexError):
        pass
    return "", ""


class _Resolver:
    """Paths of watched objects as their owner sees them."""

    def __init__(self):
        self.views = MountViews()

    def close(self) -> None:
        self.views.close()

    def mount_of(self, pid: int, dev: int) -> str:
        table = self.views.of(pid) or self.views.own()
        return table.describe(dev)

    def by_handle(self, pid: int, dev: int, ino: int, handle_type: int, handle: bytes) -> str:
        if not handle:
            return ""
        try:
            fd, fs_path = self.views.open_handle(dev, handle_type, handle, O_PATH | os.O_CLOEXEC, pid)
        except OSError:
            return ""
        try:
            if os.fstat(fd).st_ino != ino:
                return ""
        finally:
            os.close(fd)
        return self.views.view_of(pid, dev, fs_path) if fs_path else ""

    def inotify(self, pid: int, w: Watch) -> Watched:
        return Watched(kind="inode", wd=w.wd, mask=inotify_mask_names(w.mask),
                       path=self.by_handle(pid, w.sdev, w.ino, w.handle_type, w.handle),
                       mount=self.mount_of(pid, w.sdev))

    def fanotify(self, pid: int, m: FanMark) -> Watched:
        ignored = fanotify_mask_names(m.ignored_mask)
        if m.kind == "mount":
            point, fstype = _mount_by_id(pid, m.mnt_id)
            return Watched(kind="mount", path=point, mount=f"{fstype or 'mount'} at {point or '?'} (id {m.mnt_id})",
                           mask=fanotify_mask_names(m.mask), ignored_mask=ignored)
        mount = self.mount_of(pid, m.sdev)
        if m.kind == "filesystem":
            table = self.views.of(pid) or self.views.own()
            mounts = table.of_dev(m.sdev)
            return Watched(kind="filesystem", path=mounts[0].point if mounts else "", mount=mount,
                           mask=fanotify_mask_names(m.mask), ignored_mask=ignored)
        return Watched(kind="inode", mask=fanotify_mask_names(m.mask), ignored_mask=ignored, mount=mount,
                       path=self.by_handle(pid, m.sdev, m.ino, m.handle_type, m.handle))


def _row(lst: Listener, resolve: _Resolver) -> ListenerRow:
    pid = lst.pid
    uid_field = procs.status(pid).get("Uid", "")
    uid = int(uid_field.split()[1]) if len(uid_field.split()) > 1 else -1
    row = ListenerRow(pid=pid, comm=utf8_text(_read(f"/proc/{pid}/comm")), exe=utf8_text(procs.exe_path(pid)),
                      uid=uid, fd=lst.fd, api=lst.kind)
    if lst.kind == "inotify":
        row.watched = [resolve.inotify(pid, w) for w in sorted(lst.watches.values(), key=lambda w: w.wd)]
    else:
        row.fanotify_class = FAN_CLASSES.get(lst.fan_flags & 0xC, f"0x{lst.fan_flags & 0xC:x}")
        row.fanotify_flags = _flag_names(lst.fan_flags & ~0xC, FAN_INIT_BITS)
        row.watched = [resolve.fanotify(pid, m) for m in lst.marks]
    for item in row.watched:  # names are anyone's bytes: JSON takes UTF-8 only
        item.path, item.mount = utf8_text(item.path), utf8_text(item.mount)
    row.watches = len(row.watched)
    return row


# kcmp(2) by architecture (asm/unistd_64.h; asm-generic for arm64 and riscv)
_SYS_KCMP = {"x86_64": 312, "aarch64": 272, "riscv64": 272, "ppc64le": 354, "s390x": 343}
KCMP_FILE = 0
_syscall = None


def one_open_file(pid1: int, fd1: int, pid2: int, fd2: int) -> bool:
    """Whether two processes' fds are the same open file (kcmp(2));
    False when the kernel cannot say."""
    global _syscall
    nr = _SYS_KCMP.get(platform.machine())
    if nr is None:
        return False
    if _syscall is None:
        _syscall = ctypes.CDLL(None, use_errno=True).syscall
    return _syscall(nr, pid1, pid2, KCMP_FILE, fd1, fd2) == 0


def _one_row_per_instance(rows: list[ListenerRow]) -> list[ListenerRow]:
    """Rows of one instance held by several fds folded into the first."""
    kept: list[ListenerRow] = []
    by_shape: dict[tuple, list[ListenerRow]] = {}
    for r in rows:
        # one instance shows the same fdinfo through every fd
        shape = (r.api, r.fanotify_class, tuple(r.fanotify_flags), r.watches)
        same = by_shape.setdefault(shape, [])
        first = next((k for k in same if one_open_file(k.pid, k.fd, r.pid, r.fd)), None)
        if first is None:
            same.append(r)
            kept.append(r)
        else:
            first.also_held_by.append(Holder(pid=r.pid, fd=r.fd, comm=r.comm))
    return kept


def _limits(rows: list[ListenerRow]) -> list[UserLimits]:
    limit = {}
    for key, path in LIMITS.items():
        text = _read(f"/proc/sys/fs/{path}")
        limit[key] = int(text) if text.lstrip("-").isdigit() else -1
    used: dict[int, dict[str, int]] = {}
    for r in rows:
        u = used.setdefault(r.uid, dict.fromkeys(LIMITS, 0))
        if r.api == "inotify":
            u["max_user_instances"] += 1
            u["max_user_watches"] += r.watches
        else:
            u["max_user_groups"] += 1
            u["max_user_marks"] += r.watches
    return [UserLimits(uid=uid, used=u, limit=limit) for uid, u in sorted(used.items())]


def collect(pids: list[int] | None = None) -> Report:
    """Every listener (of these pids only, when given) and the limits of their users."""
    wanted = pids if pids else procs.pids()
    me = os.getpid()
    resolve = _Resolver()
    rows, unreadable = [], 0
    try:
        for pid in wanted:
            if pid == me:
                continue
            if not os.access(f"/proc/{pid}/fd", os.R_OK | os.X_OK) and os.path.exists(f"/proc/{pid}"):
                unreadable += 1
                continue
            for lst in sorted(scan_pid(pid), key=lambda x: x.fd):
                rows.append(_row(lst, resolve))
    finally:
        resolve.close()
    rows = _one_row_per_instance(rows)
    return Report(listeners=rows, limits=_limits(rows), unreadable_pids=unreadable)


def _percent(used: int, limit: int) -> str:
    if limit <= 0:
        return f"{used} (no limit here)" if limit < 0 else f"{used}"
    return f"{used} of {limit} ({100 * used / limit:.1f}%)"


IN_ALL_EVENTS = 0xFFF  # include/uapi/linux/inotify.h


def _mask_text(item: Watched) -> str:
    names = item.mask
    if item.wd >= 0:  # the twelve event bits of IN_ALL_EVENTS, in one name
        every = inotify_mask_names(IN_ALL_EVENTS)
        if all(n in names for n in every):
            names = ["IN_ALL_EVENTS"] + [n for n in names if n not in every]
    text = "|".join(names)
    return text + (f" ignoring {'|'.join(item.ignored_mask)}" if item.ignored_mask else "")


def render(report: Report, out=sys.stdout) -> None:
    """The report for a person: one line per listener, its watched objects
    under it, then the limits per user."""
    w = out.write
    if not report.listeners:
        w("no inotify or fanotify listeners\n")
    else:
        w(f"{'PID':>7} {'COMM':<16} {'FD':>4} {'API':<8} {'CLASS':<11} {'WATCHES':>7}  EXE / FLAGS\n")
        for r in report.listeners:
            extra = printable(r.exe) + (f"  {'|'.join(r.fanotify_flags)}" if r.fanotify_flags else "")
            w(f"{r.pid:>7} {printable(r.comm)[:16]:<16} {r.fd:>4} {r.api:<8} {r.fanotify_class or '-':<11} "
              f"{r.watches:>7}  {extra}\n")
            if r.also_held_by:
                held = ", ".join(f"pid {h.pid} {printable(h.comm)} fd {h.fd}" for h in r.also_held_by)
                w(f"{'':>10}also held by {held}\n")
            for item in r.watched[:SHOWN_PER_LISTENER]:
                where = printable(item.path) if item.path else "(path unknown)"
                label = f"wd {item.wd}" if item.wd >= 0 else item.kind
                w(f"{'':>10}{label:<11} {where}  [{printable(item.mount)}]  {_mask_text(item)}\n")
            if len(r.watched) > SHOWN_PER_LISTENER:
                w(f"{'':>10}... {len(r.watched) - SHOWN_PER_LISTENER} more (--output json lists all)\n")
    if report.limits:
        w("\nlimits per user (/proc/sys/fs):\n")
        for lim in report.limits:
            parts = [f"{key} {_percent(lim.used[key], lim.limit[key])}" for key in LIMITS
                     if lim.used[key] or key.endswith(("instances", "groups"))]
            w(f"  uid {lim.uid}: " + ", ".join(parts) + "\n")
    if os.geteuid() != 0 and any(not i.path for r in report.listeners for i in r.watched):
        w("\npaths are resolved from file handles, which needs CAP_DAC_READ_SEARCH: run as root\n")
    if report.unreadable_pids:
        w(f"\n{report.unreadable_pids} processes not shown: reading their fds needs root "
          f"(or CAP_SYS_PTRACE)\n")


def main(pids: list[int] | None, output: str) -> int:
    report = collect(pids)
    if output == "json":
        sys.stdout.buffer.write(msgspec.json.format(msgspec.json.encode(report)) + b"\n")
    else:
        render(report)
    return 0
