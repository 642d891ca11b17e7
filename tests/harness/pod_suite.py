"""A sidecar scoped to its pod, with pods laid out for real the way a
container runtime does (tests/harness/pods.py: kubelet-named cgroup v2
directories, processes moved into them): the agent runs in pod A's sidecar
container with `--this-pod`; writes by pod A's two app containers are
reported with their container and pod, grouped into one OTLP resource per
container at the collector; writes by pod B and by the host are not (and
are counted). Imported by tests/host/test_pod_scope.py and
tests/vm/guest/test_pod_scope.py, which provide `start_sidecar(workdir,
*flags, wrap=..., output=...)`.
"""

from __future__ import annotations

import subprocess
import time

import pytest

from tests.harness.collector import Rotel
from tests.harness.pods import Pod, cgroup_v2_available


@pytest.fixture
def pods():
    assert cgroup_v2_available(), "this machine has no writable cgroup v2 hierarchy"
    a, b = Pod(), Pod()
    yield a, b
    a.remove()
    b.remove()


@pytest.fixture
def collector(tmp_path):
    rotel = Rotel(tmp_path / "rotel").start()
    yield rotel
    rotel.stop()


def test_a_sidecar_with_this_pod_reports_its_pod_and_nothing_else(tmp_path, pods, start_sidecar, collector):
    rotel = collector
    pod_a, pod_b = pods
    app1, app2, sidecar = pod_a.container(), pod_a.container(), pod_a.container()
    other = pod_b.container()
    volume = tmp_path / "volume"
    volume.mkdir()
    work = tmp_path / "sidecar"
    agent = start_sidecar(work, "--this-pod", "--watch", str(volume), "--fim-only", "--state-dir",
                          str(work / "state"), "--endpoint", rotel.http_endpoint, "--protocol",
                          "http/protobuf", "--spool-dir", str(work / "spool"), output="otlp",
                          wrap=sidecar.enter)
    agent.wait_started()
    agent.wait_ready(300)
    writes = {"app1": app1, "app2": app2, "other-pod": other}
    procs = {}
    for name, container in writes.items():
        procs[name] = subprocess.Popen(container.enter + ["sh", "-c", f"echo {name} > {volume / name}"])
    subprocess.run(["sh", "-c", f"echo host > {volume / 'host'}"], check=True)
    for p in procs.values():
        p.wait()
    time.sleep(1.5)
    stats = agent.stop()
    assert stats["delivered"] == 2 and stats["filtered_scope"] == 2, stats

    recs = [r for r in rotel.wait_for_records(2, timeout=30) if r.event_name == "fsnotify.fim"]
    by_file = {r.attributes["file.name"]: r for r in recs}
    assert set(by_file) == {"app1", "app2"}
    for name in ("app1", "app2"):
        r, c = by_file[name], writes[name]
        assert r.resource["container.id"] == c.id and r.resource["k8s.pod.uid"] == pod_a.uid
        assert r.resource["container.runtime"] == "containerd"
        assert r.attributes["process.linux.cgroup"] == c.cgroup
        assert r.attributes["process.pid"] == procs[name].pid
    # one resource per container: the two records came in different ResourceLogs
    assert by_file["app1"].resource != by_file["app2"].resource
