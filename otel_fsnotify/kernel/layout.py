"""What the running kernel looks like to the BPF programs: the one place that
knows kernel versions.

Every struct field a program reads is at an offset resolved here from the
running kernel's BTF and handed to the compiler as a -D macro (OFF_*): bcc
compiles against whatever headers tree exists (on the dev machines Debian's
6.1 headers under a 6.18 kernel), so offsetof() in BPF C would silently read
the wrong bytes. Where the kernel changed a name or a layout, the choice is
made here, by looking at BTF (what this kernel has), never by version number.
"""

from __future__ import annotations

from .. import masks
from .btf import Btf, BtfError

# macro -> (struct, member path); dots descend into embedded structs.
# Read by fsnotify_common.h (process identity, dentry walk): both programs.
COMMON_OFFSETS = {
    "OFF_TASK_REAL_PARENT": ("task_struct", "real_parent"),
    "OFF_TASK_TGID": ("task_struct", "tgid"),
    "OFF_TASK_COMM": ("task_struct", "comm"),
    "OFF_TASK_NSPROXY": ("task_struct", "nsproxy"),
    "OFF_NSPROXY_MNT_NS": ("nsproxy", "mnt_ns"),
    "OFF_MNT_NS_INUM": ("mnt_namespace", "ns.inum"),
    "OFF_PATH_DENTRY": ("path", "dentry"),
    "OFF_TASK_FS": ("task_struct", "fs"),  # the reading task's root (walk_path)
    "OFF_FS_STRUCT_ROOT": ("fs_struct", "root"),
    "OFF_PATH_MNT": ("path", "mnt"),
    "OFF_DENTRY_D_PARENT": ("dentry", "d_parent"),
    "OFF_DENTRY_D_NAME": ("dentry", "d_name"),
    "OFF_QSTR_NAME": ("qstr", "name"),
    "OFF_VFSMOUNT_MNT_ROOT": ("vfsmount", "mnt_root"),
    "OFF_MOUNT_MNT": ("mount", "mnt"),
    "OFF_MOUNT_MNT_PARENT": ("mount", "mnt_parent"),
    "OFF_MOUNT_MNT_MOUNTPOINT": ("mount", "mnt_mountpoint"),
    "OFF_GROUP_PRIORITY": ("fsnotify_group", "priority"),
    "OFF_TASK_PID": ("task_struct", "pid"),  # both programs' process table feed
    "OFF_TASK_CRED": ("task_struct", "cred"),
    "OFF_CRED_EUID": ("cred", "euid"),  # kuid_t: one u32 (val) at its start
    "OFF_CRED_EGID": ("cred", "egid"),
    "OFF_CRED_SUID": ("cred", "suid"),
    # pid numbers in the agent's pid namespace (pid_nr_here), and fanotify's
    "OFF_TASK_THREAD_PID": ("task_struct", "thread_pid"),
    "OFF_TASK_GROUP_LEADER": ("task_struct", "group_leader"),
    "OFF_PID_LEVEL": ("pid", "level"),
    "OFF_PID_NUMBERS": ("pid", "numbers"),
    "OFF_UPID_NS": ("upid", "ns"),
    "OFF_UPID_NR": ("upid", "nr"),
    "OFF_PIDNS_INUM": ("pid_namespace", "ns.inum"),
}

# fsnotify_exact.bpf.c: the fsnotify internals
EXACT_OFFSETS = {
    "OFF_INODE_INO": ("inode", "i_ino"),
    "OFF_GROUP_OPS": ("fsnotify_group", "ops"),
    "OFF_GROUP_SHUTDOWN": ("fsnotify_group", "shutdown"),
    "OFF_GROUP_OVERFLOW_EVENT": ("fsnotify_group", "overflow_event"),
    "OFF_GROUP_FAN_FLAGS": ("fsnotify_group", "fanotify_data.flags"),
    "OFF_GROUP_FAN_F_FLAGS": ("fsnotify_group", "fanotify_data.f_flags"),
    "OFF_OPS_HANDLE_EVENT": ("fsnotify_ops", "handle_event"),
    "OFF_INOTIFY_EVENT_MASK": ("inotify_event_info", "mask"),
    "OFF_INOTIFY_EVENT_WD": ("inotify_event_info", "wd"),
    "OFF_INOTIFY_EVENT_COOKIE": ("inotify_event_info", "sync_cookie"),
    "OFF_INOTIFY_EVENT_NAME_LEN": ("inotify_event_info", "name_len"),
    "OFF_INOTIFY_EVENT_NAME": ("inotify_event_info", "name"),
    "OFF_FANOTIFY_EVENT_MASK": ("fanotify_event", "mask"),
    "OFF_FANOTIFY_EVENT_PID": ("fanotify_event", "pid"),
    "OFF_FA_PATH_EVENT_PATH": ("fanotify_path_event", "path"),
    "OFF_FA_PERM_EVENT_PATH": ("fanotify_perm_event", "path"),
    "OFF_FA_PERM_RESPONSE": ("fanotify_perm_event", "response"),
    "OFF_FA_PERM_STATE": ("fanotify_perm_event", "state"),
}

# fsnotify_tracepoint.bpf.c: fd tables, files, saved user registers, pid namespaces
TRACEPOINT_OFFSETS = {
    "OFF_TASK_FILES": ("task_struct", "files"),
    "OFF_TASK_STACK": ("task_struct", "stack"),
    "OFF_PT_REGS_DI": ("pt_regs", "di"),
    "OFF_PT_REGS_SI": ("pt_regs", "si"),
    "OFF_PT_REGS_DX": ("pt_regs", "dx"),
    "OFF_PT_REGS_AX": ("pt_regs", "ax"),
    "OFF_FILES_FDT": ("files_struct", "fdt"),
    "OFF_FILES_COUNT": ("files_struct", "count"),
    "OFF_FDT_FD": ("fdtable", "fd"),
    "OFF_FDT_MAX_FDS": ("fdtable", "max_fds"),
    "OFF_FILE_F_OP": ("file", "f_op"),
    "OFF_FILE_PRIVATE_DATA": ("file", "private_data"),
    "OFF_FILE_F_PATH": ("file", "f_path"),
    # the agent's watch group's queue (a process's events waiting at its exec)
    "OFF_GROUP_NOTIFICATION_LIST": ("fsnotify_group", "notification_list"),
    "OFF_FSN_EVENT_LIST": ("fsnotify_event", "list"),
    "OFF_FANOTIFY_EVENT_FSE": ("fanotify_event", "fse"),
    "OFF_FANOTIFY_EVENT_PID": ("fanotify_event", "pid"),
}

# x86_64 kernel stack sizes (THREAD_SIZE): 16 KiB, 32 KiB with KASAN. The
# tracepoint program finds the saved user registers at the top of the stack;
# which size this kernel uses is learnt at start (tracepoint backend).
THREAD_SIZES = (16384, 32768)

# The file's reference count: file_ref_t f_ref (6.13+, stores count - 1, so
# one reference reads 0) or atomic_long_t f_count before.
FILE_REF_MEMBERS = (("f_ref", 0), ("f_count", 1))


def offset_macros(btf: Btf, spec: dict[str, tuple[str, str]]) -> list[str]:
    """{"MACRO": ("struct", "member.path")} -> ["-DMACRO=<offset>", ...]."""
    return [f"-D{macro}={btf.offsetof(s, m)}" for macro, (s, m) in sorted(spec.items())]


class KernelLayout:
    """The running kernel, as the programs need it. BtfError (one line) when
    this kernel lacks something a program reads."""

    def __init__(self, btf: Btf):
        self.btf = btf
        # inotify's handler took the inode as an argument from 5.11 on.
        self.inotify_handle = ("inotify_handle_inode_event" if btf.has_func("inotify_handle_inode_event")
                               else "inotify_handle_event")
        # fsnotify_add_event became fsnotify_insert_event (with an insert callback) in 5.16.
        self.insert_event = ("fsnotify_insert_event" if btf.has_func("fsnotify_insert_event")
                             else "fsnotify_add_event")
        # The ops member that holds inotify's handler follows the same rename.
        self.ops_inotify_member = ("handle_inode_event" if btf.has_member("fsnotify_ops", "handle_inode_event")
                                   else "handle_event")
        try:
            types = btf.enum_members("fanotify_event_type")
        except BtfError:
            types = {name: i for i, name in enumerate(masks.FANOTIFY_EVENT_TYPES)}
        self.fa_types = {v: k for k, v in types.items()}
        self.fa_type_path = types.get("FANOTIFY_EVENT_TYPE_PATH", 2)
        self.fa_type_path_perm = types.get("FANOTIFY_EVENT_TYPE_PATH_PERM", 3)

    @classmethod
    def load(cls) -> "KernelLayout":
        return cls(Btf.load())

    def fa_type_name(self, value: int) -> str:
        return self.fa_types.get(value) or masks.fanotify_event_type_name(value)

    def fa_type_bits(self) -> tuple[int, int, int]:
        """(byte offset of the 32-bit word, shift, mask) of fanotify_event.type,
        a bitfield (`enum fanotify_event_type type:3` since 5.7)."""
        bit_off, bit_size = self.btf.bitfield("fanotify_event", "type")
        if bit_off % 32 + bit_size > 32:
            raise BtfError("fanotify_event.type straddles a 32-bit word in this kernel")
        return (bit_off // 32) * 4, bit_off % 32, (1 << bit_size) - 1

    def file_ref(self) -> tuple[int, int]:
        """(offset of the file's reference count, the value meaning one reference)."""
        for member, one in FILE_REF_MEMBERS:
            if self.btf.has_member("file", member):
                return self.btf.offsetof("file", member), one
        raise BtfError("struct file has neither f_ref nor f_count in this kernel's BTF")

    def exact_cflags(self) -> list[str]:
        """-D macros for fsnotify_exact.bpf.c."""
        btf = self.btf
        flags = offset_macros(btf, {**COMMON_OFFSETS, **EXACT_OFFSETS})
        flags.append(f"-DOFF_OPS_INOTIFY_HANDLER={btf.offsetof('fsnotify_ops', self.ops_inotify_member)}")
        flags.append(f"-DUPID_SIZE={btf.struct_size('upid')}")
        word, shift, mask = self.fa_type_bits()
        return flags + [
            f"-DFA_TYPE_WORD={word}", f"-DFA_TYPE_SHIFT={shift}", f"-DFA_TYPE_MASK={mask}",
            f"-DFA_TYPE_PATH={self.fa_type_path}", f"-DFA_TYPE_PATH_PERM={self.fa_type_path_perm}",
            f"-DFN_INOTIFY_HANDLE={self.inotify_handle}", f"-DFN_INSERT_EVENT={self.insert_event}"]

    def tracepoint_cflags(self) -> list[str]:
        """-D macros for fsnotify_tracepoint.bpf.c."""
        btf = self.btf
        ref_off, one_ref = self.file_ref()
        return offset_macros(btf, {**COMMON_OFFSETS, **TRACEPOINT_OFFSETS}) + [
            f"-DPT_REGS_SIZE={btf.struct_size('pt_regs')}", f"-DUPID_SIZE={btf.struct_size('upid')}",
            f"-DOFF_FILE_REF={ref_off}", f"-DFILE_ONE_REF={one_ref}ULL",
            f"-DTHREAD_SIZE_SMALL={THREAD_SIZES[0]}", f"-DTHREAD_SIZE_LARGE={THREAD_SIZES[1]}"]
