"""Each backend's BPF maps on Debian's kernels: at most 8 MiB with the
default ring buffer, measured the way `doctor` says it (the backend started,
its maps' fdinfo memlock summed)."""

from __future__ import annotations

from otel_fsnotify.doctor import MAP_BUDGET_MIB, bpf_memory


def test_the_backends_maps_fit_the_budget_and_doctor_says_so(backend):
    status, detail = bpf_memory(backend)
    print(f"\n[{backend}] bpf memory: {status} {detail}")
    assert status == "ok", detail
    mib = float(detail.split(" MiB", 1)[0])
    assert 4.0 < mib <= MAP_BUDGET_MIB and "ring buffer 4.0 MiB" in detail, detail
