"""The capabilities the manifests grant, measured: the agent runs under exactly
the DaemonSet's capability set (a bounding set, as the container runtime
applies it) and still does everything with another user's processes and
files; without SYS_PTRACE it cannot read another user's listener's watches,
without DAC_READ_SEARCH it cannot hash another user's private file."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
import yaml

from tests.harness.actors import open_to_anyone
from tests.harness.agent import Agent
from tests.harness.listeners import stop
from tests.harness.poll import until

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "deploy" / "kubernetes" / "daemonset.yaml"
USER = ["setpriv", "--reuid", "1234", "--regid", "1234", "--clear-groups"]


def manifest_capabilities() -> list[str]:
    spec = yaml.safe_load(MANIFEST.read_text())["spec"]["template"]["spec"]["containers"][0]
    caps = spec["securityContext"]["capabilities"]
    assert caps["drop"] == ["ALL"]
    return caps["add"]


def run_as_the_manifest(tmp_path: Path, caps: list[str]) -> dict:
    """The agent with only caps, watch mode on a tree where uid 1234 keeps a
    private file, and uid 1234's inotifywait on it: what the agent saw."""
    tree = tmp_path / "tree"
    tree.mkdir()
    open_to_anyone(tree)
    bounding = "-all," + ",".join("+" + c.lower() for c in caps)
    work = tmp_path / "agent"
    agent = Agent(work, "--watch", str(tree), "--state-dir", str(work / "state"),
                  wrap=["setpriv", "--bounding-set", bounding, "--inh-caps", "-all"])
    agent.wait_ready()
    iw = subprocess.Popen(USER + ["inotifywait", "-m", "-e", "create", str(tree)],
                          stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for line in iw.stderr:
            if b"Watches established" in line:
                break
        # the agent mirrors inotifywait's watch (not at all with a capability dropped)
        until(lambda: tree.stat().st_ino in agent.marked_inodes(), timeout=5)
        subprocess.run(USER + ["sh", "-c", f"umask 077; echo secret > {tree / 'private'}"], check=True)
        fim = agent.wait_for(lambda e: e["type"] == "fim" and e["name"] == "private")
        ino = agent.wait_for(lambda e: e["type"] == "inotify" and e["tracer_pid"] == iw.pid)
    finally:
        stop(iw)
        agent.stop()
    assert fim and ino, (fim, ino, agent.stderr())
    return {"hash": fim[0]["file_hashes"].get("sha256", ""), "skipped": fim[0]["hash_skipped"],
            "actor_uid": fim[0]["tracee_uid"], "inotify_path": ino[0]["path"],
            "expected_path": str(tree / "private")}


def test_the_manifests_capabilities_are_enough_with_other_users_processes_and_files(tmp_path):
    got = run_as_the_manifest(tmp_path, manifest_capabilities())
    assert got["hash"] and got["skipped"] == "" and got["actor_uid"] == 1234, got
    assert got["inotify_path"] == got["expected_path"], got


@pytest.mark.parametrize("dropped, effect", [
    ("SYS_PTRACE", "inotify_path"),
    ("DAC_READ_SEARCH", "hash"),
])
def test_each_capability_beyond_bpf_is_needed(tmp_path, dropped, effect):
    caps = [c for c in manifest_capabilities() if c != dropped]
    got = run_as_the_manifest(tmp_path, caps)
    if effect == "hash":
        assert got["hash"] == "" and got["skipped"] == "unreadable", got
    else:
        assert got["inotify_path"] == "", got
