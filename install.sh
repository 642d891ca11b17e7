#!/usr/bin/env bash
# Set up otel-fsnotify on Debian bookworm (run as root):
#   ./install.sh          runtime: bcc, kernel headers, the venv with the agent
#   ./install.sh --test   also what the test suite and benchmarks need: inotify-tools,
#                         qemu and Debian's 5.10, 6.1 and 6.12 kernels for the VM tests
#                         (6.1 installed, the others only unpacked into vm-cache/),
#                         bpftool, fatrace, rotel, pytest
set -euo pipefail
cd "$(dirname "$0")"

with_test=0
[[ "${1:-}" == "--test" ]] && with_test=1

step() { printf '==> %s\n' "$*" >&2; }

if [[ $EUID -ne 0 ]]; then
    echo "install.sh: must run as root (apt-get and BPF need it)" >&2
    exit 1
fi

runtime_pkgs=(python3 python3-venv python3-bpfcc linux-headers-amd64 ca-certificates)
# For the tests: real tracers (inotifywait), qemu + Debian's own kernel for the
# exact (fentry/kprobe) backends, busybox-static for the VM's initramfs,
# bpftool for the benchmarks' per-hook cost, fatrace to measure the agent against.
test_pkgs=(inotify-tools util-linux qemu-system-x86 linux-image-amd64 busybox-static cpio kmod bpftool fatrace)
pkgs=("${runtime_pkgs[@]}")
(( with_test )) && pkgs+=("${test_pkgs[@]}")

missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if (( ${#missing[@]} )); then
    step "apt-get install ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends "${missing[@]}" >/dev/null
fi

if [[ ! -x .venv/bin/python ]]; then
    step "creating .venv (Debian's python3, for python3-bpfcc)"
    /usr/bin/python3 -m venv .venv
fi
# bcc is Debian's ctypes module; expose just that package to the venv
# (the PyPI project named 'bcc' is unrelated and must never be installed).
site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ln -sfn /usr/lib/python3/dist-packages/bcc "$site/bcc"

extra=""
(( with_test )) && extra="[test]"
step "pip install -e .$extra"
# (this machine's pip.conf names local mirrors that may be absent: hide that noise)
# editable_mode=compat: the source tree on sys.path, so pySigma's plugin
# discovery (pkgutil over the sigma.pipelines namespace) finds
# sigma/pipelines/otel_fsnotify, which setuptools' default editable finder hides
.venv/bin/python -m pip install -q --disable-pip-version-check \
    --config-settings editable_mode=compat -e ".$extra" 2>&1 \
    | { grep -v "^WARNING: Location 'file:" || true; }
[[ ${PIPESTATUS[0]} -eq 0 ]] || { echo "install.sh: pip install failed" >&2; exit 1; }

if (( with_test )); then
    # the VM suite's other kernels (5.10, 6.12): downloaded and unpacked into
    # vm-cache/kernels, never installed on this machine (tests/harness/kernels.py)
    step "kernels for the VM suite"
    .venv/bin/python -m tests.harness.kernels fetch 5.10 6.12
fi

.venv/bin/python -c 'import bcc, msgspec, opentelemetry.sdk, sigma' \
    || { echo "install.sh: the venv cannot import bcc/msgspec/opentelemetry/pySigma" >&2; exit 1; }
step "ready: .venv/bin/otel-fsnotify"
