"""Host side of the VM suite: boot each of Debian's kernels once (5.10, 6.1,
6.12: tests/harness/kernels.py), run tests/vm/guest inside it, and report each
guest test here under its kernel and its own name (`6.12/test_x[fentry]`).

The exact backends (kprobe, fentry) cannot run on the dev kernel; this is where
they are tested for real, on every kernel users run. OTEL_FSNOTIFY_VM_KERNELS
picks the kernels (default all three); a kernel the install step did not fetch
fails with the line saying how to fetch it, it is never skipped.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.harness import kernels, vm

pytestmark = pytest.mark.vm

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GUEST = os.path.join(HERE, "guest")
RESULTS = os.path.join(vm.CACHE, "results")
TIMEOUT = float(os.environ.get("OTEL_FSNOTIFY_VM_TIMEOUT", 25 * 60))
KERNELS = os.environ.get("OTEL_FSNOTIFY_VM_KERNELS", ",".join(kernels.ALL)).split(",")
# Every backend by default (guest conftest.py); OTEL_FSNOTIFY_VM_BACKENDS narrows a tryout
BACKENDS = os.environ.get("OTEL_FSNOTIFY_VM_BACKENDS", "")
# Which backend compiles against another kernel's headers on which kernel
# (guest test_another_kernels_headers.py): each backend once, each kernel once
HEADER_RUNS = {"5.10": "kprobe", "6.1": "fentry", "6.12": "tracepoint"}
# What each kernel runs, as a guest -k expression (README, Kernels): everything
# but the other backends' runs on another kernel's headers
SUBSETS: dict[str, str] = {series: f"not another_kernels_headers or {backend}"
                           for series, backend in HEADER_RUNS.items()}


def _guest_test_ids(select: str = "") -> list[str]:
    """Guest test ids (e.g. test_attribution.py::test_x[kprobe]), collected on the host."""
    env = {**os.environ, "PYTHONDONTWRITEBYTECODE": "1"}
    if BACKENDS:
        env["VM_BACKENDS"] = BACKENDS
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-c", os.path.join(GUEST, "pytest.ini"),
         "--rootdir", GUEST, *(["-k", select] if select else []), GUEST], cwd=REPO,
        capture_output=True, text=True, env=env)
    ids = [line.split("tests/vm/guest/")[-1] for line in out.stdout.splitlines() if "::" in line]
    if not ids:
        raise RuntimeError("cannot collect the guest tests:\n" + out.stdout + out.stderr)
    return ids


def _boot(series: str) -> dict:
    """Boot one kernel once; {test id: (outcome, message)} from the guest's junit xml."""
    try:
        kernel = kernels.get(series)
    except kernels.KernelError as exc:  # the install step did not fetch it: say how
        return {"__boot__": ("failed", str(exc))}
    results_dir = os.path.join(RESULTS, series)
    os.makedirs(results_dir, exist_ok=True)
    junit = os.path.join(results_dir, "junit.xml")
    if os.path.exists(junit):
        os.unlink(junit)
    with open(os.path.join(results_dir, "pytest-args"), "w") as fh:
        fh.write(os.environ.get("OTEL_FSNOTIFY_VM_PYTEST_ARGS", ""))
    with open(os.path.join(results_dir, "pytest-k"), "w") as fh:
        fh.write(SUBSETS.get(series, ""))
    with open(os.path.join(results_dir, "backends"), "w") as fh:
        fh.write(BACKENDS)
    print(f"\nVM: kernel {kernel.release}")
    status = vm.run(os.path.join(HERE, "guest_run.sh"), results_dir, TIMEOUT, log=print, kernel=kernel)
    console = os.path.join(results_dir, "console.log")
    if not os.path.exists(junit):
        return {"__boot__": ("failed", f"guest pytest on {kernel.release} wrote no results (exit "
                                       f"{status}); see {console}")}
    results = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        tid = f"{module}.py::{case.get('name')}"
        outcome, message = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, message = "failed", (child.get("message") or "") + "\n" + (child.text or "")
            elif child.tag == "skipped":
                outcome, message = "skipped", child.get("message") or ""
        results[tid] = (outcome, message)
    with open(console) as fh:
        results["__console__"] = ("info", fh.read())
    return results


_BOOTED: dict[str, dict] = {}
# (kernel, guest test), grouped by kernel: each kernel boots once, at its first test
CASES = [(series, tid) for series in KERNELS
         for tid in _guest_test_ids(SUBSETS.get(series, ""))]


@pytest.mark.parametrize("series,guest_test", CASES, ids=[f"{s}/{t}" for s, t in CASES])
def test_in_vm(series, guest_test):
    if series not in _BOOTED:
        _BOOTED[series] = _boot(series)
    results = _BOOTED[series]
    if "__boot__" in results:
        pytest.fail(results["__boot__"][1], pytrace=False)
    outcome, message = results.get(guest_test, ("missing", ""))
    if outcome == "missing":
        pytest.fail(f"{guest_test} did not run in the VM on {series}; console:\n"
                    + results["__console__"][1][-3000:])
    if outcome == "failed":
        pytest.fail(message[-6000:], pytrace=False)
    if outcome == "skipped":
        pytest.fail(f"skipped in the VM on {series} (not accepted as a pass): {message}")
