"""Debian's distribution kernels for the VM suite, by series.

    5.10  bullseye (and its security suite): the pre-5.11 inotify handler and
          pre-5.16 fsnotify_add_event paths
    6.1   bookworm: the host's own linux-image-amd64 package
    6.12  bookworm-backports: the current LTS

The others are fetched with `apt-get download` under a private apt
configuration (its own sources list, lists and cache under the VM cache; the
machine's apt sources are left alone) and unpacked with `dpkg -x` into
<cache>/kernels/<release>/ — never installed on the host. The newest ABI of
each series in the archive is taken. A kernel is complete once its
`.complete` marker exists.

    python -m tests.harness.kernels fetch 5.10 6.12     # the install step (cached)
    python -m tests.harness.kernels fetch --refresh 5.10  # the archive's newest now
    kernel = kernels.get("5.10")                          # Kernel(release, root)
"""

from __future__ import annotations

import glob
import os
import re
import subprocess
import sys
from typing import NamedTuple

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CACHE = os.environ.get("OTEL_FSNOTIFY_VM_CACHE", os.path.join(REPO, "vm-cache"))
KEYRING = "/usr/share/keyrings/debian-archive-keyring.gpg"
MIRROR = "http://deb.debian.org"
# series -> (apt source lines, image package pattern: group 1 is the release)
SERIES = {
    "5.10": ([f"{MIRROR}/debian bullseye main", f"{MIRROR}/debian-security bullseye-security main"],
             r"linux-image-(5\.10\.0-\d+-amd64)(?:-unsigned)?"),
    "6.12": ([f"{MIRROR}/debian bookworm-backports main"],
             r"linux-image-(6\.12\.\d+\+(?:deb12|bpo)-amd64)(?:-unsigned)?"),
}
HOST_SERIES = "6.1"  # booted from the host's own packages
ALL = ("5.10", "6.1", "6.12")
APT_DIR = os.path.join(CACHE, "apt")
KERNELS = os.path.join(CACHE, "kernels")


class KernelError(RuntimeError):
    """A kernel that cannot be had (one line: which, and why)."""


class Kernel(NamedTuple):
    series: str
    release: str  # uname -r
    root: str  # where its boot/, lib/modules/ and usr/src/ are ("/" for the host's)

    @property
    def vmlinuz(self) -> str:
        return os.path.join(self.root, "boot", f"vmlinuz-{self.release}")

    @property
    def modules(self) -> str:
        return os.path.join(self.root, "lib", "modules", self.release)

    @property
    def headers(self) -> str:
        return os.path.join(self.root, "usr", "src", f"linux-headers-{self.release}")


def _version_key(text: str) -> list[int]:
    return [int(x) for x in re.findall(r"\d+", text)]


def host_kernel() -> Kernel:
    """The newest Debian 6.1 kernel installed on the host."""
    images = sorted(glob.glob("/boot/vmlinuz-6.1.0-*-amd64"), key=_version_key)
    if not images:
        raise KernelError("no /boot/vmlinuz-6.1.0-*-amd64: apt-get install linux-image-amd64 (bookworm)")
    return Kernel(HOST_SERIES, os.path.basename(images[-1])[len("vmlinuz-"):], "/")


def _apt_opts() -> list[str]:
    return ["-o", f"Dir::Etc::sourcelist={APT_DIR}/sources.list",
            "-o", f"Dir::Etc::sourceparts={APT_DIR}/sources.list.d",
            "-o", f"Dir::State::Lists={APT_DIR}/lists",
            "-o", f"Dir::Cache={APT_DIR}/cache",
            "-o", "Dir::Etc::preferencesparts=/nonexistent", "-o", "APT::Get::List-Cleanup=0",
            "-q"]


def _apt(tool: str, *args: str, cwd: str | None = None) -> str:
    proc = subprocess.run([tool, *_apt_opts(), *args], capture_output=True, text=True, cwd=cwd)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["(no message)"])[-1]
        raise KernelError(f"{tool} {' '.join(args)}: {last}")
    return proc.stdout


def _update() -> None:
    for d in ("lists/partial", "cache/archives/partial", "sources.list.d"):
        os.makedirs(os.path.join(APT_DIR, d), exist_ok=True)
    lines = [f"deb [signed-by={KEYRING}] {src}" for srcs, _ in SERIES.values() for src in srcs]
    with open(os.path.join(APT_DIR, "sources.list"), "w") as fh:
        fh.write("\n".join(lines) + "\n")
    _apt("apt-get", "update")


def _newest(series: str) -> tuple[str, str]:
    """(release, image package) of the newest ABI of a series in the archive."""
    pattern = re.compile(SERIES[series][1] + "$")
    found = {}
    for name in _apt("apt-cache", "pkgnames", "linux-image-").split():
        m = pattern.match(name)
        if m and (m.group(1) not in found or not name.endswith("-unsigned")):
            found[m.group(1)] = name  # the signed image where both exist
    if not found:
        raise KernelError(f"kernel {series}: no image package in the archive ({SERIES[series][1]})")
    release = max(found, key=_version_key)
    return release, found[release]


def _cached(series: str) -> Kernel | None:
    best = None
    for marker in glob.glob(os.path.join(KERNELS, "*", ".complete")):
        root = os.path.dirname(marker)
        with open(marker) as fh:
            got_series, release = fh.read().split()
        if got_series == series and (best is None or _version_key(release) > _version_key(best.release)):
            best = Kernel(series, release, root)
    return best


def fetch(series: str, log=print, refresh: bool = False) -> Kernel:
    """Download and unpack a series' newest kernel, image and headers; one
    already in the cache is used as it is unless `refresh`."""
    if series == HOST_SERIES:
        return host_kernel()
    if series not in SERIES:
        raise KernelError(f"kernel {series}: unknown series (known: {', '.join(ALL)})")
    cached = _cached(series)
    if cached is not None and not refresh:
        return cached
    _update()
    release, image = _newest(series)
    root = os.path.join(KERNELS, release)
    marker = os.path.join(root, ".complete")
    if os.path.exists(marker):
        return Kernel(series, release, root)
    abi = release.rsplit("-amd64", 1)[0]
    packages = [image, f"linux-headers-{release}", f"linux-headers-{abi}-common"]
    debs = os.path.join(APT_DIR, "debs", release)
    os.makedirs(debs, exist_ok=True)
    log(f"kernel {series}: downloading {' '.join(packages)}")
    _apt("apt-get", "download", *packages, cwd=debs)
    os.makedirs(root, exist_ok=True)
    for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
        subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    kernel = Kernel(series, release, root)
    _depmod(kernel)
    for need in (kernel.vmlinuz, kernel.modules, kernel.headers):
        if not os.path.exists(need):
            raise KernelError(f"kernel {series}: {need} missing after unpacking {' '.join(packages)}")
    with open(marker, "w") as fh:
        fh.write(f"{series} {release}\n")
    for deb in glob.glob(os.path.join(debs, "*.deb")):
        os.unlink(deb)  # unpacked: the archives are not kept
    return kernel


def _depmod(kernel: Kernel) -> None:
    """modules.dep for the guest's modprobe (the image package leaves it to
    its postinst, which never runs here)."""
    if not os.path.exists(os.path.join(kernel.modules, "modules.dep")):
        subprocess.run(["depmod", "-b", kernel.root, kernel.release], check=True)


def get(series: str) -> Kernel:
    """A kernel the install step fetched; KernelError (one line) if it did not."""
    if series == HOST_SERIES:
        return host_kernel()
    kernel = _cached(series)
    if kernel is None:
        raise KernelError(f"kernel {series} is not in {KERNELS}: run ./install.sh --test "
                          f"(python -m tests.harness.kernels fetch {series})")
    _depmod(kernel)
    return kernel


def main(argv: list[str]) -> int:
    refresh = "--refresh" in argv
    argv = [a for a in argv if a != "--refresh"]
    if len(argv) < 2 or argv[0] != "fetch":
        print("usage: python -m tests.harness.kernels fetch [--refresh] SERIES...", file=sys.stderr)
        return 2
    try:
        for series in argv[1:]:
            k = fetch(series, refresh=refresh)
            print(f"kernel {series}: {k.release} in {k.root}")
    except KernelError as exc:
        print(f"kernels: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
