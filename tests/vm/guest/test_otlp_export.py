"""OTLP export, every backend: what a real tracer read reaches a real
collector (rotel) with its actor and how it was attributed. The tracers and
the tracee start before the agent (the scene).
(tests/host/test_otlp_export.py: the tracepoint backend on this host.)
"""

from __future__ import annotations

import os
import time

from tests.harness.collector import Rotel
from tests.vm.guest.conftest import attribution_of


def test_events_exported_over_otlp(backend, scene, start_agent, tmp_path_factory):
    base = tmp_path_factory.mktemp(f"otlp-{backend}")
    rotel = Rotel(base / "rotel")
    rotel.start()
    # the default spool dir (/var/lib/...) is read-only in the VM
    agent = start_agent(backend, base / "a-otlp", "--endpoint", rotel.grpc_endpoint,
                        "--protocol", "grpc", "--spool-dir", str(base / "spool"), output="otlp")
    try:
        agent.wait_started(600)
        scene.act()
        recs = []
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            recs = [r for r in rotel.records() if r.event_name == "fsnotify.inotify"
                    and r.attributes.get("file.name") == "fromS"]
            if len(recs) >= 4 or agent.proc.poll() is not None:
                break
            time.sleep(1)
        assert recs, (f"rotel got {[r.event_name for r in rotel.records()][:20]}; agent "
                      f"{'exited ' + str(agent.proc.returncode) if agent.proc.poll() is not None else 'running'}"
                      f", its stderr:\n{agent.stderr()}")
        wdir, tracee, ino = scene.wdir, scene.tracee, scene.ino
        for r in recs:
            a = r.attributes
            assert a["process.pid"] == tracee.pid
            assert a["process.parent_pid"] == os.getpid()
            assert a["process.executable.name"] == "touch"
            assert a.get("process.executable.path", "/usr/bin/touch") == "/usr/bin/touch"  # absent when touch exited first
            assert a["fsnotify.watcher.pid"] == ino.pid
            assert a["fsnotify.watcher.executable.name"] == "inotifywait"
            assert a["fsnotify.attribution"] == attribution_of(backend)
            assert a["fsnotify.type"] == "inotify"
            assert a["file.path"] == f"{wdir}/fromS" and a["file.directory"] == str(wdir)
            assert r.timestamp > 0
        by_action = {r.attributes["fsnotify.action"]: r for r in recs}
        assert "create" in by_action, sorted(by_action)
        assert by_action["create"].attributes["fsnotify.mask.names"] == ["IN_CREATE"]
        assert by_action["create"].attributes["file.inode"] == str(os.stat(wdir / "fromS").st_ino)
    finally:
        agent.stop()
        rotel.stop()
