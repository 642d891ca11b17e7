"""The process table names an actor as it was when it acted."""

import pytest

from otel_fsnotify.enrich.procs import ProcTable, container_of_cgroup


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


@pytest.mark.parametrize("path, expected", [
    ("/kubepods.slice/kubepods-besteffort.slice/kubepods-besteffort-pod1b2c3d4e_0000_4000_8000_"
     "123456789abc.slice/cri-containerd-" + "a" * 64 + ".scope",
     ("a" * 64, "containerd", "1b2c3d4e-0000-4000-8000-123456789abc")),
    ("/kubepods/burstable/pod1b2c3d4e-0000-4000-8000-123456789abc/" + "b" * 64,
     ("b" * 64, "", "1b2c3d4e-0000-4000-8000-123456789abc")),
    ("/kubepods.slice/kubepods-pod0a0a0a0a_1111_2222_3333_444444444444.slice/crio-" + "c" * 64 + ".scope",
     ("c" * 64, "cri-o", "0a0a0a0a-1111-2222-3333-444444444444")),
    ("/system.slice/docker-" + "d" * 64 + ".scope", ("d" * 64, "docker", "")),
    ("/machine.slice/libpod-" + "e" * 64 + ".scope/container", ("e" * 64, "podman", "")),
    ("/user.slice/user-0.slice/session-3.scope", ("", "", "")),
    ("/", ("", "", "")),
])
def test_the_container_and_its_pod_are_read_from_the_cgroup_path(path, expected):
    assert tuple(container_of_cgroup(path))[:3] == expected
