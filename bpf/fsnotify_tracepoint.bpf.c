// SPDX-License-Identifier: Apache-2.0
// otel-fsnotify "tracepoint" backend: for kernels without kprobes or BPF
// trampolines. Only syscall and sched tracepoints (plus one raw tracepoint)
// are used. Loaded by otel_fsnotify/backends/tracepoint with bcc.
//
// What it captures:
//   * tracer side: every read(2) on an inotify or fanotify file descriptor
//     (what the listener received), every write(2) of a fanotify permission
//     response, every inotify_add_watch(2);
//   * tracee side is NOT visible here (no fsnotify hooks without kprobes):
//     fanotify records carry the actor's pid; for inotify user space mirrors
//     the watches with its own fanotify group (otel_fsnotify/enrich/mirror.py);
//   * a process table feed: fork / exec / exit;
//   * permission verdicts nobody gave: a tracee killed while waiting
//     (signal_deliver), a permission listener's last close or exit.
//
// Portability: every kernel struct field is read at an offset passed in as a
// -D macro, resolved from the running kernel's BTF by
// otel_fsnotify/kernel/layout.py, never from the headers bcc compiles with.
// The filters and shared helpers are in fsnotify_common.h; this program adds
//   SELF_TGID            the agent's tgid (as its pid namespace numbers it):
//                        its own reads are not tracer events
//   AGENT_PIDNS_INUM     set when that namespace is not the initial one (no
//                        hostPID): the agent's global tgid is learnt (agent_tgid)
//   REC_HDR_SIZE         sizeof(struct rec_hdr) as user space declares it
//                        (otel_fsnotify/backends/tracepoint/records.py)

#include "fsnotify_common.h"

// ring buffer record kinds (rec_hdr.kind; the same REC_* in tracepoint/records.py)
#define REC_READ 1        // bytes a tracer read from a listener fd (one chunk)
#define REC_RESPONSE 2    // struct fanotify_response written by a tracer
#define REC_ADD_WATCH 3   // inotify_add_watch returned a wd: rescan fdinfo
#define REC_FORK 4        // new process (not thread)
#define REC_EXEC 5        // process exec'd: comm, exe, creds, mntns
#define REC_EXIT 6        // process (thread group leader) exited
#define REC_FAN_PATH 7    // the path of a fanotify event's file (components leaf first)
#define REC_KILLED 8      // a task takes SIGKILL leaving a failed syscall (a
                          // tracee killed out of a permission wait, among others)
#define REC_THREAD 10     // a new thread (tid, tgid)
#define REC_GROUP_GONE 9  // the last reference to a permission-capable fanotify
                          // file is being dropped (close(2) or exit)
#define REC_CREDS 11      // a process changed its user or group ids (set*id(2))

#define WAKEUP_EVERY 512  // records per CPU between wakeups of the agent
#define CHUNK 4096        // bytes copied per ring buffer record
#define MAX_CHUNKS 16     // 64 KiB per read; more is counted as truncated
// fanotify events per read whose path is walked in the kernel. The loop is
// unrolled: 64 loads in ~1.7 s on 6.18, 128 exceeds the verifier's
// instruction limit (E2BIG). Events past it get no path (user space counts
// fanotify_path_unresolved): the fd numbers they carry are reused too soon
// for a readlink of /proc/<tracer>/fd to be trusted.
#define MAX_FAN_PATHS 64
// events of the agent's watch group looked at per exec (newest first)
#define WATCH_QUEUE_LOOK 256
#define LIST_HEAD_PREV 8  // struct list_head { next, prev }
#define LEARN_WATCH_GROUP 3  // learn_fds value: the agent's watch group

// counter slots (index into `counters`; names in tracepoint/records.py COUNTERS)
#define CNT_RINGBUF_LOST 0     // ring buffer full: a record was dropped
#define CNT_READ_TRUNCATED 1   // read larger than MAX_CHUNKS*CHUNK: tail not captured
#define CNT_PENDING_FULL 2     // per-thread pending map full: a read/write not tracked
#define CNT_PATH_TOO_DEEP 3    // fanotify path not walked to the root (too deep/long): cut
#define CNT_RINGBUF_LOST_EVENTS 4  // the events in the records the full ring dropped
#define CNT_SLOTS 5

// Every record: this header, then `len` bytes of data. Each field has one
// meaning; the kinds that do not use it leave it 0.
struct rec_hdr {
    u64 ts;          // bpf_ktime_get_ns (monotonic); user space converts
    u64 group;       // struct fsnotify_group * (file->private_data)
    u64 cgroup;      // the current task's cgroup v2 id (its directory's inode number)
    u32 kind;        // REC_*
    struct proc_id proc;  // the current task (REC_FORK / REC_THREAD: the new one)
    s32 fd;          // listener fd
    s32 ret;         // syscall return value
    u32 prio;        // fsnotify group priority
    u32 listener;    // KIND_INOTIFY / KIND_FANOTIFY
    u32 total;       // REC_READ: bytes the read returned
    u32 offset;      // REC_READ: this chunk's offset within the read
    u32 len;         // bytes of data following this header
    u32 pidns;       // REC_READ of fanotify: the reader's pid namespace (inum);
                     // the pids in the events it read are numbered in it.
                     // REC_FORK / REC_THREAD: the new task's pid namespace
    u32 nspid;       // REC_FORK / REC_THREAD: the new task's number in it
    u32 event_off;   // REC_FAN_PATH: the event's offset in the read it belongs to
    u32 queued;      // REC_EXEC / REC_CREDS: events of this process still waiting in
                     // the agent's watch group (queued before: made as it was then)
    struct path_walk walk;  // REC_FAN_PATH: the components in data
};
_Static_assert(sizeof(struct rec_hdr) == REC_HDR_SIZE,
               "struct rec_hdr does not match otel_fsnotify/backends/tracepoint/records.py");

struct rec_buf {
    struct rec_hdr h;
    u8 data[PATH_BYTES + NAME_MAX_Z];  // a path may write one component past CHUNK
};
_Static_assert(CHUNK <= PATH_BYTES, "a read chunk must fit the data buffer");

// Context saved at sys_enter_read/write for the matching sys_exit, per thread.
struct pending_io {
    u64 buf;
    u64 group;
    s32 fd;
    u32 listener;
    u32 prio;
    u32 pad;
};

// Ring buffer to user space (backends/tracepoint reads its mmap): RINGBUF_PAGES pages.
BPF_RINGBUF_OUTPUT(events, RINGBUF_PAGES);
// sys_enter_inotify_add_watch -> sys_exit: the listener fd, keyed by pid_tgid.
BPF_HASH(pending_writes, u64, struct pending_io, 4096);
// Stage for records too big for the BPF stack (one per CPU).
BPF_PERCPU_ARRAY(scratch, struct rec_buf, 1);
// Records submitted per CPU, for the wakeup batching in submit().
BPF_PERCPU_ARRAY(wake_count, u64, 1);
// --tracer-pid (tgids), consulted when FILTER_TRACER_PIDS is 1 (--tracee-pid
// is applied in user space, where this backend learns its tracees).
BPF_HASH(tracer_pids, u32, u8, MAX_PID_FILTERS);
// --tracer-comm, consulted when FILTER_TRACER_COMMS is 1: the reader is the
// current task here. (--comm, --exclude-comm, --uid name the tracee: user space.)
BPF_HASH(tracer_comms, struct comm_key, u8, MAX_PID_FILTERS);
// Loss counters, summed over CPUs by user space.
BPF_PERCPU_ARRAY(counters, u64, CNT_SLOTS);
// f_op of an inotify fd ([KIND_INOTIFY]) and a fanotify fd ([KIND_FANOTIFY]):
// inotify_fops/fanotify_fops are data symbols, absent from kallsyms on kernels
// without CONFIG_KALLSYMS_ALL, so the agent teaches them: it opens one fd of
// each and reads it once; `learn_fds` says which of its fds is which.
BPF_ARRAY(listener_fops, u64, 3);
BPF_HASH(learn_fds, u32, u32, 4);
// [0], [1]: pt_regs->di seen for THREAD_SIZE_SMALL / _LARGE while learning;
// [2]: the THREAD_SIZE user space chose (0 until learnt).
BPF_ARRAY(learn_regs, u64, 3);
// The agent's own watch-mode fanotify group (struct fsnotify_group *), learnt
// from its fd at start (LEARN_WATCH_GROUP), 0 without watch mode.
BPF_ARRAY(watch_group, u64, 1);
// The agent's tgid in the kernel's global numbering, which
// bpf_get_current_pid_tgid() gives: SELF_TGID itself with hostPID, else
// learnt at start from the agent's first read (a pod's pid namespace numbers
// it otherwise).
#ifdef AGENT_PIDNS_INUM
BPF_ARRAY(agent_tgid, u32, 1);

static __always_inline int is_agent(u32 tgid) {
    int zero = 0;
    u32 *self = agent_tgid.lookup(&zero);
    return self && *self == tgid;
}
#else
#define is_agent(tgid) ((tgid) == SELF_TGID)
#endif

// Processes reading a permission-capable fanotify group (priority > 0): tgid
// -> the fd last read. Lets close(2) and exit find the file cheaply.
BPF_HASH(perm_readers, u32, u32, 10240);

static __always_inline void count_n(int slot, u64 n) {
    u64 *v = counters.lookup(&slot);
    if (v)
        *v += n;
}

static __always_inline void count(int slot) {
    count_n(slot, 1);
}

// struct file * of fd in the current task's fd table, 0 if none.
static __always_inline u64 fd_file(u32 fd) {
    u64 task = bpf_get_current_task();
    u64 files = read_ptr(task + OFF_TASK_FILES);
    if (!files)
        return 0;
    u64 fdt = read_ptr(files + OFF_FILES_FDT);
    if (!fdt)
        return 0;
    u32 max_fds = 0;
    bpf_probe_read_kernel(&max_fds, sizeof(max_fds), (void *)(fdt + OFF_FDT_MAX_FDS));
    if (fd >= max_fds)
        return 0;
    u64 arr = read_ptr(fdt + OFF_FDT_FD);
    if (!arr)
        return 0;
    return read_ptr(arr + (u64)fd * 8);
}

// Which kind of listener `file` is (0: neither), by comparing its f_op with
// the learnt inotify_fops / fanotify_fops addresses.
static __always_inline u32 listener_kind(u64 file) {
    if (!file)
        return 0;
    u64 fop = read_ptr(file + OFF_FILE_F_OP);
    if (!fop)
        return 0;
    int k = KIND_INOTIFY;
    u64 *known = listener_fops.lookup(&k);
    if (known && *known == fop)
        return KIND_INOTIFY;
    k = KIND_FANOTIFY;
    known = listener_fops.lookup(&k);
    if (known && *known == fop)
        return KIND_FANOTIFY;
    return 0;
}

static __always_inline int tracer_wanted(u32 tgid, u32 kind, u64 group) {
    if (is_agent(tgid) || !kind_wanted(kind) || !group_wanted(group))
        return 0;
#ifdef AGENT_PIDNS_INUM
    tgid = task_tgid_here(bpf_get_current_task());  // --tracer-pid numbers as the agent's /proc
#endif
    if (FILTER_TRACER_PIDS && !tracer_pids.lookup(&tgid))
        return 0;
    if (FILTER_TRACER_COMMS) {
        struct comm_key reader = {};
        bpf_get_current_comm(reader.comm, sizeof(reader.comm));
        if (!tracer_comms.lookup(&reader))
            return 0;
    }
    return 1;
}

// inum of a task's active pid namespace: task->thread_pid->numbers[level].ns
// (task_active_pid_ns()), and the task's number there (numbers[level].nr).
// fanotify numbers the pid of an event in the namespace of the task reading
// it (pid_vnr at copy time).
static __always_inline u32 task_pidns(u64 task, u32 *nr) {
    u64 pid = read_ptr(task + OFF_TASK_THREAD_PID);
    if (!pid)
        return 0;
    u32 level = 0;
    bpf_probe_read_kernel(&level, sizeof(level), (void *)(pid + OFF_PID_LEVEL));
    u64 upid = pid + OFF_PID_NUMBERS + (u64)level * UPID_SIZE;
    if (nr)
        bpf_probe_read_kernel(nr, sizeof(*nr), (void *)(upid + OFF_UPID_NR));
    u64 ns = read_ptr(upid + OFF_UPID_NS);
    u32 inum = 0;
    if (ns)
        bpf_probe_read_kernel(&inum, sizeof(inum), (void *)(ns + OFF_PIDNS_INUM));
    return inum;
}

static __always_inline struct rec_buf *stage(void) {
    int zero = 0;
    return scratch.lookup(&zero);
}

// Reset the fields only some kinds use (the scratch keeps the last record's).
static __always_inline void clear_record(struct rec_hdr *h, u32 kind) {
    h->kind = kind;
    h->group = 0;
    h->cgroup = 0;
    h->fd = 0;
    h->ret = 0;
    h->prio = 0;
    h->listener = 0;
    h->total = 0;
    h->offset = 0;
    h->pidns = 0;
    h->nspid = 0;
    h->event_off = 0;
    h->queued = 0;
    h->walk.len = 0;
    h->walk.depth = 0;
    h->walk.complete = 0;
    h->walk.root_depth = ROOT_NOT_PASSED;
}

// A record of the current task, `kind`, nothing captured yet (the caller may
// fill in its own fields). 0 when the scratch is gone.
static __always_inline struct rec_buf *stage_record(u32 kind) {
    struct rec_buf *r = stage();
    if (!r)
        return 0;
    clear_record(&r->h, kind);
    fill_proc(&r->h.proc);
    r->h.ts = bpf_ktime_get_ns();
    r->h.cgroup = bpf_get_current_cgroup_id();
    return r;
}

// 0: the record is in the ring; else the ring was full (counted)
static __always_inline int submit(struct rec_buf *r, long len) {
    u64 n = len;
    // keep the clamp and its use on one register so the verifier sees the bound
    asm volatile("" : "+r"(n));
    if (n > CHUNK)
        n = CHUNK;
    asm volatile("" : "+r"(n));
    r->h.len = n;
    // Wake the agent once per WAKEUP_EVERY records of this CPU, not per
    // record (the default while the consumer keeps up, which costs the
    // producing task an irq_work and the agent a context switch per event).
    // The agent looks at the ring every MAX_WAIT_MS anyway (backends/tracepoint).
    int zero = 0;
    u64 *cnt = wake_count.lookup(&zero);
    u64 flags = BPF_RB_NO_WAKEUP;
    if (cnt && ++(*cnt) % WAKEUP_EVERY == 0)
        flags = BPF_RB_FORCE_WAKEUP;
    if (events.ringbuf_output(r, sizeof(struct rec_hdr) + n, flags) == 0)
        return 0;
    count(CNT_RINGBUF_LOST);
    return -1;
}

// How many events of a read end past byte `from`: the events a lost record
// (and the rest of that read, which cannot be decoded without it) held, and
// the one cut by its start, which the received part cannot complete. The
// buffer is still the reader's at sys_exit_read. inotify:
// struct inotify_event is 16 bytes and a name of `len` (at byte 12);
// fanotify: each event says its length first (event_len). The verifier
// follows at most 8192 jumps along one path, so the walk takes MAX_WALK
// events (three jumps each); what lies past them is counted as the most
// events its bytes can hold (the smallest event: 16 bytes, 24 for fanotify).
#define MAX_WALK 2048
static __always_inline u32 events_from(u64 buf, u32 total, u32 from, u32 listener) {
    // one loop whose only branches leave it, counting without a branch
    // (minus the sign of from - end): the verifier walks each iteration once,
    // not every combination of taken branches
    u32 at = listener == KIND_INOTIFY ? 12 : 0;    // where the length is
    u32 fixed = listener == KIND_INOTIFY ? 16 : 0;  // what it leaves out
    u32 pos = 0, len;
    s64 n = 0;
    for (int i = 0; i < MAX_WALK; i++) {
        if (pos >= total)
            return n;
        len = 0;
        bpf_probe_read_user(&len, 4, (void *)(buf + pos + at));
        len += fixed;
        if (len - 16 > MAX_CHUNKS * CHUNK - 16)  // (unsigned) below 16 or above a read
            return n;  // not an event header: the count so far
        n -= ((s64)from - (s64)pos - (s64)len) >> 63;  // +1 when it ends past `from`
        pos += len;
    }
    if (pos < from)
        pos = from;
    if (pos < total)
        n += (total - pos) / (listener == KIND_INOTIFY ? 16 : 24);
    return n;
}

// The walk runs as a program of its own, reached by a tail call from
// sys_exit_read (lost_read_walk[0], set by user space after loading): the
// verifier checks it once, not once for every way into it.
struct lost_read {
    u64 buf;
    u32 total;
    u32 from;
    u32 listener;
    u32 pad;
};
BPF_PERCPU_ARRAY(lost_read_arg, struct lost_read, 1);
BPF_PROG_ARRAY(lost_read_walk, 1);

int count_lost_events(void *ctx) {
    int zero = 0;
    struct lost_read *l = lost_read_arg.lookup(&zero);
    if (l)
        count_n(CNT_RINGBUF_LOST_EVENTS, events_from(l->buf, l->total, l->from, l->listener));
    return 0;
}

// ---- tracer side: read(2) on a listener fd --------------------------------

// Learning only (the agent's own tgid): which f_op is inotify's / fanotify's,
// and where this kernel keeps the syscall's user registers (see user_regs).
// Detached by user space once learnt.
TRACEPOINT_PROBE(syscalls, sys_enter_read) {
    u64 id = bpf_get_current_pid_tgid();
#ifdef AGENT_PIDNS_INUM
    if (task_tgid_here(bpf_get_current_task()) != SELF_TGID)
        return 0;
    int zero = 0;
    u32 global = id >> 32;
    agent_tgid.update(&zero, &global);
#else
    if ((id >> 32) != SELF_TGID)
        return 0;
#endif
    u32 fd = args->fd;
    u32 *kind = learn_fds.lookup(&fd);
    if (!kind)
        return 0;
    int k = *kind;
    if (k == LEARN_WATCH_GROUP) {
        int slot0 = 0;
        u64 group = read_ptr(fd_file(fd) + OFF_FILE_PRIVATE_DATA);
        watch_group.update(&slot0, &group);
        return 0;
    }
    u64 fop = read_ptr(fd_file(fd) + OFF_FILE_F_OP);
    listener_fops.update(&k, &fop);
    // candidate THREAD_SIZEs (kernel/layout.py THREAD_SIZES): user space keeps
    // the one whose pt_regs->di equals the fd just passed
    u64 stack = read_ptr(bpf_get_current_task() + OFF_TASK_STACK);
    u64 di = read_ptr(stack + THREAD_SIZE_SMALL - PT_REGS_SIZE + OFF_PT_REGS_DI);
    int slot = 0;
    learn_regs.update(&slot, &di);
    di = read_ptr(stack + THREAD_SIZE_LARGE - PT_REGS_SIZE + OFF_PT_REGS_DI);
    slot = 1;
    learn_regs.update(&slot, &di);
    return 0;
}

// The user registers saved at the top of the current task's kernel stack
// (x86_64 task_pt_regs(): stack + THREAD_SIZE - sizeof(struct pt_regs)), 0
// until learnt. Lets the sys_exit tracepoints work alone (their args carry only
// the return value), so a read(2) already blocked when the agent attached is
// seen. One map lookup and one kernel read; each argument is one more read.
static __always_inline u64 user_regs(void) {
    int two = 2;
    u64 *thread_size = learn_regs.lookup(&two);
    if (!thread_size || !*thread_size)
        return 0;
    u64 stack = read_ptr(bpf_get_current_task() + OFF_TASK_STACK);
    return stack ? stack + *thread_size - PT_REGS_SIZE : 0;
}

// The path of the file behind a fanotify event fd as ONE REC_FAN_PATH
// record: the components leaf first, each NUL-terminated, back to back in
// data (see walk_path). The fd is already installed in the tracer's table when
// read(2) returns, but the tracer may close it at once, so user space could
// not readlink it reliably. Emitted BEFORE the read's own records: a consumer
// that sees the read has already seen its paths (same CPU, same program run,
// reserved in order). The tracer's identity (pid, tid) was set by the caller.
static __always_inline void emit_fan_path(struct rec_buf *r, s32 efd, u32 event_off) {
    if (efd < 0)
        return;
    u64 file = fd_file(efd);
    if (!file)
        return;
    u64 dentry = read_ptr(file + OFF_FILE_F_PATH + OFF_PATH_DENTRY);
    u64 vfsmnt = read_ptr(file + OFF_FILE_F_PATH + OFF_PATH_MNT);
    r->h.kind = REC_FAN_PATH;
    r->h.event_off = event_off;
    walk_path((char *)r->data, &r->h.walk, dentry, vfsmnt);
    if (!r->h.walk.complete)  // deeper than PATH_STEPS, longer than PATH_BYTES, or unreadable
        count(CNT_PATH_TOO_DEEP);
    submit(r, r->h.walk.len);
}

TRACEPOINT_PROBE(syscalls, sys_exit_read) {
    long ret = args->ret;
    if (ret <= 0)
        return 0;
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    if (is_agent(tgid))
        return 0;
    u64 regs = user_regs();
    if (!regs)
        return 0;
    s32 fd = read_ptr(regs + OFF_PT_REGS_DI);
    u64 file = fd_file(fd);
    u32 listener = listener_kind(file);
    if (!listener)
        return 0;  // the common case: not an inotify/fanotify fd
    u64 group = read_ptr(file + OFF_FILE_PRIVATE_DATA);
    if (!tracer_wanted(tgid, listener, group))
        return 0;
    u64 buf = read_ptr(regs + OFF_PT_REGS_SI);
    u32 prio = 0;
    if (group)
        bpf_probe_read_kernel(&prio, sizeof(prio), (void *)(group + OFF_GROUP_PRIORITY));
    struct rec_buf *r = stage();
    if (!r)
        return 0;
    u32 total = ret;
    if (listener == KIND_FANOTIFY) {
        clear_record(&r->h, REC_FAN_PATH);
#ifdef AGENT_PIDNS_INUM
        r->h.proc.tid = task_tid_here(bpf_get_current_task());  // as the REC_READ's fill_proc
        r->h.proc.pid = task_tgid_here(bpf_get_current_task());
#else
        r->h.proc.tid = (u32)id;
        r->h.proc.pid = tgid;
#endif
        // fanotify_event_metadata: u32 event_len; u8 vers, reserved; u16
        // metadata_len; u64 mask; s32 fd; s32 pid. Walk the first events.
        u32 pos = 0;
        for (int i = 0; i < MAX_FAN_PATHS; i++) {
            if (pos + 24 > total)
                break;
            u32 event_len = 0;
            s32 efd = -1;
            bpf_probe_read_user(&event_len, 4, (void *)(buf + pos));
            bpf_probe_read_user(&efd, 4, (void *)(buf + pos + 16));
            if (event_len < 24)
                break;
            emit_fan_path(r, efd, pos);
            pos += event_len;
        }
        if (group && prio) {
            // a permission-capable group: remember which fd this process reads
            // it from, for the listener-gone check at its exit
            u32 pfd = fd;
            perm_readers.update(&tgid, &pfd);
        }
    }
    clear_record(&r->h, REC_READ);
    fill_proc(&r->h.proc);
    r->h.ts = bpf_ktime_get_ns();
    r->h.pidns = listener == KIND_FANOTIFY ? task_pidns(bpf_get_current_task(), 0) : 0;
    r->h.group = group;
    r->h.fd = fd;
    r->h.ret = ret;
    r->h.prio = prio;
    r->h.listener = listener;
    r->h.total = total;
    u32 off = 0;
    for (int i = 0; i < MAX_CHUNKS; i++) {
        if (off >= total)
            break;
        u64 n = total - off;
        asm volatile("" : "+r"(n));
        if (n > CHUNK)
            n = CHUNK;
        asm volatile("" : "+r"(n));
        r->h.offset = off;
        if (bpf_probe_read_user(r->data, n, (void *)(buf + off)) != 0)
            n = 0;
        if (submit(r, n) != 0)
            break;
        off += CHUNK;
    }
    if (off < total && off < MAX_CHUNKS * CHUNK) {
        // the chunk at `off` is lost, and the ones after it could not be
        // decoded without it: not sent, their events counted
        int zero = 0;
        struct lost_read *l = lost_read_arg.lookup(&zero);
        if (l) {
            l->buf = buf;
            l->total = total;
            l->from = off;
            l->listener = listener;
            lost_read_walk.call(args, 0);  // does not return when it runs
        }
        // before user space installed the walk: the most events the bytes hold
        count_n(CNT_RINGBUF_LOST_EVENTS, (total - off) / (listener == KIND_INOTIFY ? 16 : 24));
        return 0;
    }
    if (off < total)
        count(CNT_READ_TRUNCATED);
    return 0;
}

// ---- tracer side: a fanotify permission response --------------------------

TRACEPOINT_PROBE(syscalls, sys_exit_write) {
    long ret = args->ret;
    if (ret >= 0 && ret < 8)
        return 0;  // too short for a struct fanotify_response
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    // only a process reading a permission-capable fanotify group can answer
    // one (fdinfo seeds those running before the agent): one hash lookup
    // ends the hook for every other write(2)
    if (!perm_readers.lookup(&tgid))
        return 0;
    u64 regs = user_regs();
    if (!regs)
        return 0;
    struct pending_io io = {};
    io.fd = read_ptr(regs + OFF_PT_REGS_DI);
    u64 file = fd_file(io.fd);
    if (listener_kind(file) != KIND_FANOTIFY)
        return 0;  // the common case
    if (read_ptr(regs + OFF_PT_REGS_DX) < 8)
        return 0;
    io.buf = read_ptr(regs + OFF_PT_REGS_SI);
    io.group = read_ptr(file + OFF_FILE_PRIVATE_DATA);
    if (!tracer_wanted(tgid, KIND_FANOTIFY, io.group))
        return 0;
    if (io.group)
        bpf_probe_read_kernel(&io.prio, sizeof(io.prio), (void *)(io.group + OFF_GROUP_PRIORITY));
    struct rec_buf *r = stage_record(REC_RESPONSE);
    if (!r)
        return 0;
    r->h.group = io.group;
    r->h.fd = io.fd;
    r->h.ret = args->ret;
    r->h.prio = io.prio;
    r->h.listener = KIND_FANOTIFY;
    // struct fanotify_response { s32 fd; u32 response; } (+ optional info)
    if (bpf_probe_read_user(r->data, 8, (void *)io.buf) != 0)
        return 0;
    r->h.total = 8;
    if (submit(r, 8) != 0)
        count(CNT_RINGBUF_LOST_EVENTS);  // a verdict event (fa_resp)
    return 0;
}

// ---- inotify_add_watch: user space rescans that process's fdinfo ----------

TRACEPOINT_PROBE(syscalls, sys_enter_inotify_add_watch) {
    u64 id = bpf_get_current_pid_tgid();
    if (is_agent(id >> 32))
        return 0;
    struct pending_io p = {};
    p.fd = args->fd;
    p.listener = KIND_INOTIFY;
    pending_writes.update(&id, &p);
    return 0;
}

TRACEPOINT_PROBE(syscalls, sys_exit_inotify_add_watch) {
    u64 id = bpf_get_current_pid_tgid();
    struct pending_io *p = pending_writes.lookup(&id);
    if (!p)
        return 0;
    s32 fd = p->fd;
    pending_writes.delete(&id);
    if (args->ret < 0)
        return 0;
    struct rec_buf *r = stage_record(REC_ADD_WATCH);
    if (!r)
        return 0;
    r->h.fd = fd;
    r->h.ret = args->ret;
    r->h.listener = KIND_INOTIFY;
    submit(r, 0);
    return 0;
}

// ---- verdicts nobody gave: interrupted permission events --------------------

// signal_deliver fires when a task takes a signal on its way back to user
// space; a task of a dying group takes SIGKILL there (get_signal()). A task
// killed while waiting for a permission verdict (the wait in
// fanotify_get_response is TASK_KILLABLE) comes here from the syscall that
// waited, whose return value (an error: -ERESTARTSYS) is still in the saved
// user registers' ax. Rare by nature: no cost on ordinary syscalls.
TRACEPOINT_PROBE(signal, signal_deliver) {
    if (args->sig != 9)  // SIGKILL
        return 0;
    u64 regs = user_regs();
    if (!regs)
        return 0;
    long ret = read_ptr(regs + OFF_PT_REGS_AX);
    if (ret >= 0)
        return 0;  // not leaving a failed (interrupted) syscall
    struct rec_buf *r = stage_record(REC_KILLED);
    if (!r)
        return 0;
    r->h.ret = ret;
    submit(r, 0);
    return 0;
}

// The file of `fd` in the current task is a permission-capable fanotify file
// about to lose its last reference (this task's fd table is its only user and
// the table holds its only reference): the kernel will answer every pending
// permission event of the group itself (fanotify_release() allows them).
static __always_inline void check_group_gone(u32 tgid, u32 fd, int at_exit) {
    u64 file = fd_file(fd);
    if (listener_kind(file) != KIND_FANOTIFY)
        return;
    u64 ref = 0;
    bpf_probe_read_kernel(&ref, sizeof(ref), (void *)(file + OFF_FILE_REF));
    if (ref != FILE_ONE_REF)
        return;
    if (at_exit) {
        u64 files = read_ptr(bpf_get_current_task() + OFF_TASK_FILES);
        u32 users = 0;
        bpf_probe_read_kernel(&users, sizeof(users), (void *)(files + OFF_FILES_COUNT));
        if (users != 1)
            return;  // another thread still uses the fd table
    }
    struct rec_buf *r = stage_record(REC_GROUP_GONE);
    if (!r)
        return;
    r->h.group = read_ptr(file + OFF_FILE_PRIVATE_DATA);
    r->h.fd = fd;
    r->h.ret = at_exit;
    r->h.listener = KIND_FANOTIFY;
    submit(r, 0);
}

TRACEPOINT_PROBE(syscalls, sys_enter_close) {
    u32 tgid = bpf_get_current_pid_tgid() >> 32;
    u32 *fd = perm_readers.lookup(&tgid);
    if (!fd || *fd != (u32)args->fd)
        return 0;  // the common case: one hash lookup
    check_group_gone(tgid, args->fd, 0);
    return 0;
}

// ---- process table feed ---------------------------------------------------

// raw tracepoint: args[0] = parent task, args[1] = child task. The classic
// tracepoint lacks the child's tgid, needed to tell threads from processes.
RAW_TRACEPOINT_PROBE(sched_process_fork) {
    u64 child = ctx->args[1];
    u32 pid = 0, tgid = 0;  // global numbers (perm_readers' keys)
    bpf_probe_read_kernel(&pid, 4, (void *)(child + OFF_TASK_PID));
    bpf_probe_read_kernel(&tgid, 4, (void *)(child + OFF_TASK_TGID));
    u32 tgid_here = task_tgid_here(child), tid_here = task_tid_here(child);
    if (!tgid_here)
        return 0;  // outside the agent's pid namespace: no /proc entry to keep
    if (pid != tgid) {
        // a new thread: user space maps its tid to the process (the agent's
        // mirror group reports tids, FAN_REPORT_TID)
        struct rec_buf *t = stage();
        if (!t)
            return 0;
        clear_record(&t->h, REC_THREAD);
        t->h.proc.pid = tgid_here;
        t->h.proc.tid = tid_here;
        t->h.pidns = task_pidns(child, &t->h.nspid);
        submit(t, 0);
        return 0;
    }
    u32 parent_tgid = bpf_get_current_pid_tgid() >> 32;
    u32 *pfd = perm_readers.lookup(&parent_tgid);
    if (pfd) {
        // the child inherits the permission listener's fd: it may answer
        u32 fd = *pfd;
        perm_readers.update(&tgid, &fd);
    }
    struct rec_buf *r = stage_record(REC_FORK);  // the parent's identity; the child inherits it
    if (!r)
        return 0;
    r->h.proc.ppid = r->h.proc.pid;
    r->h.proc.pid = tgid_here;
    r->h.proc.tid = tid_here;
    __builtin_memcpy(r->h.proc.pcomm, r->h.proc.comm, TASK_COMM);
    bpf_probe_read_kernel(&r->h.proc.comm, TASK_COMM, (void *)(child + OFF_TASK_COMM));
    // its number in its own pid namespace: what a fanotify listener in there
    // reads in the events it causes
    r->h.pidns = task_pidns(child, &r->h.nspid);
    submit(r, 0);
    return 0;
}

// How many of the newest WATCH_QUEUE_LOOK events waiting in the agent's watch
// group the current process caused. At exec they are the old program's doing,
// though the agent reads them after it: user space gives that many of the
// process's next watch events its identity from before the exec. The queue
// (group->notification_list, oldest first) is read without its lock: a
// reader removing events meanwhile can only make the count short.
static __always_inline u32 queued_in_watch_group(void) {
    int zero = 0;
    u64 *group = watch_group.lookup(&zero);
    if (!group || !*group)
        return 0;
    u64 head = *group + OFF_GROUP_NOTIFICATION_LIST;
    // fanotify_event.pid is task_tgid() at the event; after exec the task is
    // its group's leader, whose thread_pid is that same struct pid
    u64 me = read_ptr(bpf_get_current_task() + OFF_TASK_THREAD_PID);
    u64 pos = read_ptr(head + LIST_HEAD_PREV);  // the newest event
    u32 n = 0;
    for (int i = 0; i < WATCH_QUEUE_LOOK; i++) {
        if (!pos || pos == head)
            break;
        u64 event = pos - OFF_FSN_EVENT_LIST - OFF_FANOTIFY_EVENT_FSE;
        if (read_ptr(event + OFF_FANOTIFY_EVENT_PID) == me)
            n++;
        pos = read_ptr(pos + LIST_HEAD_PREV);
    }
    return n;
}

TRACEPOINT_PROBE(sched, sched_process_exec) {
    struct rec_buf *r = stage_record(REC_EXEC);  // comm is already the new program's
    if (!r)
        return 0;
    r->h.queued = queued_in_watch_group();
    unsigned short loc = args->data_loc_filename & 0xFFFF;
    long got = bpf_probe_read_kernel_str(r->data, NAME_MAX_Z, (void *)args + loc);
    submit(r, got > 0 ? got : 0);
    return 0;
}

// set*id(2) succeeded: the process acts as someone else from now on (its
// events before keep the identity they were made with). fill_proc reads the
// new credentials. setfsuid/setfsgid return the old id, not a status: left out.
static __always_inline int creds_changed(long ret) {
    if (ret != 0)
        return 0;
    struct rec_buf *r = stage_record(REC_CREDS);
    if (!r)
        return 0;
    r->h.queued = queued_in_watch_group();  // made with the ids before: see REC_EXEC
    submit(r, 0);
    return 0;
}
TRACEPOINT_PROBE(syscalls, sys_exit_setuid) { return creds_changed(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_setreuid) { return creds_changed(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_setresuid) { return creds_changed(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_setgid) { return creds_changed(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_setregid) { return creds_changed(args->ret); }
TRACEPOINT_PROBE(syscalls, sys_exit_setresgid) { return creds_changed(args->ret); }

TRACEPOINT_PROBE(sched, sched_process_exit) {
    u64 id = bpf_get_current_pid_tgid();
    u32 tgid = id >> 32;
    // before exit_files(): a permission listener dying without answering
    u32 *pfd = perm_readers.lookup(&tgid);
    if (pfd) {
        check_group_gone(tgid, *pfd, 1);
        if ((u32)id == tgid)
            perm_readers.delete(&tgid);
    }
    if ((u32)id != tgid)
        return 0;  // a thread, not the leader
    struct rec_buf *r = stage_record(REC_EXIT);
    if (!r)
        return 0;
    submit(r, 0);
    return 0;
}

