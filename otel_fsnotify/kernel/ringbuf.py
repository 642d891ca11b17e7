"""Read a BPF ring buffer map directly through its mmap, a batch at a time.

libbpf's consumer (behind bcc's open_ring_buffer) calls back into Python once
per record through a ctypes thunk, which cost more than decoding the record.
This reader maps the ring like libbpf does and hands out each batch as one
bytes copy plus record offsets, so the caller decodes with struct.unpack_from
and no per-record call across the C boundary. A batch stops after MAX_BATCH
bytes of records (`more` then says the ring holds more): a full ring is
decoded and written out a part at a time, so the agent's memory does not
grow with the ring.

Layout (kernel/bpf/ringbuf.c, uapi since 5.8): page 0 holds the consumer
position (written by user space); page 1 the producer position; the data
area (a power of two) follows, mapped twice back to back so a record that
wraps is still contiguous. Each record starts with an 8-byte header: u32 len
with BUSY (bit 31, not committed yet) and DISCARD (bit 30) flags, u32 page
offset; the record is padded to 8 bytes.
"""

from __future__ import annotations

import mmap
import select
import struct

BUSY = 1 << 31
DISCARD = 1 << 30
HDR_SIZE = 8
MAX_BATCH = 256 * 1024  # bytes of records per batch (a 4 MiB ring: 16 batches)
_U64 = struct.Struct("=Q")
_U32 = struct.Struct("=I")


class RingReader:
    def __init__(self, map_fd: int, data_size: int):
        if data_size & (data_size - 1):
            raise ValueError(f"ring buffer size {data_size} is not a power of two")
        page = mmap.PAGESIZE
        self._mask = data_size - 1
        self._cons = mmap.mmap(map_fd, page, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE, offset=0)
        self._prod = mmap.mmap(map_fd, page + 2 * data_size, mmap.MAP_SHARED, mmap.PROT_READ,
                               offset=page)
        self._page = page
        self.more = False  # the last batch stopped at MAX_BATCH: the next one is ready
        self._ep = select.epoll()
        self._ep.register(map_fd, select.EPOLLIN)

    def close(self) -> None:
        self._ep.close()
        self._cons.close()
        self._prod.close()

    def read(self, timeout_ms: int = 0) -> tuple[bytes, list[tuple[int, int]]]:
        """The committed records, up to MAX_BATCH bytes of them: (copy of the
        batch, [(offset, length)] into it).

        Waits up to timeout_ms for the first record when none is ready.
        """
        buf, recs = self._take()
        if not recs and timeout_ms:
            self._ep.poll(timeout_ms / 1000.0)
            buf, recs = self._take()
        return buf, recs

    def _take(self) -> tuple[bytes, list[tuple[int, int]]]:
        # Records left behind here (committed after we read the producer
        # position) are taken by the next call before it waits; poll() on a
        # ring buffer map is level-triggered (ready while data is available).
        cons = _U64.unpack_from(self._cons, 0)[0]
        prod = _U64.unpack_from(self._prod, 0)[0]
        self.more = False
        if cons >= prod:
            return b"", []
        stop = min(prod, cons + MAX_BATCH)
        data, mask, view = self._page, self._mask, self._prod
        unpack = _U32.unpack_from
        recs: list[tuple[int, int]] = []
        pos = cons
        while pos < stop:
            length = unpack(view, data + (pos & mask))[0]
            if length & BUSY:
                break  # not committed yet: stop here, keep the order
            size = length & ~(BUSY | DISCARD)
            if not length & DISCARD:
                recs.append((pos - cons + HDR_SIZE, size))
            pos += (size + HDR_SIZE + 7) & ~7
        if pos == cons:
            return b"", []
        self.more = stop <= pos < prod
        s = data + (cons & mask)
        batch = view[s: s + (pos - cons)]
        _U64.pack_into(self._cons, 0, pos)  # release the space only after the copy
        return batch, recs
