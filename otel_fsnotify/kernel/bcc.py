"""bcc on this host: the kernel headers tree it compiles against, tracefs, and
loading bpf/ programs. The only module that imports bcc.

bcc (0.26) only looks for headers in /lib/modules/$(uname -r)/{build,source}
(or an in-kernel kheaders module). Hardened kernels often ship no headers
package at all; any recent tree works for bcc's own compilation because every
struct offset the BPF code reads comes from BTF (btf.py, layout.py), not from
these headers. So when the running kernel has none, the newest installed
Debian tree is linked in. bcc also picks its tracefs path when it is
imported, so both are made ready before the import.
"""

from __future__ import annotations

import glob
import os
import re

MODULES = "/lib/modules"


def _version_key(path: str):
    return [int(x) for x in re.findall(r"\d+", os.path.basename(path))]


def installed_trees() -> list[tuple[str, str]]:
    """(build, source) header trees from linux-headers-* packages, newest first."""
    trees = []
    for build in sorted(glob.glob("/usr/src/linux-headers-*"), key=_version_key, reverse=True):
        if build.endswith("-common") or not os.path.isdir(os.path.join(build, "include", "generated")):
            continue
        # Debian splits a tree: <ver>-<flavour> (generated headers) and <ver>-common (sources).
        common = re.sub(r"-[a-z0-9]+$", "-common", build)
        trees.append((build, common if os.path.isdir(common) else build))
    return trees


def describe_headers() -> str:
    """One line: which headers bcc would use now."""
    release = os.uname().release
    build = os.path.join(MODULES, release, "build")
    if os.path.isdir(build):
        target = os.path.realpath(build)
        own = os.path.basename(target).startswith(f"linux-headers-{release}")
        return f"{build} -> {target}" + ("" if own else f" (not {release}'s own; offsets come from BTF)")
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return "in-kernel kheaders (/sys/kernel/kheaders.tar.xz)"
    trees = installed_trees()
    if trees:
        return f"none for {release}; would link {trees[0][0]} at start"
    return f"none: no /lib/modules/{release}/build and no /usr/src/linux-headers-* (apt-get install linux-headers-amd64)"


class HeadersError(RuntimeError):
    pass


def ensure_headers() -> str:
    """Make sure bcc finds a headers tree; link the newest installed one if needed."""
    release = os.uname().release
    kdir = os.path.join(MODULES, release)
    build = os.path.join(kdir, "build")
    if os.path.isdir(build) or os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return describe_headers()
    trees = installed_trees()
    if not trees:
        raise HeadersError(
            f"no kernel headers for bcc: /lib/modules/{release}/build is missing and no "
            "/usr/src/linux-headers-* tree is installed (apt-get install linux-headers-amd64)")
    tree_build, tree_source = trees[0]
    try:
        os.makedirs(kdir, exist_ok=True)
        for name, target in (("build", tree_build), ("source", tree_source)):
            link = os.path.join(kdir, name)
            if os.path.islink(link):
                os.unlink(link)
            os.symlink(target, link)
    except OSError as exc:
        raise HeadersError(f"cannot link kernel headers into {kdir}: {exc.strerror}") from None
    return describe_headers()

BPF_DIR = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "bpf")
TRACEFS_DIRS = ("/sys/kernel/tracing", "/sys/kernel/debug/tracing")


class BccError(RuntimeError):
    """bcc missing, or a BPF program that will not compile, load or attach."""


def tracefs_path() -> str | None:
    for path in TRACEFS_DIRS:
        if os.path.exists(os.path.join(path, "events")):
            return path
    return None


def ensure_tracefs() -> str:
    path = tracefs_path()
    if path:
        return path
    try:
        os.makedirs("/sys/kernel/tracing", exist_ok=True)
        if os.system("mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null") != 0:
            raise OSError("mount failed")
    except OSError:
        raise BccError("tracefs is not mounted at /sys/kernel/tracing and mounting it failed "
                       "(needs CAP_SYS_ADMIN; in a container, mount the host's /sys/kernel/tracing)") from None
    return "/sys/kernel/tracing"


def import_bcc():
    """Return the bcc module after making tracefs and headers ready."""
    ensure_tracefs()
    try:
        ensure_headers()
    except HeadersError as exc:
        raise BccError(str(exc)) from None
    try:
        import bcc  # Debian's python3-bpfcc
    except ImportError:
        raise BccError("bcc is not importable: apt-get install python3-bpfcc "
                       "(the PyPI package named 'bcc' is an unrelated project)") from None
    if not hasattr(bcc, "BPF"):
        raise BccError(f"the 'bcc' module at {getattr(bcc, '__file__', '?')} is not BPF Compiler "
                       "Collection; install Debian's python3-bpfcc")
    return bcc


def read_source(name: str) -> str:
    with open(os.path.join(BPF_DIR, name)) as fh:
        return fh.read()


def compile_bpf(source_name: str, cflags: list[str]):
    """Compile and load bpf/<source_name> with bcc (its #include "..." found in
    bpf/); BccError with one line on failure."""
    bcc = import_bcc()
    text = read_source(source_name)
    try:
        return bcc.BPF(text=text.encode(), cflags=["-Wno-macro-redefined", "-Wno-visibility",
                                                   f"-I{BPF_DIR}"] + cflags)
    except Exception as exc:  # bcc raises bare Exception
        raise BccError(f"bpf/{source_name}: {exc}") from None
