// SPDX-License-Identifier: Apache-2.0
/*
 * fsnotify_exact.bpf.c: the exact correlator (backends "fentry" and "kprobe").
 *
 * Links every inotify/fanotify event a tracer reads to the process that caused
 * it, inside the kernel:
 *
 *   tracee (the actor, synchronous fsnotify() call in its own context)
 *     FN_INOTIFY_HANDLE (mark, mask, inode, dir) entry -> insert_ctx[tid] (inodes)
 *     FN_INSERT_EVENT (group, event)             entry -> pending[event] = record
 *     FN_INOTIFY_HANDLE                          exit  -> delete insert_ctx[tid]
 *   tracer (the reader, in read(2) of its inotify/fanotify fd)
 *     fsnotify_remove_first_event(group)  entry -> remove_ctx[tid] = group
 *     fsnotify_remove_first_event         exit  -> pending[ret] + tracer -> events ring
 *   whoever frees it
 *     fsnotify_destroy_event(group, event)       -> fa_resp for permission events,
 *                                                   delete pending[event]
 *
 * Portability: every kernel struct field is read with bpf_probe_read_kernel at
 * an OFF_* offset resolved from the running kernel's BTF, and kernel-version
 * choices (function names, constants) arrive as -D macros, both from
 * otel_fsnotify/kernel/layout.py. The headers bcc compiles against are never
 * used for a layout (they may belong to another kernel).
 *
 * inotify or fanotify? Decided from the group's ops table: its handler is
 * FN_INOTIFY_HANDLE or fanotify_handle_event (text addresses from kallsyms;
 * the ops tables themselves are data symbols, absent without
 * CONFIG_KALLSYMS_ALL). Not from a hook
 * on fanotify_handle_event: that function has 8 arguments and BPF trampolines
 * before 6.6 attach to at most 6, so the fentry backend could not use it.
 *
 * One source, two backends: -DUSE_FENTRY=1 builds fentry/fexit programs
 * (auto-attached by bcc), otherwise kprobe/kretprobe programs that
 * otel_fsnotify/backends/exact attaches by name. The record sent to user space
 * (struct out_event) is declared field by field, once, in
 * otel_fsnotify/backends/exact/records.py; OUT_HDR_SIZE checks the two agree.
 */
#include "fsnotify_common.h"

#define NAME_LEN 256       /* inotify name copied from the event (NAME_MAX + NUL) */

/* out_event.rtype */
#define REC_EVENT 1        /* a tracer read an event */
#define REC_RESPONSE 2     /* a permission event was answered or interrupted */
#define REC_OVERFLOW 3     /* a tracer read the group's queue-overflow event */
/* the process table's feed (user space keeps each process's exe and container
 * as of every event: one that exec'd or exited since is still named right) */
#define REC_FORK 4         /* a new process: tracee is the child */
#define REC_EXEC 5         /* a process exec'd: tracee is it, tail the file name */
#define REC_EXIT 6         /* a process (its leader) exited: tracee is it */

/* Counter slots (per-CPU array `counters`); names in exact/records.py COUNTERS. */
#define CNT_EMITTED 0
#define CNT_RINGBUF_LOST 1
#define CNT_MAP_FULL 2
#define CNT_UNMATCHED 3
#define CNT_CTX_FULL 4
#define CNT_FILTERED 5
#define CNT_FLUSHED_ON_CLOSE 6
#define CNT_NO_CTX 7
#define CNT_FILTERED_SCOPE 8
#define CNT_SLOTS 9

/* The fixed part of what the tracee side knows. */
struct record {
    u64 ts_boot;          /* bpf_ktime_get_boot_ns() when queued */
    u64 group;            /* struct fsnotify_group * */
    u64 i_ino, i_ino_dir;
    u64 tracee_cgroup;    /* the tracee's cgroup v2 id (its directory's inode number) */
    struct proc_id tracee;
    struct proc_id tracer;   /* filled when a tracer reads it */
    u32 kind;             /* KIND_* */
    u32 prio;
    u32 i_wd, i_mask, i_cookie;
    u32 fa_type, fa_mask, fa_pid, fa_flags, fa_f_flags;
    u32 name_len;         /* bytes of pending.name used, NUL included (0: no name) */
    u32 pad;              /* keeps the record a multiple of 8 bytes */
};

/* Kept in `pending` from insertion until the event is freed. */
struct pending_rec {
    struct record rec;
    char name[NAME_LEN];
};

/* What goes to user space: the fixed header, then tail_len bytes of tail only
 * (variable-size records: an inotify event without a name is the header alone). */
struct out_event {
    struct record rec;
    u64 ts_now;           /* bpf_ktime_get_boot_ns() when emitted (fa_resp time) */
    u32 rtype;            /* REC_* */
    u32 response;         /* fanotify_perm_event.response */
    u32 state;            /* fanotify_perm_event.state */
    struct path_walk walk;  /* fanotify: the path components in tail */
    u32 tail_len;         /* bytes of tail sent */
    /* inotify: the name (NUL-ended); fanotify: the path components. The extra
     * NAME_MAX_Z lets the verifier see every write at offset & (PATH_BYTES-1)
     * in bounds. */
    char tail[PATH_BYTES + NAME_MAX_Z];
};
_Static_assert(__builtin_offsetof(struct out_event, tail) == OUT_HDR_SIZE,
               "struct out_event does not match otel_fsnotify/backends/exact/records.py");

/* insert_ctx: tid -> what the handle_event entry saw (inodes, kind). Linked with
 * FN_INSERT_EVENT on the same thread. */
struct insert_ctx {
    u64 i_ino, i_ino_dir;
    u32 kind;
};
BPF_HASH(insert_ctx, u32, struct insert_ctx, 4096);
/* pending: struct fsnotify_event * -> record + name. Bounded: MAX_PENDING entries
 * of sizeof(struct pending_rec) (~450 bytes). */
BPF_HASH(pending, u64, struct pending_rec, MAX_PENDING);
/* remove_ctx: tid -> struct fsnotify_group * between the two halves of
 * fsnotify_remove_first_event (kprobe backend only needs it; fexit has args). */
BPF_HASH(remove_ctx, u32, u64, 4096);
/* group_kind: struct fsnotify_group * -> KIND_*, to name overflow events. */
BPF_HASH(group_kind, u64, u32, 4096);
/* --tracer-pid / --tracee-pid (tgids), consulted when FILTER_*_PIDS is 1 */
BPF_HASH(tracer_pids, u32, u8, MAX_PID_FILTERS);
BPF_HASH(tracee_pids, u32, u8, MAX_PID_FILTERS);
/* --tracer-comm, --comm, --exclude-comm (struct comm_key) and --uid (the
 * tracee's euid), consulted when their FILTER_* is 1 */
BPF_HASH(tracer_comms, struct comm_key, u8, MAX_PID_FILTERS);
BPF_HASH(tracee_comms, struct comm_key, u8, MAX_PID_FILTERS);
BPF_HASH(exclude_comms, struct comm_key, u8, MAX_PID_FILTERS);
BPF_HASH(tracee_uids, u32, u8, MAX_PID_FILTERS);
/* --cgroup / --container-id / --pod-uid / --this-pod, when FILTER_SCOPE is 1:
 * the cgroup v2 directory an actor must be in (or below). Tested at insertion,
 * where the actor is the current task; an event of an actor outside is marked
 * (KIND_OUT_OF_SCOPE in its record's kind) and dropped when read, unless the
 * agent reads it: watch mode names its actors from those reads, in order. */
BPF_CGROUP_ARRAY(scope_cgroup, 1);
#define KIND_OUT_OF_SCOPE 0x100
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
BPF_PERCPU_ARRAY(scratch, struct out_event, 1);
BPF_PERCPU_ARRAY(rec_scratch, struct pending_rec, 1);
BPF_PERCPU_ARRAY(counters, u64, CNT_SLOTS);

static __always_inline void count(u32 slot)
{
    u64 *c = counters.lookup(&slot);
    if (c)
        (*c)++;
}

/* 1: the record goes out; 0: filtered (counted here) */
static __always_inline int passes_filters(struct record *r)
{
    if ((r->kind & KIND_OUT_OF_SCOPE) && r->tracer.pid != SELF_TGID) {
        count(CNT_FILTERED_SCOPE);
        return 0;
    }
    if (!kind_wanted(r->kind & ~KIND_OUT_OF_SCOPE) || !group_wanted(r->group)) {
        count(CNT_FILTERED);
        return 0;
    }
    if ((FILTER_TRACER_PIDS && !tracer_pids.lookup(&r->tracer.pid))
        || (FILTER_TRACEE_PIDS && !tracee_pids.lookup(&r->tracee.pid))) {
        count(CNT_FILTERED);
        return 0;
    }
    /* by name and uid. The agent's own reads (watch mode's actors) always
     * pass: user space applies the same filters to the changes it reports.
     * So does an event without an actor (a queue overflow): user space lets
     * overflows through every filter, they say events were lost. */
    if (r->tracer.pid != SELF_TGID
        && ((FILTER_TRACER_COMMS && !tracer_comms.lookup((struct comm_key *)r->tracer.comm))
            || (r->tracee.pid
                && ((FILTER_TRACEE_COMMS && !tracee_comms.lookup((struct comm_key *)r->tracee.comm))
                    || (FILTER_EXCLUDE_COMMS && exclude_comms.lookup((struct comm_key *)r->tracee.comm))
                    || (FILTER_TRACEE_UIDS && !tracee_uids.lookup(&r->tracee.uid)))))) {
        count(CNT_FILTERED);
        return 0;
    }
    return 1;
}

/* ---- tracee side ------------------------------------------------------- */

static __always_inline int on_handle_enter(u32 kind, u64 inode, u64 dir)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    struct insert_ctx ctx = {};
    ctx.kind = kind;
    ctx.i_ino = inode ? read_ptr(inode + OFF_INODE_INO) : 0;
    ctx.i_ino_dir = dir ? read_ptr(dir + OFF_INODE_INO) : 0;
    if (insert_ctx.update(&tid, &ctx) != 0)
        count(CNT_CTX_FULL);
    return 0;
}

static __always_inline int on_handle_exit(void)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    insert_ctx.delete(&tid);
    return 0;
}

/* FN_INSERT_EVENT(group, event, ...): the event is fully built here; it may still
 * be merged or replaced by the overflow event, in which case the caller destroys
 * it and on_destroy drops our record. */
static __always_inline int on_insert(u64 group, u64 event)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 ops = read_ptr(group + OFF_GROUP_OPS);
    u32 kind = 0;
    if (read_ptr(ops + OFF_OPS_INOTIFY_HANDLER) == INOTIFY_HANDLER_ADDR)
        kind = KIND_INOTIFY;
    else if (read_ptr(ops + OFF_OPS_HANDLE_EVENT) == FANOTIFY_HANDLER_ADDR)
        kind = KIND_FANOTIFY;
    if (!kind)
        return 0;   /* another fsnotify backend (dnotify, audit...) */
    u32 zero = 0;
    struct pending_rec *p = rec_scratch.lookup(&zero);
    if (!p)
        return 0;
    struct record *r = &p->rec;
    __builtin_memset(r, 0, sizeof(*r));
    r->ts_boot = bpf_ktime_get_boot_ns();
    r->group = group;
    r->kind = kind;
    r->prio = read_u32(group + OFF_GROUP_PRIORITY);
    fill_proc(&r->tracee);
    r->tracee_cgroup = bpf_get_current_cgroup_id();
    /* 0: not under it; 1: under it; <0 (not filled in yet): let user space judge */
    if (FILTER_SCOPE && scope_cgroup.check_current_task(0) == 0)
        r->kind |= KIND_OUT_OF_SCOPE;
    if (kind == KIND_INOTIFY) {
        /* struct inotify_event_info embeds struct fsnotify_event first */
        struct insert_ctx *ctx = insert_ctx.lookup(&tid);
        if (ctx) {
            r->i_ino = ctx->i_ino;
            r->i_ino_dir = ctx->i_ino_dir;
        } else {
            count(CNT_NO_CTX);
        }
        r->i_mask = read_u32(event + OFF_INOTIFY_EVENT_MASK);
        r->i_wd = read_u32(event + OFF_INOTIFY_EVENT_WD);
        r->i_cookie = read_u32(event + OFF_INOTIFY_EVENT_COOKIE);
        u32 len = read_u32(event + OFF_INOTIFY_EVENT_NAME_LEN);
        if (len) {
            /* name[] is a flexible array member: inline in the event */
            long n = bpf_probe_read_kernel_str(p->name, sizeof(p->name), (void *)(event + OFF_INOTIFY_EVENT_NAME));
            r->name_len = n > 0 ? n : 0;
        }
    } else {
        /* struct fanotify_event embeds struct fsnotify_event first; `type` is a
         * bitfield: read its 32-bit word and shift (position from BTF) */
        r->fa_mask = read_u32(event + OFF_FANOTIFY_EVENT_MASK);
        r->fa_type = (read_u32(event + FA_TYPE_WORD) >> FA_TYPE_SHIFT) & FA_TYPE_MASK;
        /* the struct pid of the actor's tgid: its number as the agent has it */
        r->fa_pid = pid_nr_here(read_ptr(event + OFF_FANOTIFY_EVENT_PID));
        r->fa_flags = read_u32(group + OFF_GROUP_FAN_FLAGS);
        r->fa_f_flags = read_u32(group + OFF_GROUP_FAN_F_FLAGS);
    }
    if (!group_kind.lookup(&group))   /* a lookup is cheaper than an update per event */
        group_kind.update(&group, &kind);
    if (pending.update(&event, p) != 0)
        count(CNT_MAP_FULL);
    return 0;
}

/* ---- tracer side ------------------------------------------------------- */

static __always_inline struct out_event *new_out(struct record *r, u32 rtype)
{
    u32 zero = 0;
    struct out_event *out = scratch.lookup(&zero);
    if (!out)
        return 0;
    __builtin_memcpy(&out->rec, r, sizeof(*r));
    out->rec.kind &= ~KIND_OUT_OF_SCOPE;
    out->ts_now = bpf_ktime_get_boot_ns();
    out->rtype = rtype;
    out->response = 0;
    out->state = 0;
    out->walk.len = 0;
    out->walk.depth = 0;
    out->walk.complete = 0;
    out->walk.root_depth = ROOT_NOT_PASSED;
    out->tail_len = 0;
    return out;
}

/* The path of a fanotify event's file into the tail. */
static __always_inline void walk_fanotify_path(struct out_event *out, u64 dentry, u64 vfsmnt)
{
    walk_path(out->tail, &out->walk, dentry, vfsmnt);
    out->tail_len = out->walk.len;
}

/* Send the header and tail_len bytes of tail: most records are a few hundred
 * bytes, not sizeof(struct out_event). 0 when the ring is full (counted). */
static __always_inline int ring_out(struct out_event *out)
{
    u64 size = OUT_HDR_SIZE + (u64)out->tail_len;
    if (size > sizeof(*out))
        size = sizeof(*out);
    if (events.ringbuf_output(out, size, 0) != 0) {
        count(CNT_RINGBUF_LOST);
        return 0;
    }
    return 1;
}

/* An event record: counted as emitted once in the ring. */
static __always_inline void submit(struct out_event *out)
{
    if (ring_out(out))
        count(CNT_EMITTED);
}

static __always_inline int on_remove_enter(u64 group)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    remove_ctx.update(&tid, &group);
    return 0;
}

static __always_inline int on_remove_exit(u64 group, u64 event)
{
    if (!event)
        return 0;
    /* fsnotify_flush_notify() also removes events when a group is torn down;
     * nobody reads those. */
    if (read_u16(group + OFF_GROUP_SHUTDOWN) & 0xff) {
        count(CNT_FLUSHED_ON_CLOSE);
        return 0;
    }
    struct pending_rec *p = pending.lookup(&event);
    if (!p) {
        if (event == read_ptr(group + OFF_GROUP_OVERFLOW_EVENT)) {
            u32 zero = 0;
            struct pending_rec *op = rec_scratch.lookup(&zero);
            if (!op)
                return 0;
            struct record *o = &op->rec;
            __builtin_memset(o, 0, sizeof(*o));
            o->group = group;
            o->ts_boot = bpf_ktime_get_boot_ns();
            o->prio = read_u32(group + OFF_GROUP_PRIORITY);
            u32 *kind = group_kind.lookup(&group);
            o->kind = kind ? *kind : 0;
            fill_proc(&o->tracer);
            if (!passes_filters(o))
                return 0;
            struct out_event *out = new_out(o, REC_OVERFLOW);
            if (out)
                submit(out);
            return 0;
        }
        count(CNT_UNMATCHED);
        return 0;
    }
    struct record *r = &p->rec;
    fill_proc(&r->tracer);
    if ((r->kind & ~KIND_OUT_OF_SCOPE) == KIND_FANOTIFY) {
        /* fanotify merges later events of the same object and process into
         * a queued one (fanotify_merge() ORs the masks): what the tracer
         * reads is the mask now, not the one inserted */
        r->fa_mask = read_u32(event + OFF_FANOTIFY_EVENT_MASK);
    }
    if (!passes_filters(r))
        return 0;
    struct out_event *out = new_out(r, REC_EVENT);
    if (!out)
        return 0;
    if ((r->kind & ~KIND_OUT_OF_SCOPE) == KIND_INOTIFY) {
        if (r->name_len) {
            __builtin_memcpy(out->tail, p->name, NAME_LEN);
            out->tail_len = r->name_len;
        }
    } else if (r->fa_type == FA_TYPE_PATH || r->fa_type == FA_TYPE_PATH_PERM) {
        /* struct fanotify_path_event / fanotify_perm_event: struct path after fae */
        u64 path = event + (r->fa_type == FA_TYPE_PATH ? OFF_FA_PATH_EVENT_PATH : OFF_FA_PERM_EVENT_PATH);
        u64 vfsmnt = read_ptr(path + OFF_PATH_MNT);
        u64 dentry = read_ptr(path + OFF_PATH_DENTRY);
        if (vfsmnt && dentry)
            walk_fanotify_path(out, dentry, vfsmnt);
    }
    submit(out);
    return 0;
}

/* fsnotify_destroy_event(group, event): the end of every event's life. For a
 * fanotify permission event this is after the verdict: state FAN_EVENT_ANSWERED
 * with response FAN_ALLOW/FAN_DENY, or interrupted (the tracee was killed while
 * waiting: state INIT or CANCELED). */
static __always_inline int on_destroy(u64 group, u64 event)
{
    struct pending_rec *p = pending.lookup(&event);
    if (!p)
        return 0;
    struct record *r = &p->rec;
    if ((r->kind & ~KIND_OUT_OF_SCOPE) == KIND_FANOTIFY && r->fa_type == FA_TYPE_PATH_PERM
        && passes_filters(r)) {
        struct out_event *out = new_out(r, REC_RESPONSE);
        if (out) {
            out->response = read_u16(event + OFF_FA_PERM_RESPONSE);
            out->state = read_u16(event + OFF_FA_PERM_STATE);
            u64 path = event + OFF_FA_PERM_EVENT_PATH;
            u64 vfsmnt = read_ptr(path + OFF_PATH_MNT);
            u64 dentry = read_ptr(path + OFF_PATH_DENTRY);
            if (vfsmnt && dentry)
                walk_fanotify_path(out, dentry, vfsmnt);
            submit(out);
        }
    }
    pending.delete(&event);
    return 0;
}

/* ---- the process table's feed ------------------------------------------- */

/* Not events: never filtered, not counted as emitted (ring_out). */
static __always_inline struct out_event *process_record(u32 rtype)
{
    u32 zero = 0;
    struct pending_rec *p = rec_scratch.lookup(&zero);
    if (!p)
        return 0;
    struct record *r = &p->rec;
    __builtin_memset(r, 0, sizeof(*r));
    r->ts_boot = bpf_ktime_get_boot_ns();
    fill_proc(&r->tracee);
    if (!r->tracee.pid)
        return 0;   /* outside the agent's pid namespace: no /proc of it there */
    r->tracee_cgroup = bpf_get_current_cgroup_id();
    return new_out(r, rtype);
}

/* raw tracepoint: args[1] is the child task (the classic one cannot tell a
 * thread from a process) */
RAW_TRACEPOINT_PROBE(sched_process_fork)
{
    u64 child = ctx->args[1];
    if (read_u32(child + OFF_TASK_PID) != read_u32(child + OFF_TASK_TGID))
        return 0;   /* a thread: its events carry its process */
    u32 tgid = task_tgid_here(child), pid = task_tid_here(child);
    if (!tgid)
        return 0;   /* outside the agent's pid namespace */
    struct out_event *out = process_record(REC_FORK);   /* the parent's identity... */
    if (!out)
        return 0;
    struct proc_id *t = &out->rec.tracee;
    t->ppid = t->pid;                                    /* ...made the child's */
    t->pid = tgid;
    t->tid = pid;
    __builtin_memcpy(t->pcomm, t->comm, TASK_COMM);
    bpf_probe_read_kernel(&t->comm, TASK_COMM, (void *)(child + OFF_TASK_COMM));
    ring_out(out);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exec)
{
    struct out_event *out = process_record(REC_EXEC);   /* comm is the new program's */
    if (!out)
        return 0;
    unsigned short loc = args->data_loc_filename & 0xFFFF;
    long got = bpf_probe_read_kernel_str(out->tail, NAME_MAX_Z, (void *)args + loc);
    out->tail_len = got > 0 ? got : 0;
    ring_out(out);
    return 0;
}

TRACEPOINT_PROBE(sched, sched_process_exit)
{
    u64 id = bpf_get_current_pid_tgid();
    if ((u32)id != (u32)(id >> 32))
        return 0;   /* a thread, not the leader */
    struct out_event *out = process_record(REC_EXIT);
    if (out)
        ring_out(out);
    return 0;
}

/* ---- attachment: fentry/fexit or kprobe/kretprobe ----------------------- */
#define CAT_(a, b) a##b
#define CAT(a, b) CAT_(a, b)

#if USE_FENTRY
#define ENTRY(fn, args...) KFUNC_PROBE(fn, args)
#define EXIT(fn, args...) KRETFUNC_PROBE(fn, args)

ENTRY(FN_INOTIFY_HANDLE, void *mark, u32 mask, void *inode, void *dir)
{
    return on_handle_enter(KIND_INOTIFY, (u64)inode, (u64)dir);
}
EXIT(FN_INOTIFY_HANDLE, void *mark, u32 mask, void *inode, void *dir, void *name, u32 cookie, int ret)
{
    return on_handle_exit();
}
ENTRY(FN_INSERT_EVENT, void *group, void *event)
{
    return on_insert((u64)group, (u64)event);
}
EXIT(fsnotify_remove_first_event, void *group, void *ret)
{
    return on_remove_exit((u64)group, (u64)ret);
}
ENTRY(fsnotify_destroy_event, void *group, void *event)
{
    return on_destroy((u64)group, (u64)event);
}
#else
int on_inotify_handle_enter(struct pt_regs *ctx)
{
    return on_handle_enter(KIND_INOTIFY, PT_REGS_PARM3(ctx), PT_REGS_PARM4(ctx));
}
int on_handle_return(struct pt_regs *ctx)
{
    return on_handle_exit();
}
int on_insert_enter(struct pt_regs *ctx)
{
    return on_insert(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
}
int on_remove_first_enter(struct pt_regs *ctx)
{
    return on_remove_enter(PT_REGS_PARM1(ctx));
}
int on_remove_first_return(struct pt_regs *ctx)
{
    u32 tid = (u32)bpf_get_current_pid_tgid();
    u64 *group = remove_ctx.lookup(&tid);
    if (!group)
        return 0;
    u64 g = *group;
    remove_ctx.delete(&tid);
    return on_remove_exit(g, PT_REGS_RC(ctx));
}
int on_destroy_enter(struct pt_regs *ctx)
{
    return on_destroy(PT_REGS_PARM1(ctx), PT_REGS_PARM2(ctx));
}
#endif
