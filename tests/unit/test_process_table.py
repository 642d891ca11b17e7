"""The process table names an actor as it was when it acted."""

from otel_fsnotify.enrich.procs import ProcTable


def test_events_left_queued_at_an_exec_keep_the_identity_from_before_it():
    """The tracepoint program counts, at each exec, the process's events still
    waiting in the agent's watch group; that many of its next watch events
    are the old program's."""
    t = ProcTable()
    t.fork(500, 1, "sh", 0, 0, 1)
    t.exec(500, 1, "sleep", 0, 0, 1, "/bin/sleep", at_ns=10, queued=2)
    assert [t.queued(500).comm for _ in range(3)] == ["sh", "sh", "sleep"]


def test_an_event_before_an_exec_is_the_old_programs_and_an_exit_is_remembered():
    t = ProcTable()
    t.fork(600, 1, "bash", 1000, 1000, 1)
    t.exec(600, 1, "vim", 1000, 1000, 1, "/usr/bin/vim", at_ns=100)
    assert t.get(600, at_ns=99).comm == "bash" and t.get(600, at_ns=101).comm == "vim"
    t.exit(600)
    assert t.get(600).comm == "vim"  # exited, kept for the events read after
