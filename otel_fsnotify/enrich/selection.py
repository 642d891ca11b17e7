"""The filters a person names on the command line or in [filters]: files
under a path, actors by command name or uid, watchers by command name.
They test the finished event (the actor is only known after matching on
the tracepoint backend), so they run in user space, after the backend;
what they leave out is counted (`filtered_selection`), never lost unseen.
"""

from __future__ import annotations

import os

# the kernel keeps a task's command name in TASK_COMM_LEN (16) bytes with its NUL
COMM_MAX = 15
Q_OVERFLOW = 0x4000  # IN_Q_OVERFLOW, FAN_Q_OVERFLOW (and the kernel's FS_Q_OVERFLOW)


def _under(path: str, prefixes: tuple[str, ...]) -> bool:
    return any(path == p or path.startswith(p + "/") or p == "/" for p in prefixes)


class Selection:
    """holds(event): whether an event passes every filter given (all of
    them must; within one, any of its values may)."""

    def __init__(self, paths=(), comms=(), exclude_comms=(), tracer_comms=(), uids=()):
        self.paths = tuple(os.path.normpath(p).replace("//", "/") for p in paths)
        self.comms = frozenset(comms)
        self.exclude_comms = frozenset(exclude_comms)
        self.tracer_comms = frozenset(tracer_comms)
        self.uids = frozenset(uids)
        self.left_out = 0

    def __bool__(self) -> bool:
        return bool(self.paths or self.comms or self.exclude_comms or self.tracer_comms or self.uids)

    def holds(self, ev) -> bool:
        if (ev.i_mask | ev.fa_mask) & Q_OVERFLOW:
            return True  # a queue overflow says events were lost: it passes every filter
        known = ev.tracee_pid != 0  # an unknown actor is no one's: not kept for a name or uid
        if ((self.comms and not (known and ev.tracee_comm in self.comms))
                or (known and ev.tracee_comm in self.exclude_comms)
                # watch mode's changes are the agent's own reads: no other watcher's
                or (self.tracer_comms and ev.type != "fim" and ev.tracer_comm not in self.tracer_comms)
                or (self.uids and not (known and ev.tracee_uid in self.uids))
                or (self.paths and not _under(ev.host_path or ev.path, self.paths))):
            self.left_out += 1
            return False
        return True
