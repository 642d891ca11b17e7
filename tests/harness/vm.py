"""Boot one of Debian's distribution kernels under qemu (TCG) and run a command in it.

The guest sees the host's root filesystem read-only over virtio-9p, with tmpfs
over the directories programs write to, so it runs the repository's own .venv,
bcc and kernel headers without any image to build. A second, writable 9p share
(``/vmresults`` in the guest) carries results back to the host.

Only the initramfs is built here (busybox-static + that kernel's 9p modules),
once per kernel, into a cache directory. The kernel is a tests/harness/kernels
series: 6.1 is the host's own package; 5.10 and 6.12 were unpacked into the
cache by the install step, and the guest sees their modules and headers at
/lib/modules/<release> (a tmpfs of symlinks into the cache).
"""

from __future__ import annotations

import glob
import gzip
import lzma
import os
import shutil
import subprocess
import time

from tests.harness.kernels import CACHE, REPO, Kernel, host_kernel
BUSYBOX = "/bin/busybox"
# Load order matters: each needs the ones before it. A kernel lacking one has
# it built in (6.12: virtio) or does not split it out (5.10: netfs, virtio_pci_*_dev).
MODULES = ("virtio_ring", "virtio", "virtio_pci_legacy_dev", "virtio_pci_modern_dev",
           "virtio_pci", "netfs", "fscache", "9pnet", "9pnet_virtio", "9p")
# Directories a guest program may write to; everything else is the read-only host root.
WRITABLE = ("/tmp", "/run", "/var/tmp", "/root", "/var/cache", "/home")
SCRATCH_BYTES = 1 << 30  # the guest's ext4 scratch disk (sparse on the host)

INIT = r"""#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in {modules}; do insmod /modules/$m.ko || echo "vm-init: insmod $m failed"; done
mkdir -p /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 hostroot /newroot || {{ echo "vm-init: 9p root mount failed"; echo o > /proc/sysrq-trigger; }}
for d in {writable}; do [ -d /newroot$d ] && mount -t tmpfs -o mode=1777 tmpfs /newroot$d; done
mount -t proc proc /newroot/proc || echo "vm-init: proc mount failed"; cat /proc/mounts
mount -t sysfs sys /newroot/sys
mount -t devtmpfs dev /newroot/dev
mkdir -p /newroot/dev/pts /newroot/dev/shm
mount -t devpts devpts /newroot/dev/pts
mount -t tmpfs tmpfs /newroot/dev/shm
mount -t tracefs tracefs /newroot/sys/kernel/tracing
mount -t debugfs debugfs /newroot/sys/kernel/debug
mount -t bpf bpf /newroot/sys/fs/bpf
mount -t cgroup2 cgroup2 /newroot/sys/fs/cgroup
repo=$(sed -n 's/.*vmrepo=\([^ ]*\).*/\1/p' /proc/cmdline)
# the repository again, on its own share: it may live under a directory the
# tmpfs mounts above just hid (a clone in /tmp)
mkdir -p /newroot$repo && mount -t 9p -o trans=virtio,version=9p2000.L,ro,cache=loose,msize=524288 repo /newroot$repo || echo "vm-init: repo mount failed"
# a kernel unpacked in the cache: its modules and headers where bcc looks
kroot=$(sed -n 's/.*vmkroot=\([^ ]*\).*/\1/p' /proc/cmdline)
if [ -n "$kroot" ]; then
    rel=$(uname -r)
    mount -t tmpfs -o mode=755 tmpfs /newroot/lib/modules
    mkdir -p /newroot/lib/modules/$rel
    for f in /newroot$kroot/lib/modules/$rel/*; do
        [ "${{f##*/}}" = build ] || [ "${{f##*/}}" = source ] || ln -s "${{f#/newroot}}" /newroot/lib/modules/$rel/
    done
    # the headers packages' links are absolute (/usr/src/...): the same, in the cache
    for l in build source; do
        t=$(readlink /newroot$kroot/lib/modules/$rel/$l) && ln -s $kroot$t /newroot/lib/modules/$rel/$l
    done
fi
mkdir -p /newroot/tmp/vmresults
mount -t 9p -o trans=virtio,version=9p2000.L,msize=524288 results /newroot/tmp/vmresults || echo "vm-init: results mount failed"
script=$(sed -n 's/.*vmscript=\([^ ]*\).*/\1/p' /proc/cmdline)
echo "vm-init: running $script"
exec switch_root /newroot /bin/sh -c "cd /; hostname otelvm; ip link set lo up 2>/dev/null; /bin/sh $script > /tmp/vmresults/console.log 2>&1; echo \$? > /tmp/vmresults/exit-status; sync; echo o > /proc/sysrq-trigger; sleep 30"
"""


class VmError(RuntimeError):
    pass


def _module_bytes(path: str) -> bytes:
    if path.endswith(".xz"):
        with lzma.open(path) as fh:
            return fh.read()
    with open(path, "rb") as fh:
        return fh.read()


def build_initramfs(kernel: Kernel) -> str:
    """cpio.gz with busybox, the kernel's 9p modules and /init; cached per release."""
    release = kernel.release
    out = os.path.join(CACHE, f"initramfs-{release}.cpio.gz")
    if os.path.exists(out) and os.path.getmtime(out) > os.path.getmtime(__file__):
        return out
    if not os.path.exists(BUSYBOX):
        raise VmError("no /bin/busybox: apt-get install busybox-static")
    root = os.path.join(CACHE, f"initramfs-{release}")
    shutil.rmtree(root, ignore_errors=True)
    for d in ("bin", "proc", "sys", "dev", "modules", "newroot"):
        os.makedirs(os.path.join(root, d))
    shutil.copy2(BUSYBOX, os.path.join(root, "bin", "busybox"))
    moddir = os.path.join(kernel.modules, "kernel")
    loaded = []
    for name in MODULES:
        found = glob.glob(f"{moddir}/**/{name}.ko", recursive=True) + \
            glob.glob(f"{moddir}/**/{name}.ko.xz", recursive=True)
        if not found:
            continue  # built in, or not a module of its own in this kernel
        with open(os.path.join(root, "modules", f"{name}.ko"), "wb") as fh:
            fh.write(_module_bytes(found[0]))
        loaded.append(name)
    if "9p" not in loaded:
        try:
            with open(os.path.join(kernel.modules, "modules.builtin")) as fh:
                builtin = fh.read()
        except OSError:
            builtin = ""
        if "/9p.ko" not in builtin:
            raise VmError(f"kernel {release}: 9p is neither a module under {moddir} nor built in")
    with open(os.path.join(root, "init"), "w") as fh:
        fh.write(INIT.format(modules=" ".join(loaded), writable=" ".join(WRITABLE)))
    os.chmod(os.path.join(root, "init"), 0o755)
    files = subprocess.run("find . | sort", shell=True, cwd=root, capture_output=True,
                           check=True).stdout
    cpio = subprocess.run(["cpio", "-o", "-H", "newc", "--quiet"], cwd=root, input=files,
                          capture_output=True, check=True).stdout
    tmp = out + ".tmp"
    with gzip.open(tmp, "wb", compresslevel=1) as fh:
        fh.write(cpio)
    os.replace(tmp, out)
    return out


def run(script: str, results_dir: str, timeout: float, memory_mb: int = 3072,
        cpus: int = 2, log=None, kernel: Kernel | None = None) -> int:
    """Boot the VM on `kernel` (default: the host's 6.1), run `script` (a shell
    script path on the host root) as root in the guest with /tmp/vmresults =
    results_dir, and return its exit status."""
    if not shutil.which("qemu-system-x86_64"):
        raise VmError("qemu-system-x86_64 missing: apt-get install qemu-system-x86")
    if any(c.isspace() for c in REPO + script):
        raise VmError(f"the repository path must not contain spaces (kernel command line): {REPO}")
    kernel = kernel or host_kernel()
    initrd = build_initramfs(kernel)
    kroot = f" vmkroot={kernel.root}" if kernel.root != "/" else ""
    os.makedirs(results_dir, exist_ok=True)
    for stale in ("exit-status", "console.log"):
        try:
            os.unlink(os.path.join(results_dir, stale))
        except FileNotFoundError:
            pass
    serial = os.path.join(results_dir, "serial.log")
    # a fresh ext4 disk (/dev/vda in the guest): a filesystem with a filesystem
    # id for watch mode where the kernel's tmpfs has none (5.10)
    scratch = os.path.join(CACHE, f"scratch-{kernel.release}.img")
    with open(scratch, "wb") as fh:
        fh.truncate(SCRATCH_BYTES)
    subprocess.run(["mkfs.ext4", "-q", "-F", scratch], check=True)
    cmd = [
        "qemu-system-x86_64", "-machine", "q35", "-accel", "tcg,thread=multi",
        "-cpu", "max", "-smp", str(cpus), "-m", str(memory_mb),
        "-kernel", kernel.vmlinuz, "-initrd", initrd,
        "-append", f"console=ttyS0 quiet loglevel=4 panic=-1 vmscript={script} vmrepo={REPO}{kroot}",
        "-display", "none", "-no-reboot", "-nic", "none",
        "-serial", f"file:{serial}", "-monitor", "none",
        "-virtfs", "local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={REPO},mount_tag=repo,security_model=none,readonly=on,multidevs=remap",
        "-virtfs", f"local,path={results_dir},mount_tag=results,security_model=none",
        "-drive", f"file={scratch},format=raw,if=virtio,cache=unsafe",
    ]
    start = time.monotonic()
    try:
        subprocess.run(cmd, timeout=timeout, stdin=subprocess.DEVNULL,
                       stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, check=False)
    except subprocess.TimeoutExpired:
        raise VmError(f"VM did not finish within {timeout:.0f}s (see {serial})") from None
    if log:
        log(f"VM ran {time.monotonic() - start:.0f}s")
    status_file = os.path.join(results_dir, "exit-status")
    if not os.path.exists(status_file):
        raise VmError(f"VM stopped before the guest script finished (see {serial})")
    with open(status_file) as fh:
        return int(fh.read().strip() or "255")
