"""A listener's read(2) reaches user space in 4 KiB ring records: what of it
is decoded when a record of it is lost in a full ring (the program sends
nothing of a read after its first lost chunk)."""

from types import SimpleNamespace

from otel_fsnotify.backends.tracepoint.records import CHUNK, STALE_READ_S, ReadAssembler


def chunk(tid, total, offset, data):
    return SimpleNamespace(proc_tid=tid, total=total, offset=offset, len=len(data)), data


def test_a_read_cut_by_a_lost_chunk_is_decoded_up_to_it_by_the_threads_next_read():
    reads = ReadAssembler()
    total = 3 * CHUNK
    assert reads.add(*chunk(7, total, 0, b"a" * CHUNK), now=1.0) == []
    # the second chunk was lost: the third is never sent; the next read is one record
    done = reads.add(*chunk(7, 32, 0, b"b" * 32), now=1.1)
    assert [(h.total, data) for h, data in done] == [(total, b"a" * CHUNK), (32, b"b" * 32)]
    assert reads.counters == {"read_incomplete": 1, "read_bytes_unparsed": 2 * CHUNK}


def test_a_cut_read_is_decoded_once_no_chunk_came_for_a_while_or_at_the_stop():
    reads = ReadAssembler()
    reads.add(*chunk(7, 3 * CHUNK, 0, b"a" * CHUNK), now=1.0)
    reads.add(*chunk(8, 2 * CHUNK, 0, b"c" * CHUNK), now=1.0 + STALE_READ_S / 2)
    assert reads.stale(1.0 + STALE_READ_S / 2) == []  # its next chunk may still come
    assert [data for _, data in reads.stale(1.0 + STALE_READ_S)] == [b"a" * CHUNK]
    assert [data for _, data in reads.rest()] == [b"c" * CHUNK]
    assert reads.rest() == [] and reads.counters["read_incomplete"] == 2


def test_a_read_whose_chunks_all_came_is_whole_and_counts_nothing():
    reads = ReadAssembler()
    assert reads.add(*chunk(7, CHUNK + 10, 0, b"a" * CHUNK), now=1.0) == []
    done = reads.add(*chunk(7, CHUNK + 10, CHUNK, b"b" * 10), now=1.0)
    assert [data for _, data in done] == [b"a" * CHUNK + b"b" * 10]
    assert reads.stale(100.0) == [] and reads.counters == {"read_incomplete": 0, "read_bytes_unparsed": 0}


def test_a_cut_read_ends_when_its_thread_begins_another_with_fanotify_paths():
    # a fanotify read sends its events' paths ahead of its chunks: the
    # backend finishes the thread's cut read then, so it keeps its own paths
    reads = ReadAssembler()
    reads.add(*chunk(7, 3 * CHUNK, 0, b"a" * CHUNK), now=1.0)
    assert reads.finish(8) == []
    assert [data for _, data in reads.finish(7)] == [b"a" * CHUNK]
    assert reads.finish(7) == [] and reads.rest() == []
