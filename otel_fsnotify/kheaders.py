"""Which kernel headers tree bcc compiles against, and making one available.

bcc (0.26) only looks in /lib/modules/$(uname -r)/{build,source} (or an
in-kernel kheaders module). Hardened kernels often ship no headers package at
all; any recent tree works for bcc's own compilation because every struct
offset the BPF code reads comes from BTF (see btf.py), not from these headers.
So when the running kernel has none, the newest installed Debian tree is linked
in. This module is the one place that knows that.
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


def describe() -> str:
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


def ensure() -> str:
    """Make sure bcc finds a headers tree; link the newest installed one if needed."""
    release = os.uname().release
    kdir = os.path.join(MODULES, release)
    build = os.path.join(kdir, "build")
    if os.path.isdir(build) or os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return describe()
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
    return describe()
