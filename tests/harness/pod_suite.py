"""A sidecar scoped to its pod, with pods laid out for real the way a
container runtime does (tests/harness/pods.py: kubelet-named cgroup v2
directories, processes moved into them): the agent runs in pod A's sidecar
container with `--this-pod`; writes by pod A's two app containers are
reported with their container and pod, grouped into one OTLP resource per
container at the collector; writes by pod B and by the host are not (and
are counted). Imported by tests/host/test_pod_scope.py and
tests/vm/guest/test_pod_scope.py, which provide `start_sidecar(workdir,
*flags, wrap=..., output=...)` and `scope_in_kernel` (whether the backend
tests the scope in the kernel).
"""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from tests.harness.agent import process_tree
from tests.harness.collector import Rotel
from tests.harness.poll import until
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
    pod_logs = tmp_path / "pod-logs"  # the kubelet's /var/log/pods: <namespace>_<name>_<uid>
    (pod_logs / f"shop_cart-7f9c5d_{pod_a.uid}").mkdir(parents=True)
    (pod_logs / f"other_db-0_{pod_b.uid}").mkdir()
    agent = start_sidecar(work, "--this-pod", "--pod-log-dir", str(pod_logs), "--watch", str(volume),
                          "--fim-only", "--state-dir",
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
        assert r.resource["k8s.namespace.name"] == "shop" and r.resource["k8s.pod.name"] == "cart-7f9c5d"
        assert r.attributes["process.linux.cgroup"] == c.cgroup
        assert r.attributes["process.pid"] == procs[name].pid
    # one resource per container: the two records came in different ResourceLogs
    assert by_file["app1"].resource != by_file["app2"].resource


@pytest.fixture
def pods_with_namespaces(tmp_path):
    assert cgroup_v2_available(), "this machine has no writable cgroup v2 hierarchy"
    a, b = Pod(tmp_path), Pod(tmp_path)
    yield a, b
    a.remove()
    b.remove()


def _watcher(container, *dirs, log=None) -> subprocess.Popen:
    """inotifywait inside a container, watching dirs, its event lines to
    the file log (discarded without one); returns once it watches."""
    out = open(log, "wb") if log is not None else subprocess.DEVNULL
    try:
        w = subprocess.Popen(container.enter + ["inotifywait", "-m", "-q", *map(str, dirs)],
                             stdout=out, stderr=subprocess.PIPE, text=True)
    finally:
        if log is not None:
            out.close()  # the child has its own copy
    deadline = time.monotonic() + 10
    while not any(_watches(pid) == len(dirs) for pid in process_tree(w.pid)):
        assert w.poll() is None and time.monotonic() < deadline, w.stderr.read() if w.poll() is not None else ""
        time.sleep(0.05)
    return w


def _has_read(log, name: str, n: int = 1) -> None:
    """Until the watcher logging to log has read n IN_CLOSE_WRITE of name:
    the tracepoint backend counts what a scope filter leaves out only as
    the watcher reads it (the exact backends, as the kernel queues it)."""
    def read() -> int:
        return sum(1 for line in log.read_text(errors="replace").splitlines()
                   if "CLOSE_WRITE" in line and line.endswith(" " + name))
    assert until(lambda: read() >= n, timeout=30), f"{log}: {log.read_text(errors='replace')}"


def _watches(pid: int) -> int:
    n = 0
    try:
        for fd in os.listdir(f"/proc/{pid}/fdinfo"):
            with open(f"/proc/{pid}/fdinfo/{fd}") as fh:
                n += fh.read().count("inotify wd:")
    except OSError:
        pass
    return n


def test_a_watcher_inside_a_pod_gets_its_actors_and_both_paths_and_nothing_leaks_from_another_pod(
        tmp_path, pods_with_namespaces, start_sidecar, scope_in_kernel):
    """Pods with their own pid and mount namespaces: a watcher in pod A on its
    private tmpfs (`vol`, on no host path) and on its emptyDir (`data`, the
    host's `emptydir`); pod B the same on its own. The hostPID sidecar of
    pod A reports A's writes with the watcher's path, the host's path where
    there is one, and the writing container; B's and the host's are left out."""
    pod_a, pod_b = pods_with_namespaces
    watcher_a, app_a = pod_a.container(), pod_a.container()
    watcher_b, app_b = pod_b.container(), pod_b.container()
    sidecar = pod_a.container()
    agent = start_sidecar(tmp_path / "sidecar", "--this-pod", wrap=sidecar.join)
    agent.wait_started()
    logs = [tmp_path / "watcher-a.log", tmp_path / "watcher-b.log"]
    watchers = [_watcher(watcher_a, pod_a.vol, pod_a.data, log=logs[0]),
                _watcher(watcher_b, pod_b.vol, pod_b.data, log=logs[1])]
    try:
        if not scope_in_kernel:  # the tracepoint backend mirrors the watches: act once it has
            agent.wait_marked(f"/proc/{pod_a.ns_pid}/root{pod_a.vol}", pod_a.emptydir, timeout=30)
        for pod, app in ((pod_a, app_a), (pod_b, app_b)):
            subprocess.run(app.enter + ["sh", "-c", f"echo v > {pod.vol}/from-app; echo d > {pod.data}/from-app"],
                           check=True)
        (pod_a.emptydir / "from-host").write_text("h")  # the host, into pod A's emptyDir
        want = {f"{pod_a.vol}/from-app": "", f"{pod_a.data}/from-app": f"{pod_a.emptydir}/from-app"}
        events = agent.wait_for(lambda e: e["path"] in want and "IN_CLOSE_WRITE" in e["i_mask_names"], n=2)
        assert len(events) == 2, [(e["path"], e["i_mask_names"], e["tracer_pid"], e["attribution"]) for e in agent.events()]
        _has_read(logs[0], "from-host")
        _has_read(logs[1], "from-app", 2)
    finally:
        for w in watchers:
            w.terminate()
            w.wait()
    stats = agent.stop()
    for e in events:
        assert e["host_path"] == want[e["path"]], e
        assert e["tracee_container_id"] == app_a.id and e["tracee_pod_uid"] == pod_a.uid, e
        assert e["tracee_comm"] == "sh" and e["attribution"] in ("exact", "inferred"), e
        assert e["tracer_comm"] == "inotifywait", e
    everything = agent.events()
    assert everything and {e["tracee_pod_uid"] for e in everything} == {pod_a.uid}
    assert not any("from-host" in e["path"] for e in everything)
    assert stats["filtered_scope"] >= 9, stats  # B's writes (2 files x 4+) and the host's
    # the exact backends test the actor's cgroup in the kernel: those never reach user space
    assert (stats.get("filtered_scope_in_kernel", 0) >= 9) == scope_in_kernel, stats


def _ns_pid(host_pid: int) -> int:
    """A process's number in its own pid namespace (NSpid's last)."""
    with open(f"/proc/{host_pid}/status") as fh:
        return int(next(line for line in fh if line.startswith("NSpid:")).split()[-1])


def test_a_sidecar_without_host_pid_numbers_every_process_as_its_pod_does(
        tmp_path, pods_with_namespaces, start_sidecar, scope_in_kernel):
    """shareProcessNamespace without hostPID: the agent runs in pod A's pid
    and mount namespaces (its /proc shows the pod only). It starts, and the
    watcher's and the writer's pids are the pod's numbers, which its /proc
    resolves to the right programs and containers; pod B stays out."""
    pod_a, pod_b = pods_with_namespaces
    watcher_a, app_a, sidecar = pod_a.container(), pod_a.container(), pod_a.container()
    watcher_b, app_b = pod_b.container(), pod_b.container()
    agent = start_sidecar(tmp_path / "sidecar", "--this-pod", wrap=sidecar.enter)
    agent.wait_started()
    log_b = tmp_path / "watcher-b.log"
    watchers = [_watcher(watcher_a, pod_a.data), _watcher(watcher_b, pod_b.data, log=log_b)]
    try:
        if not scope_in_kernel:
            agent.wait_marked(pod_a.emptydir, timeout=30)
        for pod, app in ((pod_a, app_a), (pod_b, app_b)):
            # the writer leaves its own pid (as its pod numbers it) in the file
            subprocess.run(app.enter + ["sh", "-c", f"echo $$ > {pod.data}/from-app"], check=True)
        events = agent.wait_for(lambda e: e["path"] == f"{pod_a.data}/from-app"
                                and "IN_CLOSE_WRITE" in e["i_mask_names"])
        _has_read(log_b, "from-app")
        watcher_pid = next(_ns_pid(p) for p in process_tree(watchers[0].pid) if _watches(p))
    finally:
        for w in watchers:
            w.terminate()
            w.wait()
    stats = agent.stop()
    writer = int((pod_a.emptydir / "from-app").read_text())
    e = events[0]
    assert (e["tracee_pid"], e["tracee_comm"], e["tracee_container_id"]) == (writer, "sh", app_a.id), e
    assert (e["tracer_pid"], e["tracer_comm"]) == (watcher_pid, "inotifywait"), e
    assert {x["tracee_pod_uid"] for x in agent.events()} == {pod_a.uid}
    assert stats["filtered_scope"] >= 4, stats  # pod B's write, seen by B's watcher
