"""The README's kernel table, from the last VM run's results (never by hand).

    python -m tests.vm.kernel_table            # print it
    python -m tests.vm.kernel_table --readme   # and put it into README.md
    python -m tests.vm.kernel_table --from-log ci.log --readme
                                               # from the host-side `pytest -v`
                                               # lines of a whole run (CI's output)

Rows are a kernel's backends, columns the guest suite's modules (what they
prove); each cell is passed/run in that kernel's junit xml
(vm-cache/results/<series>/junit.xml, written by
tests/vm/test_guest_suite_per_kernel.py).
"""

from __future__ import annotations

import datetime
import os
import re
import sys
import xml.etree.ElementTree as ET

from tests.harness import kernels
from tests.harness.kernels import ALL, CACHE, REPO

RESULTS = os.path.join(CACHE, "results")
BEGIN, END = "<!-- kernel-table:begin -->", "<!-- kernel-table:end -->"
FEATURES = {  # guest module -> column
    "test_attribution": "attribution",
    "test_kernel_filters": "filters",
    "test_loss_accounting": "loss accounting",
    "test_otlp_export": "OTLP export",
    "test_pod_scope": "pods",
    "test_watch_mode": "watch mode",
    "test_watch_degradation": "watch on tmpfs",
    "test_mirror_per_filesystem": "mirror on tmpfs",
    "test_paths_under_another_root": "chroot paths",
    "test_another_kernels_headers": "other headers",
}


def _results(series: str):
    """(kernel release, when, {(backend, feature): [passed, run]}) or None."""
    junit = os.path.join(RESULTS, series, "junit.xml")
    if not os.path.exists(junit):
        return None
    release = series
    try:
        with open(os.path.join(RESULTS, series, "console.log")) as fh:
            m = re.search(r"guest: kernel (\S+),", fh.read())
            release = m.group(1) if m else series
    except OSError:
        pass
    when = datetime.datetime.fromtimestamp(os.path.getmtime(junit), datetime.timezone.utc)
    cells: dict[tuple[str, str], list[int]] = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        module = case.get("classname", "").rsplit(".", 1)[-1]
        m = re.search(r"\[(\w+)\]$", case.get("name", ""))
        backend = m.group(1) if m else "?"
        cell = cells.setdefault((backend, FEATURES.get(module, module)), [0, 0])
        cell[1] += 1
        if not any(child.tag in ("failure", "error", "skipped") for child in case):
            cell[0] += 1
    return release, when, cells


_LOG_LINE = re.compile(r"test_in_vm\[([\d.]+)/(\w+)\.py::(\S+?)\] (PASSED|FAILED|ERROR|SKIPPED)")


def _results_from_log(path: str) -> dict:
    """{series: (release, when, cells)} from the host-side lines of a
    `pytest -v` run of the VM suite (one line per guest test)."""
    when = datetime.datetime.fromtimestamp(os.path.getmtime(path), datetime.timezone.utc)
    found: dict = {}
    with open(path) as fh:
        for line in fh:
            m = _LOG_LINE.search(line)
            if not m:
                continue
            series, module, name, outcome = m.groups()
            b = re.search(r"\[(\w+)\]$", name)
            cells = found.setdefault(series, {})
            cell = cells.setdefault((b.group(1) if b else "?", FEATURES.get(module, module)), [0, 0])
            cell[1] += 1
            cell[0] += outcome == "PASSED"
    out = {}
    for series, cells in found.items():
        try:
            release = kernels.get(series).release
        except kernels.KernelError:  # not fetched here: the series names it
            release = series
        out[series] = (release, when, cells)
    return out


def table(log: str | None = None) -> str:
    rows, dates = [], []
    columns = list(FEATURES.values())
    from_log = _results_from_log(log) if log else None
    for series in ALL:
        got = from_log.get(series) if from_log is not None else _results(series)
        if got is None:
            rows.append(f"| {series} | — | " + " | ".join("not run" for _ in columns) + " |")
            continue
        release, when, cells = got
        dates.append(when)
        for backend in sorted({b for b, _f in cells}):
            row = []
            for col in columns:
                passed, run = cells.get((backend, col), (0, 0))
                row.append("—" if not run else (f"{passed}/{run}" + ("" if passed == run else " ✗")))
            rows.append(f"| {release} | {backend} | " + " | ".join(row) + " |")
    head = "| kernel | backend | " + " | ".join(columns) + " |\n|" + "---|" * (len(columns) + 2)
    stamp = max(dates).strftime("%Y-%m-%d %H:%M UTC") if dates else "never"
    return f"Guest tests passed/run, last VM run {stamp}:\n\n{head}\n" + "\n".join(rows) + "\n"


def update_readme(text: str) -> None:
    path = os.path.join(REPO, "README.md")
    with open(path) as fh:
        readme = fh.read()
    if BEGIN not in readme or END not in readme:
        raise SystemExit(f"README.md has no {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN, 1)
    _old, tail = rest.split(END, 1)
    with open(path, "w") as fh:
        fh.write(head + BEGIN + "\n" + text + END + tail)


def main(argv: list[str]) -> int:
    log = argv[argv.index("--from-log") + 1] if "--from-log" in argv else None
    text = table(log)
    print(text, end="")
    if "--readme" in argv:
        update_readme(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
