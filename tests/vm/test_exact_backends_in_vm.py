"""Host side of the VM suite: boot Debian's 6.1 kernel once, run tests/vm/guest
inside it, and report each guest test here under its own name.

The exact backends (kprobe, fentry) cannot run on the dev kernel; this is where
they are tested for real. Needs qemu-system-x86, linux-image-amd64 (bookworm
6.1), linux-headers-amd64 and busybox-static on the host.
"""

from __future__ import annotations

import os
import subprocess
import sys
import xml.etree.ElementTree as ET

import pytest

from tests.harness import vm

pytestmark = pytest.mark.vm

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
GUEST = os.path.join(HERE, "guest")
RESULTS = os.path.join(vm.CACHE, "results")
TIMEOUT = float(os.environ.get("OTEL_FSNOTIFY_VM_TIMEOUT", 25 * 60))


def _guest_test_ids() -> list[str]:
    """Guest test ids (e.g. test_attribution.py::test_x[kprobe]), collected on the host."""
    out = subprocess.run(
        [sys.executable, "-m", "pytest", "--collect-only", "-q", "-c", os.path.join(GUEST, "pytest.ini"),
         "--rootdir", GUEST, GUEST], cwd=REPO, capture_output=True, text=True,
        env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
    ids = [line.split("tests/vm/guest/")[-1] for line in out.stdout.splitlines() if "::" in line]
    if not ids:
        raise RuntimeError("cannot collect the guest tests:\n" + out.stdout + out.stderr)
    return ids


@pytest.fixture(scope="module")
def guest_results():
    """Boot once; {test id: (outcome, message)} from the guest's junit xml."""
    os.makedirs(RESULTS, exist_ok=True)
    junit = os.path.join(RESULTS, "junit.xml")
    if os.path.exists(junit):
        os.unlink(junit)
    with open(os.path.join(RESULTS, "pytest-args"), "w") as fh:
        fh.write(os.environ.get("OTEL_FSNOTIFY_VM_PYTEST_ARGS", ""))
    status = vm.run(os.path.join(HERE, "guest_run.sh"), RESULTS, TIMEOUT, log=print)
    console = os.path.join(RESULTS, "console.log")
    if not os.path.exists(junit):
        pytest.fail(f"guest pytest wrote no results (exit {status}); see {console}")
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


GUEST_TESTS = _guest_test_ids()


# ids given: pytest would shorten a long one to "guest_test31"
@pytest.mark.parametrize("guest_test", GUEST_TESTS, ids=GUEST_TESTS)
def test_in_vm(guest_results, guest_test):
    outcome, message = guest_results.get(guest_test, ("missing", ""))
    if outcome == "missing":
        pytest.fail(f"{guest_test} did not run in the VM; console:\n"
                    + guest_results["__console__"][1][-3000:])
    if outcome == "failed":
        pytest.fail(message[-6000:], pytrace=False)
    if outcome == "skipped":
        pytest.fail(f"skipped in the VM (not accepted as a pass): {message}")
