"""bcc on this host: the kernel headers tree it compiles against, tracefs, and
loading bpf/ programs. The only module that imports bcc.

bcc (0.26) compiles against /lib/modules/$(uname -r)/{build,source}, the
in-kernel kheaders module, or the tree named by BCC_KERNEL_SOURCE. Hardened
kernels often ship no headers package at all; any recent tree works for bcc's
own compilation because every struct offset the BPF code reads comes from
BTF (btf.py, layout.py), not from these headers. So when the running kernel
has none (or `--kernel-headers` names one), a Debian tree is used through a
private view: a directory of symlinks joining its two halves
(linux-headers-<ver>-<flavour> with the generated headers,
linux-headers-<ver>-common with the sources) in the layout bcc expects,
passed in BCC_KERNEL_SOURCE for this process only and removed at exit.
Nothing under /lib/modules is created or changed. bcc also picks its tracefs
path when it is imported, so both are made ready before the import.
"""

from __future__ import annotations

import atexit
import ctypes
import glob
import os
import re
import shutil
import tempfile

MODULES = "/lib/modules"
_requested: str | None = None  # --kernel-headers
_view: str | None = None  # the private view made for this process
# the kernel's name for this machine's architecture (arch/<name>/include)
ARCH = {"x86_64": "x86", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine)


def _version_key(path: str):
    return [int(x) for x in re.findall(r"\d+", os.path.basename(path))]


def _common_of(build: str) -> str:
    """The -common half of a Debian split tree (the tree itself if it is
    whole): linux-headers-6.12.9+deb12-cloud-amd64 -> ...-6.12.9+deb12-common."""
    head = build.rstrip("/")
    while re.search(r"-[a-z][a-z0-9]*$", head):
        head = head.rsplit("-", 1)[0]  # drop a flavour word (amd64, cloud, rt)
        common = head + "-common"
        if os.path.isdir(os.path.join(common, "include")):
            return common
    return build


def installed_trees() -> list[tuple[str, str]]:
    """(build, source) header trees from linux-headers-* packages, newest first."""
    trees = []
    for build in sorted(glob.glob("/usr/src/linux-headers-*"), key=_version_key, reverse=True):
        if build.endswith("-common") or not os.path.isdir(os.path.join(build, "include", "generated")):
            continue
        trees.append((build, _common_of(build)))
    return trees


class HeadersError(RuntimeError):
    pass


def use_headers(path: str | None) -> None:
    """Compile against this headers tree (a linux-headers-<ver>-<flavour>
    directory, or a whole kernel build tree) instead of the running kernel's."""
    global _requested
    path = os.path.abspath(path) if path else None  # the view's links must not dangle
    if path and not os.path.isdir(os.path.join(path, "include", "generated")):
        raise HeadersError(f"--kernel-headers {path}: not a kernel headers tree "
                           "(no include/generated; give the linux-headers-<version>-<flavour> directory)")
    _requested = path or None


def _own_tree() -> str | None:
    """What bcc finds by itself for the running kernel, or None."""
    build = os.path.join(MODULES, os.uname().release, "build")
    if os.path.isdir(build):
        return build
    if os.path.exists("/sys/kernel/kheaders.tar.xz"):
        return "/sys/kernel/kheaders.tar.xz"
    return None


def _chosen() -> tuple[str, str] | None:
    """The (build, source) tree a private view is needed for; None when bcc's
    own lookup (the running kernel's tree, kheaders) is used."""
    if _requested:
        return _requested, _common_of(_requested)
    if _own_tree():
        return None
    trees = installed_trees()
    if not trees:
        raise HeadersError(
            f"no kernel headers for bcc: /lib/modules/{os.uname().release}/build is missing and no "
            "/usr/src/linux-headers-* tree is installed (apt-get install linux-headers-amd64)")
    return trees[0]


def describe_headers() -> str:
    """One line: which headers bcc uses (or would use) now."""
    try:
        tree = _chosen()
    except HeadersError as exc:
        return f"none: {exc}"
    release = os.uname().release
    if tree is None:
        own = _own_tree()
        target = os.path.realpath(own)
        mine = own.endswith(".tar.xz") or os.path.basename(target).startswith(f"linux-headers-{release}")
        return f"{own} -> {target}" + ("" if mine else f" (not {release}'s own; offsets come from BTF)")
    build, _source = tree
    return (f"{build} through a private view for this process (BCC_KERNEL_SOURCE; "
            f"not {release}'s own: offsets come from BTF)")


def _make_view(build: str, source: str) -> str:
    """A temporary directory of symlinks: source's tree with build's generated
    headers and config joined into include/ and arch/<ARCH>/include/."""
    view = tempfile.mkdtemp(prefix="otel-fsnotify-headers-")
    atexit.register(shutil.rmtree, view, True)  # symlinks only: the trees stay untouched
    for top in os.listdir(source):
        if top not in ("include", "arch"):
            os.symlink(os.path.join(source, top), os.path.join(view, top))
    for rel in ("include", os.path.join("arch", ARCH, "include")):
        os.makedirs(os.path.join(view, rel))
        for half in (source, build):
            folder = os.path.join(half, rel)
            for name in os.listdir(folder) if os.path.isdir(folder) else ():
                link = os.path.join(view, rel, name)
                if not os.path.lexists(link):
                    os.symlink(os.path.join(folder, name), link)
    arch = os.path.join(source, "arch")
    for name in os.listdir(arch) if os.path.isdir(arch) else ():
        if name != ARCH:
            os.symlink(os.path.join(arch, name), os.path.join(view, "arch", name))
    return view


def ensure_headers() -> str:
    """Make sure bcc finds a headers tree: its own lookup, or a private view
    of the chosen tree in BCC_KERNEL_SOURCE."""
    global _view
    tree = _chosen()
    if tree is not None and _view is None:
        try:
            _view = _make_view(*tree)
        except OSError as exc:
            raise HeadersError(f"cannot make a view of the kernel headers {tree[0]}: {exc}") from None
        os.environ["BCC_KERNEL_SOURCE"] = _view
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


MADV_PAGEOUT = 21
_COMPILER_LIBS = re.compile(r"/lib(LLVM|clang|bcc)[-.]")


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
    finally:
        release_compiler_heap()


def release_compiler_heap() -> None:
    """Give back what compiling took and the agent no longer uses: the heap
    clang/LLVM freed (glibc keeps freed memory for reuse otherwise), and the
    pages of the compiler's libraries it touched, ~80 MB that would count in
    the agent's RSS for its whole life. MADV_PAGEOUT (5.4+) only drops them
    from this process: they come back from the page cache if ever used
    again (a bcc table call), nothing is lost."""
    libc = ctypes.CDLL(None, use_errno=True)
    try:
        libc.malloc_trim(0)
    except AttributeError:  # not glibc
        pass
    libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    try:
        with open("/proc/self/maps") as fh:
            maps = fh.read().splitlines()
    except OSError:
        return
    for line in maps:
        parts = line.split()
        if len(parts) >= 6 and _COMPILER_LIBS.search(parts[5]):
            lo, hi = (int(x, 16) for x in parts[0].split("-"))
            libc.madvise(lo, hi - lo, MADV_PAGEOUT)  # EINVAL before 5.4: kept, harmless