"""The agent's own fanotify group mirroring inotify watches, to find the actor.

inotify events do not say which process caused them. For every inotify watch
found (fdinfo: ino, sdev, file handle), the agent opens the same object with
open_by_handle_at and puts a fanotify mark on it with the watch's events, in a
group reporting the directory file handle + name and the object's file handle
(FAN_REPORT_DFID_NAME | FAN_REPORT_FID). fanotify events carry the actor's pid,
so an inotify event a tracer reads is matched to the mirror event of the same
object, name and event bit: attribution "inferred".

Where the kernel refuses file-handle marks on a filesystem (tmpfs before 5.13
has no filesystem id: ENODEV; a zero or shared id: EXDEV), the watch is
mirrored in a second group with plain fd-reporting marks. Their events carry
the pid and an fd of the file, so open, access, modify and close there are
still attributed; create, delete, move and attrib exist only in file-handle
groups and stay unattributed (`inotify_unmatched`). Which filesystem degrades
is said once, in one warning. (A filesystem without export operations, 9p,
gives no file handle to open the watched object by at all: its watches stay
unmirrored, `mirror_mark_failed`.)
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import struct
import time
from ctypes import get_errno

from ..kernel.abi import (
    FAN_ACCESS, FAN_CLASS_NOTIF, FAN_CLOEXEC, FAN_CLOSE_NOWRITE, FAN_CLOSE_WRITE, FAN_CREATE,
    FAN_DELETE, FAN_EVENT_INFO_TYPE_DFID_NAME, FAN_EVENT_INFO_TYPE_FID, FAN_EVENT_ON_CHILD, FAN_INFO_HANDLE_AT, FAN_INFO_HDR, FAN_MARK_ADD, FAN_MARK_REMOVE,
    FAN_METADATA, FAN_MODIFY, FAN_MOVED_FROM, FAN_MOVED_TO, FAN_NONBLOCK, FAN_ONDIR, FAN_OPEN, FAN_Q_OVERFLOW, FAN_REPORT_DIR_FID, FAN_REPORT_FID,
    FAN_REPORT_NAME, FAN_REPORT_TARGET_FID, FAN_REPORT_TID, FAN_UNLIMITED_QUEUE, FILE_HANDLE_HDR,
    O_LARGEFILE, O_PATH, O_RDONLY, SHARED_EVENTS, errno_error, libc)
from .mounts import MountViews, read_mounts
from .remembered import RememberedEvents
from .watches import Watch

log = logging.getLogger("otel_fsnotify")

# The events an fd-reporting group can carry (the others need file handles)
FD_EVENTS = FAN_ACCESS | FAN_MODIFY | FAN_CLOSE_WRITE | FAN_CLOSE_NOWRITE | FAN_OPEN
# events of a directory's entries (a mark on a file must not ask for them)
DIRENT_EVENTS = FAN_MOVED_FROM | FAN_MOVED_TO | FAN_CREATE | FAN_DELETE
# fanotify_mark's answer where a filesystem cannot give file handles to a
# file-handle group: no fsid (ENODEV), no export operations (EOPNOTSUPP: such
# an object cannot be opened by handle either), a zero or non-unique fsid (EXDEV)
NO_HANDLES = (errno.ENODEV, errno.EOPNOTSUPP, errno.EXDEV)


def object_mask(mask: int, is_dir: bool) -> int:
    """The part of a mark's mask the kernel accepts on this object, to add or
    remove: a file has no children and no directory entries (asking for
    those on it gives ENOTDIR)."""
    return mask if is_dir else mask & ~(DIRENT_EVENTS | FAN_EVENT_ON_CHILD | FAN_ONDIR)


_U32 = struct.Struct("=I")
_U64 = struct.Struct("=Q")
_FSID = _U64  # __kernel_fsid_t: two ints, as an event's info record holds them

# Where file handles keep the inode number, by encoder: u32 first
# (FILEID_INO32_GEN: ext2/3/4, the generic exportfs encoder); u64 first
# (FILEID_INO64_GEN); generation first then the inode as two u32 (tmpfs).
# A filesystem's layout is recognised from a watched object whose inode is
# known from fdinfo; handles of other encoders yield no inode (0).
HANDLE_LAYOUTS = (
    lambda h: _U32.unpack_from(h, 0)[0],
    lambda h: _U64.unpack_from(h, 0)[0],
    lambda h: _U32.unpack_from(h, 4)[0] | (_U32.unpack_from(h, 8)[0] << 32),
)

MAX_MARKS = 65_536  # bound on mirror marks (more are refused, counted as mirror_mark_limit)


class Mirror:
    def __init__(self, report_tid: bool = False):
        self.report_tid = report_tid
        flags = ((FAN_REPORT_TID if report_tid else 0) | FAN_CLOEXEC | FAN_NONBLOCK | FAN_CLASS_NOTIF
                 | FAN_UNLIMITED_QUEUE | FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME)
        # FAN_REPORT_TARGET_FID (5.17+) adds the child's file handle to create,
        # delete and move events, for i_ino; older kernels refuse it (EINVAL)
        fd = libc.fanotify_init(flags | FAN_REPORT_TARGET_FID, O_RDONLY | O_LARGEFILE)
        if fd < 0:
            fd = libc.fanotify_init(flags, O_RDONLY | O_LARGEFILE)
        if fd < 0:
            raise errno_error("fanotify_init (mirror group)")
        self.fd = fd
        self._flags = flags
        self.fd_group = -1  # the fd-reporting group, made at its first mark
        # (st_dev, st_ino) of an object marked in fd_group -> its inotify (sdev, ino)
        self._fd_objects: dict[tuple[int, int], tuple[int, int]] = {}
        self._fd_dirs: dict[int, set[int]] = {}  # st_dev -> st_ino of directories marked there
        self._fd_marked: dict[tuple[int, int], tuple[int, int]] = {}  # (sdev, ino) -> (st_dev, st_ino)
        self._degraded: set[int] = set()  # sdevs already warned about
        self.views = MountViews()
        # (sdev, handle_type, handle bytes) -> the object's path in its filesystem
        self._objects: dict[tuple[int, int, bytes], str] = {}
        # (fsid, handle_type, handle bytes) of an event -> ((sdev, ino) of the
        # object: what the inotify side looks it up by, handle layout). The
        # fsid tells filesystems apart whose handles are alike (the roots of
        # two tmpfs mounts: inode 1, generation 0)
        self._by_fid: dict[tuple[bytes, int, bytes], tuple[tuple[int, int], int]] = {}
        self._fid_of: dict[tuple[int, int], tuple[bytes, int, bytes]] = {}  # (sdev, ino) -> its _by_fid key
        # (sdev, handle_type, handle bytes, listener pid) -> the object's path as that listener sees it
        self._paths: dict[tuple[int, int, bytes, int], str] = {}
        self._marked: dict[tuple[int, int], int] = {}  # (sdev, ino) -> mask marked
        # (sdev, ino) -> {listener key: wd}: who needs the mark
        self._owners: dict[tuple[int, int], dict] = {}
        self.remembered = RememberedEvents()
        self.counters = {"mirror_overflow": 0, "mirror_mark_failed": 0, "mirror_events": 0,
                         "mirror_mark_limit": 0, "mirror_marks_added": 0,
                         "mirror_marks_removed": 0, "mirror_marks_gone": 0, "mirror_marks_fd": 0,
                         "mirror_read_errors": 0}

    def close(self) -> None:
        self.views.close()
        os.close(self.fd)
        if self.fd_group >= 0:
            os.close(self.fd_group)

    # -- marks ------------------------------------------------------------------
    def path_of(self, watch: Watch, pid: int) -> str:
        """The watched object's path as listener pid sees it ("" unknown)."""
        key = (watch.sdev, watch.handle_type, watch.handle, pid)
        path = self._paths.get(key)
        if path is None:
            fs_path = self._objects.get(key[:3])
            if fs_path is None:
                return ""
            path = self.views.view_of(pid, watch.sdev, fs_path) if fs_path else ""
            if len(self._paths) >= MAX_MARKS:
                self._paths.clear()
            self._paths[key] = path
        return path

    def _open_object(self, watch: Watch, pid: int) -> tuple[int, str]:
        """An O_PATH fd of the watched object from its file handle (through
        listener pid's mounts if the agent has none of that filesystem), and
        the object's path in its filesystem."""
        return self.views.open_handle(watch.sdev, watch.handle_type, watch.handle,
                                      O_PATH | os.O_CLOEXEC, pid)

    def _fanotify_mark(self, flags: int, mask: int, ofd: int, group: int = -1) -> None:
        # through the /proc magic link: with a NULL path fanotify_mark wants a
        # non-O_PATH dirfd, and opening the object for real would itself be an
        # open event for other listeners
        group = self.fd if group < 0 else group
        if libc.fanotify_mark(group, flags, mask, -100, f"/proc/self/fd/{ofd}".encode()) < 0:
            raise errno_error("fanotify_mark")

    def _mark_fd_mode(self, watch: Watch, mask: int, ofd: int, st: os.stat_result,
                      refused: OSError) -> None:
        """Mark the object in the fd-reporting group after the file-handle
        group refused it (refused), with the events it can carry there."""
        if self.fd_group < 0:
            # each event opens its file in the agent: never wait for a FIFO's writer
            fd = libc.fanotify_init(self._flags & ~(FAN_REPORT_FID | FAN_REPORT_DIR_FID | FAN_REPORT_NAME),
                                    O_RDONLY | O_LARGEFILE | os.O_NONBLOCK | os.O_CLOEXEC)
            if fd < 0:
                raise errno_error("fanotify_init (fd-reporting mirror group)")
            self.fd_group = fd
        fd_mask = (mask & FD_EVENTS) | (mask & ~SHARED_EVENTS)
        self._fanotify_mark(FAN_MARK_ADD, fd_mask, ofd, self.fd_group)
        self._fd_objects[(st.st_dev, st.st_ino)] = (watch.sdev, watch.ino)
        self._fd_marked[(watch.sdev, watch.ino)] = (st.st_dev, st.st_ino)
        if stat.S_ISDIR(st.st_mode):
            self._fd_dirs.setdefault(st.st_dev, set()).add(st.st_ino)
        self.counters["mirror_marks_fd"] += 1
        if watch.sdev not in self._degraded:
            self._degraded.add(watch.sdev)
            where = self.views.own().describe(watch.sdev)
            log.warning("mirror: %s gives fanotify no file handles on this kernel (%s): its "
                        "inotify watches are mirrored with fd-reporting marks; open, access, "
                        "modify and close there are attributed, create, delete, move and attrib "
                        "are not (counted in inotify_unmatched)", where,
                        errno.errorcode.get(refused.errno, refused.errno))

    def mark(self, watch: Watch, owner=None) -> bool:
        """Mirror one inotify watch for owner (a listener key); False (and
        counted) if it cannot be mirrored."""
        mask = (watch.mask & SHARED_EVENTS) | FAN_EVENT_ON_CHILD | FAN_ONDIR
        key = (watch.sdev, watch.ino)
        owners = self._owners.get(key)
        if owners is not None and owners.get(owner, -1) == watch.wd \
                and self._marked.get(key, 0) & mask == mask:
            return True
        if not watch.handle:
            self.counters["mirror_mark_failed"] += 1
            return False
        if key not in self._marked and len(self._marked) >= MAX_MARKS:
            self.counters["mirror_mark_limit"] += 1
            return False
        if self._marked.get(key, 0) & mask != mask:
            try:
                ofd, path = self._open_object(watch, owner[0] if owner else 0)
                try:
                    st = os.fstat(ofd)
                    marked = object_mask(mask, stat.S_ISDIR(st.st_mode))
                    try:
                        self._fanotify_mark(FAN_MARK_ADD, marked, ofd)
                        # its events carry statfs(2)'s f_fsid (glibc: val[0] | val[1] << 32)
                        fid = (_FSID.pack(os.fstatvfs(ofd).f_fsid), watch.handle_type, watch.handle)
                        self._by_fid[fid] = (key, self._layout(watch.handle, watch.ino))
                        self._fid_of[key] = fid
                    except OSError as exc:
                        if exc.errno not in NO_HANDLES:
                            raise
                        self._mark_fd_mode(watch, marked, ofd, st, exc)
                finally:
                    os.close(ofd)
            except OSError:
                self.counters["mirror_mark_failed"] += 1
                return False
            if key not in self._marked:
                self.counters["mirror_marks_added"] += 1
            self._objects[(watch.sdev, watch.handle_type, watch.handle)] = path
            self._marked[key] = self._marked.get(key, 0) | mask
        self._owners.setdefault(key, {})[owner] = watch.wd
        if owner:
            self.path_of(watch, owner[0])  # its view now, while it surely is alive
        return True

    def unmark(self, watch: Watch, owner=None) -> None:
        """owner no longer watches this object: remove the mirror mark when
        nobody does (a mark the kernel already dropped with its deleted object
        is forgotten, counted as mirror_marks_gone)."""
        key = (watch.sdev, watch.ino)
        owners = self._owners.get(key)
        if owners is None or owners.get(owner, -1) != watch.wd:
            return
        del owners[owner]
        if owner:
            self._paths.pop((watch.sdev, watch.handle_type, watch.handle, owner[0]), None)
        if owners:
            return
        del self._owners[key]
        self._marked.pop(key, None)
        self._objects.pop((watch.sdev, watch.handle_type, watch.handle), None)
        fid = self._fid_of.pop(key, None)
        if fid is not None:
            self._by_fid.pop(fid, None)
        fd_obj = self._fd_marked.pop(key, None)  # forgotten even if the object is gone
        if fd_obj is not None:
            self._fd_objects.pop(fd_obj, None)
            self._fd_dirs.get(fd_obj[0], set()).discard(fd_obj[1])
        try:
            ofd, _path = self._open_object(watch, owner[0] if owner else 0)
            try:
                # the bits each group accepts on this object (the kernel
                # refuses the others even in a removal: EINVAL, ENOTDIR)
                group, bits = (self.fd_group, FD_EVENTS) if fd_obj is not None else (-1, SHARED_EVENTS)
                bits = object_mask(bits | FAN_EVENT_ON_CHILD | FAN_ONDIR,
                                   stat.S_ISDIR(os.fstat(ofd).st_mode))
                self._fanotify_mark(FAN_MARK_REMOVE, bits, ofd, group)
            finally:
                os.close(ofd)
        except OSError:
            self.counters["mirror_marks_gone"] += 1
            return
        self.counters["mirror_marks_removed"] += 1

    def marks(self) -> int:
        """Mirror marks in place now."""
        return len(self._marked)

    # -- events -----------------------------------------------------------------
    def drain(self) -> int:
        """Read every pending mirror event; returns how many."""
        n = self._drain_group(self.fd)
        if self.fd_group >= 0:
            n += self._drain_group(self.fd_group)
        self.counters["mirror_events"] += n
        self.remembered.expire(time.monotonic())
        return n

    def _drain_group(self, group: int) -> int:
        n = 0
        fd_mode = group == self.fd_group
        # fd mode: every event in a read is an open fd in the agent until decoded
        size = 16 * 1024 if fd_mode else 256 * 1024
        while True:
            try:
                buf = os.read(group, size)
            except BlockingIOError:
                break
            except InterruptedError:
                continue
            except OSError:  # the kernel could not open an event's file (EMFILE...)
                self.counters["mirror_read_errors"] += 1
                break
            if not buf:
                break
            now = time.monotonic()
            seen_ns = time.monotonic_ns()  # the actor acted before this
            off = 0
            while off + FAN_METADATA.size <= len(buf):
                event_len, _v, _r, mlen, mask, efd, pid = FAN_METADATA.unpack_from(buf, off)
                if event_len < FAN_METADATA.size:
                    break
                if mask & FAN_Q_OVERFLOW:
                    self.counters["mirror_overflow"] += 1
                elif fd_mode:
                    if efd >= 0:
                        self._record_keys(now, seen_ns, mask, pid, *self._objects_of_fd(efd))
                        n += 1
                else:
                    self._record_keys(now, seen_ns, mask, pid,
                                      *self._objects_of(buf[off + mlen: off + event_len]))
                    n += 1
                off += event_len
            # a long queue (the agent was behind) is kept within MAX_HITS as it is read
            self.remembered.expire(now)
        return n

    def _record_keys(self, now: float, seen_ns: int, mask: int, pid: int,
                     keys: list[tuple[tuple[int, int], str]], child_ino: int) -> None:
        """Remember one mirror event under every (watched object, name, bit) it is for."""
        if keys:
            self.remembered.add(now, seen_ns, mask, pid, pid if self.report_tid else 0, keys, child_ino)

    def _objects_of(self, info: bytes) -> tuple[list[tuple[tuple[int, int], str]], int]:
        """From an event's info records: ([((sdev, ino) of a mirrored object,
        name relative to it)], the child's inode or 0)."""
        keys = []
        child = None
        layout, layout_type = -1, 0
        pos = 0
        by_fid = self._by_fid
        while pos + FAN_INFO_HDR.size <= len(info):
            itype, _pad, ilen = FAN_INFO_HDR.unpack_from(info, pos)
            if ilen < FAN_INFO_HDR.size:
                break
            rec_end = pos + ilen
            # header(4) fsid(8) handle_bytes(4) handle_type(4) f_handle[] [name\0]
            if ilen >= 20:
                hbytes, htype = FILE_HANDLE_HDR.unpack_from(info, pos + FAN_INFO_HANDLE_AT)
                handle = info[pos + 20: pos + 20 + hbytes]
                if itype == FAN_EVENT_INFO_TYPE_FID:
                    child = (htype, handle)
                obj = by_fid.get((info[pos + 4: pos + 12], htype, handle))
                if obj is not None:
                    layout, layout_type = obj[1], htype
                    name = ""
                    if itype == FAN_EVENT_INFO_TYPE_DFID_NAME:
                        name = info[pos + 20 + hbytes: rec_end].split(b"\0", 1)[0].decode(
                            errors="surrogateescape")
                        if name == ".":
                            name = ""
                    keys.append((obj[0], name))
            pos = rec_end
        if len(keys) > 1:
            keys = list(dict.fromkeys(keys))
        # the child's inode, decoded with the layout that gave the watched
        # object's own handle its known inode (same filesystem, same encoder)
        child_ino = 0
        if child is not None and layout >= 0 and child[0] == layout_type:
            try:
                child_ino = HANDLE_LAYOUTS[layout](child[1])
            except struct.error:
                child_ino = 0
        return keys, child_ino

    def _objects_of_fd(self, efd: int) -> tuple[list[tuple[tuple[int, int], str]], int]:
        """_objects_of for an fd-reporting event (closes its fd): the object
        itself if it is marked, and the marked directory it is in with its
        name. The directory is found by the fd's path; where the agent cannot
        see that path (a mount only the listener has), it is the one
        directory marked on that filesystem, if there is only one."""
        try:
            st = os.fstat(efd)
            objects = self._fd_objects
            keys = []
            own = objects.get((st.st_dev, st.st_ino))
            if own is not None:
                keys.append((own, ""))
            path = os.readlink(f"/proc/self/fd/{efd}")
            if st.st_nlink == 0 and path.endswith(" (deleted)"):
                path = path[:-10]
            parent, _sep, name = path.rpartition("/")
            try:
                pst = os.stat(parent or "/")
                seen = pst.st_dev == st.st_dev
                directory = objects.get((pst.st_dev, pst.st_ino))
            except OSError:
                seen, directory = False, None
            if not seen:
                dirs = self._fd_dirs.get(st.st_dev, ())
                directory = objects.get((st.st_dev, next(iter(dirs)))) if len(dirs) == 1 else None
            if directory is not None and directory != own:
                keys.append((directory, name))
                return keys, st.st_ino
            return keys, 0
        except OSError:
            return [], 0
        finally:
            os.close(efd)

    @staticmethod
    def _layout(handle: bytes, ino: int) -> int:
        """Which HANDLE_LAYOUTS entry decodes this handle to ino (-1: none)."""
        for i, decode in enumerate(HANDLE_LAYOUTS):
            try:
                if decode(handle) == ino:
                    return i
            except struct.error:
                pass
        return -1


# Filesystems nobody puts an inotify watch on, or where a probe could hang
# (automounts, network filesystems): not probed for file-handle marks
_NOT_PROBED = {"proc", "sysfs", "cgroup", "cgroup2", "devpts", "mqueue", "securityfs", "debugfs",
               "tracefs", "bpf", "pstore", "configfs", "fusectl", "binfmt_misc", "hugetlbfs",
               "autofs", "efivarfs", "nsfs", "rpc_pipefs", "nfs", "nfs4", "cifs", "smb3", "ceph",
               "fuseblk", "afs", "glusterfs", "lustre"}


def fid_mark_refusals() -> tuple[int, list[tuple[str, str, str]]]:
    """Try a file-handle fanotify mark (the tracepoint backend's mirror) on
    one mount of each filesystem mounted here: (filesystems probed,
    [(fstype, mount point, errno name) refused])."""
    group = libc.fanotify_init(FAN_CLOEXEC | FAN_CLASS_NOTIF | FAN_REPORT_FID | FAN_REPORT_DIR_FID
                               | FAN_REPORT_NAME, os.O_RDONLY)
    if group < 0:
        raise errno_error("fanotify_init")
    seen, refused = set(), []
    try:
        for m in read_mounts():
            if m.dev in seen or m.fstype in _NOT_PROBED or m.fstype.startswith("fuse."):
                continue
            seen.add(m.dev)
            if libc.fanotify_mark(group, FAN_MARK_ADD, FAN_OPEN | FAN_EVENT_ON_CHILD, -100,
                                  m.point.encode()) < 0:
                err = get_errno()
                if err in NO_HANDLES:
                    refused.append((m.fstype, m.point, errno.errorcode[err]))
    finally:
        os.close(group)
    return len(seen), refused
