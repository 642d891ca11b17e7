"""The ring records as user space declares them match the BPF programs: the
same kinds, counter slots and field layout, and every kernel offset a program
reads is resolved from this kernel's BTF. (The programs also assert their
record sizes against these tables when they compile.)"""

from __future__ import annotations

import re
import struct
from pathlib import Path

import pytest

from otel_fsnotify.backends.exact import records as exact_records
from otel_fsnotify.backends.tracepoint import records as tp_records
from otel_fsnotify.kernel.layout import KernelLayout
from otel_fsnotify.kernel.records import PROC_ID, ROOT_NOT_PASSED, RecordLayout, walked_path

BPF = Path(__file__).resolve().parents[2] / "bpf"
COMMON = (BPF / "fsnotify_common.h").read_text()
EXACT = (BPF / "fsnotify_exact.bpf.c").read_text()
TRACEPOINT = (BPF / "fsnotify_tracepoint.bpf.c").read_text()


def _defines(text: str, prefix: str) -> dict[str, int]:
    return {m[1]: int(m[2]) for m in re.finditer(rf"#define ({prefix}\w+)\s+(\d+)", text)}


def test_record_kinds_are_the_programs_kinds():
    kinds = _defines(TRACEPOINT, "REC_")
    assert kinds == {name: getattr(tp_records, name) for name in kinds}
    assert len(kinds) == 11
    rtypes = _defines(EXACT, "REC_")
    assert rtypes == {name: getattr(exact_records, name) for name in rtypes}
    listener = _defines(COMMON, "KIND_")
    assert listener == {"KIND_INOTIFY": exact_records.KIND_INOTIFY,
                        "KIND_FANOTIFY": exact_records.KIND_FANOTIFY}


@pytest.mark.parametrize("source, names", [(TRACEPOINT, tp_records.COUNTERS),
                                           (EXACT, exact_records.COUNTERS)])
def test_counter_slots_are_named_in_order(source, names):
    slots = _defines(source, "CNT_")
    assert slots.pop("CNT_SLOTS") == len(names)
    assert sorted(slots.values()) == list(range(len(names)))


def _natural_offsets(layout: RecordLayout):
    """(field, offset, alignment) as a C compiler would lay the fields out."""
    off = 0
    for name, code in layout.fields:
        size = struct.calcsize("=" + code)
        align = 1 if code.endswith("s") else size
        yield name, off, align
        off += size


@pytest.mark.parametrize("layout", [tp_records.HDR, exact_records.OUT_EVENT])
def test_records_have_no_padding_the_table_would_miss(layout):
    """"=" packing equals C's natural layout only if every field is aligned."""
    misaligned = [(n, off) for n, off, align in _natural_offsets(layout) if off % align]
    assert not misaligned
    assert layout.size % 4 == 0


def test_the_tracepoint_header_is_a_whole_number_of_words():
    # struct rec_hdr holds u64s: its sizeof is a multiple of 8, and the data
    # that follows it starts right after it
    assert tp_records.HDR.size % 8 == 0


def test_named_access_reads_what_pack_wrote():
    raw = tp_records.HDR.pack(kind=tp_records.REC_READ, proc_pid=42, proc_comm=b"inotifywait",
                              walk_depth=3, ts=7)
    rec = tp_records.HDR.unpack_from(raw + b"data", 0)
    assert (rec.kind, rec.proc_pid, rec.proc_comm.rstrip(b"\0"), rec.walk_depth, rec.ts) == \
        (1, 42, b"inotifywait", 3, 7)
    with pytest.raises(KeyError, match="no field nope"):
        tp_records.HDR.pack(nope=1)
    assert [n for n, _ in PROC_ID][:2] == ["pid", "tid"]


@pytest.mark.parametrize("source, cflags", [
    (EXACT, lambda lay: lay.exact_cflags()),
    (TRACEPOINT, lambda lay: lay.tracepoint_cflags()),
])
def test_every_offset_a_program_reads_comes_from_this_kernels_btf(source, cflags):
    used = set(re.findall(r"\b(OFF_\w+)", source + COMMON))
    given = {flag[2:].split("=")[0] for flag in cflags(KernelLayout.load())}
    assert used - given == set()


def test_a_walked_path_is_given_as_its_reader_resolves_it_and_from_the_namespace_root():
    comps = b"x\0work\0jail\0srv\0"  # leaf first, as the kernel walks
    # the reader's root passed after 2 components (a chroot at /srv/jail)
    assert walked_path(comps, 4, 1, 2) == ("/work/x", "/srv/jail/work/x")
    assert walked_path(comps, 4, 1, 4) == ("/srv/jail/work/x",) * 2  # its root is the namespace's
    # outside the reader's root: from the namespace's root, as d_path() does
    assert walked_path(comps, 4, 1, ROOT_NOT_PASSED) == ("/srv/jail/work/x",) * 2
    assert walked_path(b"jail\0", 1, 1, 0) == ("/", "/jail")  # the chroot's own root
    assert walked_path(comps, 2, 0, ROOT_NOT_PASSED) == (".../work/x", "")  # cut short
    assert walked_path(b"", 0, 1, ROOT_NOT_PASSED) == ("", "")
