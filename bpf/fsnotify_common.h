/* SPDX-License-Identifier: Apache-2.0 */
/*
 * fsnotify_common.h: what both BPF programs share (fsnotify_exact.bpf.c and
 * fsnotify_tracepoint.bpf.c): listener kinds, kernel memory readers, the
 * identity of the current process, the dentry walk, the in-kernel filters.
 *
 * Portability: every kernel struct field is read at an OFF_* offset passed in
 * as a -D macro, resolved from the running kernel's BTF by
 * otel_fsnotify/kernel/layout.py (the one place that knows kernel versions),
 * never from the headers bcc compiles with: those may belong to another kernel.
 *
 * No map is declared or used here: bcc rewrites map calls (map.lookup()) only
 * in the file it compiles, so in a header they would compile to an indirect
 * call the verifier refuses. The pid filter maps `tracer_pids` and
 * `tracee_pids` and their checks live in each program.
 *
 * Macros every program gets from user space (otel_fsnotify/backends/base.py
 * filter_cflags):
 *   FILTER_INOTIFY_ONLY, FILTER_FANOTIFY_ONLY   1: drop the other kind here
 *   FILTER_GROUP        nonzero: only this struct fsnotify_group address
 *   FILTER_TRACER_PIDS  1: only tgids in `tracer_pids` are tracers
 *   FILTER_TRACEE_PIDS  1: only tgids in `tracee_pids` are tracees (exact only:
 *                       the tracepoint backend learns its tracees in user space)
 *   FILTER_TRACER_COMMS 1: only tracers whose comm is in `tracer_comms`
 *   FILTER_TRACEE_COMMS, FILTER_EXCLUDE_COMMS, FILTER_TRACEE_UIDS (exact only)
 *                       1: only tracees whose comm is in `tracee_comms`, not
 *                       in `exclude_comms`, whose euid is in `tracee_uids`
 *   MAX_PID_FILTERS     entries of each pid, comm and uid filter map
 */
#ifndef FSNOTIFY_COMMON_H
#define FSNOTIFY_COMMON_H

#include <uapi/linux/ptrace.h>

/* Which API a listener (an fsnotify group) speaks. */
#define KIND_INOTIFY 1
#define KIND_FANOTIFY 2

#define TASK_COMM 16
#define NAME_MAX_Z 256   /* a path component with its NUL: never truncated */
#define PATH_BYTES 4096  /* bytes of path components per record (a power of two) */
#ifndef PATH_STEPS
#define PATH_STEPS 24    /* dentries (and mount crossings) walked per path */
#endif

/* A command name as a map key: the task's comm as bpf_get_current_comm()
 * gives it, NUL-padded to its 16 bytes (user space pads its names the same). */
struct comm_key {
    char comm[TASK_COMM];
};

/* A process as both roles carry it (user space: otel_fsnotify/event.py
 * PROCESS_FIELDS; exe and container id come from /proc). */
struct proc_id {
    u32 pid;         /* tgid */
    u32 tid;
    u32 ppid;        /* tgid of real_parent */
    u32 uid;         /* effective uid and gid (what permission checks use) */
    u32 gid;
    u32 ruid;        /* real uid */
    u32 suid;        /* saved set-user-id */
    u32 mntns;       /* inum of the mount namespace */
    char comm[TASK_COMM];
    char pcomm[TASK_COMM];  /* real_parent's comm */
};

/* Where a dentry walk stands. Kept in map memory (inside the record being
 * staged), not in registers: the verifier does not track the exact values
 * there, so the states of the loop's branches merge instead of multiplying. */
struct path_walk {
    u32 len;         /* bytes of components written, leaf first, each NUL-ended */
    u32 depth;       /* components written */
    u32 complete;    /* 1: the walk reached the global root (the path is whole) */
    u32 root_depth;  /* components written when the walk passed the reading
                        task's root (chroot, RootDirectory=): the path as that
                        task sees it; ROOT_NOT_PASSED if it never did */
};
#define ROOT_NOT_PASSED 0xffffffffU

static __always_inline u64 read_ptr(u64 addr)
{
    u64 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
    return v;
}

static __always_inline u32 read_u32(u64 addr)
{
    u32 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
    return v;
}

static __always_inline u16 read_u16(u64 addr)
{
    u16 v = 0;
    bpf_probe_read_kernel(&v, sizeof(v), (void *)addr);
    return v;
}

/* Pid numbers as the agent's pid namespace has them: records carry pids in
 * the agent's numbering, so its /proc finds them. With hostPID that is the
 * kernel's global numbering (task->tgid, task->pid). In a pod's pid namespace
 * (AGENT_PIDNS_INUM, its ns inode: a sidecar with shareProcessNamespace) it
 * is struct pid's numbers[L].nr at the level L whose namespace that is, and
 * 0 for a task outside it. */
#ifdef AGENT_PIDNS_INUM
static __always_inline u32 upid_nr_if_here(u64 upid)
{
    u64 ns = read_ptr(upid + OFF_UPID_NS);
    if (ns && read_u32(ns + OFF_PIDNS_INUM) == AGENT_PIDNS_INUM)
        return read_u32(upid + OFF_UPID_NR);
    return 0;
}

/* Looks at the task's own namespace and the one above it, not further (no
 * loop: the verifier's budget is for the programs' paths): a task of the
 * agent's pod, or of a namespace nested once inside it. */
static __always_inline u32 pid_nr_here(u64 pid)
{
    if (!pid)
        return 0;
    u32 level = read_u32(pid + OFF_PID_LEVEL);
    if (!level || level > 32)
        return 0;   /* the initial namespace's task: outside the agent's */
    u64 upid = pid + OFF_PID_NUMBERS + (u64)level * UPID_SIZE;
    u32 nr = upid_nr_if_here(upid);
    if (!nr && level > 1)
        nr = upid_nr_if_here(upid - UPID_SIZE);
    return nr;
}

static __always_inline u32 task_tid_here(u64 task)
{
    return pid_nr_here(read_ptr(task + OFF_TASK_THREAD_PID));
}

static __always_inline u32 task_tgid_here(u64 task)
{
    return task_tid_here(read_ptr(task + OFF_TASK_GROUP_LEADER));
}
#else
static __always_inline u32 pid_nr_here(u64 pid)
{
    return pid ? read_u32(pid + OFF_PID_NUMBERS + OFF_UPID_NR) : 0;   /* numbers[0]: global */
}

static __always_inline u32 task_tid_here(u64 task)
{
    return read_u32(task + OFF_TASK_PID);
}

static __always_inline u32 task_tgid_here(u64 task)
{
    return read_u32(task + OFF_TASK_TGID);
}
#endif

/* The current task: ids from the helpers, the rest from task_struct. */
static __always_inline void fill_proc(struct proc_id *p)
{
    u64 pid_tgid = bpf_get_current_pid_tgid();
    u64 uid_gid = bpf_get_current_uid_gid();
    u64 task = (u64)bpf_get_current_task();
    u64 parent = read_ptr(task + OFF_TASK_REAL_PARENT);
    /* task->nsproxy->mnt_ns->ns.inum; nsproxy is NULL for an exiting task */
    u64 nsproxy = read_ptr(task + OFF_TASK_NSPROXY);
    u64 mnt_ns = nsproxy ? read_ptr(nsproxy + OFF_NSPROXY_MNT_NS) : 0;

    /* task->cred: the subjective credentials (what the task acts with) */
    u64 cred = read_ptr(task + OFF_TASK_CRED);

    p->pid = pid_tgid >> 32;
    p->tid = (u32)pid_tgid;
    p->ruid = (u32)uid_gid;   /* bpf_get_current_uid_gid() gives the real ids */
    p->uid = cred ? read_u32(cred + OFF_CRED_EUID) : p->ruid;
    p->gid = cred ? read_u32(cred + OFF_CRED_EGID) : (u32)(uid_gid >> 32);
    p->suid = cred ? read_u32(cred + OFF_CRED_SUID) : p->ruid;
    p->ppid = parent ? read_u32(parent + OFF_TASK_TGID) : 0;
    p->mntns = mnt_ns ? read_u32(mnt_ns + OFF_MNT_NS_INUM) : 0;
#ifdef AGENT_PIDNS_INUM
    p->pid = task_tgid_here(task);
    p->tid = task_tid_here(task);
    p->ppid = parent ? task_tgid_here(parent) : 0;
#endif
    bpf_get_current_comm(p->comm, sizeof(p->comm));
    p->pcomm[0] = 0;
    if (parent)
        bpf_probe_read_kernel_str(p->pcomm, sizeof(p->pcomm), (void *)(parent + OFF_TASK_COMM));
}

/* Walk from `dentry` (in the mount whose struct vfsmount is `vfsmnt`) to the
 * global root, crossing mounts: struct mount embeds its vfsmount at
 * OFF_MOUNT_MNT; at a mount's root the walk goes on from its mountpoint in the
 * parent mount. Components land in buf (PATH_BYTES + NAME_MAX_Z bytes) back to
 * back, leaf first, each NUL-ended; *w says how far it got.
 *
 * Unlike d_path(), the walk does not stop at the current task's root
 * (current->fs->root: a chroot, systemd's RootDirectory=): it notes where it
 * passed it (root_depth) and goes on to the mount namespace's root, so user
 * space gets both the path the reading task resolves and the namespace's. The
 * walk runs in the reading task's context (its read of the event). */
static __always_inline void walk_path(char *buf, struct path_walk *w, u64 dentry, u64 vfsmnt)
{
    u64 mnt = vfsmnt - OFF_MOUNT_MNT;
    u64 fs = read_ptr((u64)bpf_get_current_task() + OFF_TASK_FS);
    u64 root_vfsmnt = read_ptr(fs + OFF_FS_STRUCT_ROOT + OFF_PATH_MNT);
    u64 root_dentry = read_ptr(fs + OFF_FS_STRUCT_ROOT + OFF_PATH_DENTRY);
    w->len = 0;
    w->depth = 0;
    w->complete = 0;
    w->root_depth = ROOT_NOT_PASSED;
    for (int i = 0; i < PATH_STEPS; i++) {
        if (dentry == root_dentry && mnt + OFF_MOUNT_MNT == root_vfsmnt && w->root_depth == ROOT_NOT_PASSED)
            w->root_depth = w->depth;
        u64 mnt_root = read_ptr(mnt + OFF_MOUNT_MNT + OFF_VFSMOUNT_MNT_ROOT);
        u64 parent = read_ptr(dentry + OFF_DENTRY_D_PARENT);
        if (dentry == mnt_root || dentry == parent) {
            u64 mnt_parent = read_ptr(mnt + OFF_MOUNT_MNT_PARENT);
            if (dentry == mnt_root && mnt_parent && mnt_parent != mnt) {
                dentry = read_ptr(mnt + OFF_MOUNT_MNT_MOUNTPOINT);
                mnt = mnt_parent;
                continue;
            }
            w->complete = 1;
            break;
        }
        u32 pos = w->len;
        if (pos > PATH_BYTES - NAME_MAX_Z)
            break;  /* longer than PATH_BYTES: incomplete */
        pos &= PATH_BYTES - 1;  /* for the verifier: every write stays in buf */
        u64 name = read_ptr(dentry + OFF_DENTRY_D_NAME + OFF_QSTR_NAME);
        long got = bpf_probe_read_kernel_str(buf + pos, NAME_MAX_Z, (void *)name);
        if (got <= 0)
            break;
        w->len = pos + got;
        w->depth += 1;
        dentry = parent;
    }
}

/* ---- the in-kernel filters -------------------------------------------- */

static __always_inline int kind_wanted(u32 kind)
{
    if (FILTER_INOTIFY_ONLY && kind != KIND_INOTIFY)
        return 0;
    if (FILTER_FANOTIFY_ONLY && kind != KIND_FANOTIFY)
        return 0;
    return 1;
}

static __always_inline int group_wanted(u64 group)
{
    return !FILTER_GROUP || group == FILTER_GROUP;
}

#endif /* FSNOTIFY_COMMON_H */
