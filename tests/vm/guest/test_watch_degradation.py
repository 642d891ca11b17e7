"""Watch mode on a filesystem without a filesystem id, on every kernel: tmpfs
has one from 5.13 on, so a tmpfs tree is watched on 6.1 and 6.12, and on 5.10
the agent refuses it in one line, exit 1, before loading anything
(FAN_MARK_FILESYSTEM with FID reports needs the id to name objects). The
test mounts its own tmpfs: the suite's files may be on the ext4 scratch disk.
"""

from __future__ import annotations

import os
import subprocess

from tests.vm.guest.conftest import vm_agent


def test_a_tmpfs_tree_is_watched_where_tmpfs_has_a_filesystem_id_else_refused_in_one_line(backend, tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(root)], check=True)
    try:
        _watch_or_refusal(backend, tmp_path, root)
    finally:
        subprocess.run(["umount", "-l", str(root)], check=True)


def _watch_or_refusal(backend, tmp_path, root):
    agent = vm_agent(backend, tmp_path / "agent", "--watch", str(root), "--fim-only",
                     "--state-dir", str(tmp_path / "state"))
    if os.statvfs(root).f_fsid:
        agent.wait_started()
        assert agent.wait_ready(300).startswith("otel-fsnotify: fim ready: watching 1 path on 1 filesystem")
        agent.stop()
        return
    assert agent.proc.wait(300) == 1
    assert agent.stderr().strip().splitlines()[-1] == (
        f"otel-fsnotify: error: cannot watch {root}: its filesystem has no filesystem id "
        "(tmpfs before 5.13, some FUSE) (ENODEV)")
