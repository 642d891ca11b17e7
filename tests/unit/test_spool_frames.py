"""The spool on a real directory: order, acknowledgement and recovery; damage
costs only the frames it hits, counted in events; the directory must be the
agent's own; positions are kept in place."""

from __future__ import annotations

import os
import struct
import zlib

import pytest

from otel_fsnotify.delivery.spool import (
    SEGMENT_MAGIC, PositionFile, Spool, SpoolUnsafe, decode_entry, encode_entry, parse_frames)
from otel_fsnotify.event import Event
from otel_fsnotify.otel.entry import LogEntry


def _frame(i: int) -> bytes:
    return encode_entry(LogEntry(f"u{i}", i, Event(name=f"f{i}")))


def _uids(payloads) -> list[str]:
    return [decode_entry(p).uid for p in payloads]


def _segment_files(spool_dir) -> list[str]:
    return sorted(os.path.join(spool_dir, n) for n in os.listdir(spool_dir) if n.endswith(".seg"))


def test_spool_round_trip_ack_and_recovery(tmp_path):
    sp = Spool(str(tmp_path), 1 << 20, 4096)
    for i in range(100):
        assert sp.append(_frame(i))
    payloads, pos, damaged = sp.read(30)
    assert _uids(payloads) == [f"u{i}" for i in range(30)] and damaged == 0
    sp.ack(pos, 30)
    payloads, _pos, _ = sp.read(10)  # read but not acked: must come back after a crash
    assert decode_entry(payloads[0]).uid == "u30"
    sp.close()
    sp = Spool(str(tmp_path), 1 << 20, 4096)
    assert sp.recovered == 70
    payloads, pos, _ = sp.read(1000)
    assert _uids(payloads) == [f"u{i}" for i in range(30, 100)]
    sp.ack(pos, len(payloads))
    assert sp.pending == 0
    sp.close()
    assert Spool(str(tmp_path), 1 << 20, 4096).recovered == 0


def test_spool_cuts_a_torn_tail_and_counts_it(tmp_path):
    sp = Spool(str(tmp_path), 1 << 20, 1 << 20)
    for i in range(5):
        sp.append(_frame(i))
    sp.close()
    seg = _segment_files(tmp_path)[-1]
    with open(seg, "ab") as fh:
        fh.write(_frame(99)[:-3])  # a write cut short by a power failure
    sp = Spool(str(tmp_path), 1 << 20, 1 << 20)
    assert sp.recovered == 5 and sp.corrupt_events == 1
    payloads, _, damaged = sp.read(100)
    assert _uids(payloads) == [f"u{i}" for i in range(5)] and damaged == 0
    sp.close()


def test_spool_full_refuses_and_one_owner_only(tmp_path):
    sp = Spool(str(tmp_path), 64 * 1024, 4096)
    results = [sp.append(_frame(i)) for i in range(2000)]
    assert results[0] and not results[-1]
    assert sp.total_bytes <= 64 * 1024
    with pytest.raises(RuntimeError, match="in use"):
        Spool(str(tmp_path), 64 * 1024, 4096)
    sp.close()


@pytest.mark.parametrize("where", ["payload", "length", "magic"])
def test_one_damaged_frame_costs_that_event_only(tmp_path, where):
    sp = Spool(str(tmp_path), 1 << 20, 1 << 20)
    frames = [_frame(i) for i in range(50)]
    for f in frames:
        assert sp.append(f)
    sp.close()
    seg = _segment_files(tmp_path)[-1]
    at = len(SEGMENT_MAGIC) + sum(len(f) for f in frames[:20])  # frame 20
    at += {"magic": 1, "length": 5, "payload": 20}[where]
    with open(seg, "r+b") as fh:  # one flipped byte
        fh.seek(at)
        byte = fh.read(1)
        fh.seek(at)
        fh.write(bytes([byte[0] ^ 0x40]))
    sp = Spool(str(tmp_path), 1 << 20, 1 << 20)
    payloads, pos, damaged = sp.read(1000)
    assert _uids(payloads) == [f"u{i}" for i in range(50) if i != 20]
    assert damaged == 1
    sp.ack(pos, len(payloads))
    assert sp.pending == 0 and sp.read(1000)[0] == []
    sp.close()


def test_frames_parse_the_same_whatever_the_chunking():
    data = b"".join(_frame(i) for i in range(30))
    whole = parse_frames(data, complete=True)
    assert len(whole.payloads) == 30 and whole.lost == 0 and whole.used == len(data)
    got, off = [], 0
    chunk = 2 * len(_frame(0))  # a reader looking at a couple of frames at a time
    while off < len(data):
        part = parse_frames(data[off:off + chunk], complete=off + chunk >= len(data))
        got += part.payloads
        assert part.used > 0
        off += part.used
    assert got == whole.payloads


def test_a_spool_of_the_earlier_format_is_still_delivered(tmp_path):
    """Segments without the header, frames [len][crc32(payload)][payload],
    and a JSON cursor: what the previous version left behind."""
    payloads = [_frame(i)[12:] for i in range(10)]
    legacy = b"".join(struct.pack("<II", len(p), zlib.crc32(p)) + p for p in payloads)
    with open(tmp_path / "000000000001.seg", "wb") as fh:
        fh.write(legacy)
    os.chmod(tmp_path, 0o700)
    (tmp_path / "cursor").write_text('{"segment": 1, "offset": 0}')
    sp = Spool(str(tmp_path), 1 << 20, 1 << 20)
    assert sp.recovered == 10
    got, pos, damaged = sp.read(100)
    assert _uids(got) == [f"u{i}" for i in range(10)] and damaged == 0
    sp.ack(pos, len(got))
    assert sp.append(_frame(10))
    assert _uids(sp.read(100)[0]) == ["u10"]
    sp.close()


def test_the_spool_directory_must_be_the_agents_own(tmp_path):
    made = tmp_path / "new"
    Spool(str(made), 1 << 20, 4096).close()
    assert os.stat(made).st_mode & 0o777 == 0o700
    assert {oct(os.stat(made / n).st_mode & 0o777) for n in os.listdir(made)} == {"0o600"}

    shared = tmp_path / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    with pytest.raises(SpoolUnsafe, match="writable by group or others"):
        Spool(str(shared), 1 << 20, 4096)

    link = tmp_path / "link"
    link.symlink_to(made)
    with pytest.raises(SpoolUnsafe, match="symbolic link"):
        Spool(str(link), 1 << 20, 4096)

    theirs = tmp_path / "theirs"
    theirs.mkdir(mode=0o700)
    os.chown(theirs, 65534, 65534)
    if os.geteuid() == 0:
        with pytest.raises(SpoolUnsafe, match="owned by uid 65534"):
            Spool(str(theirs), 1 << 20, 4096)


def test_files_planted_in_the_spool_are_not_followed(tmp_path):
    spool_dir = tmp_path / "spool"
    Spool(str(spool_dir), 1 << 20, 4096).close()
    victim = tmp_path / "victim"
    victim.write_bytes(b"precious")
    os.unlink(spool_dir / "position")
    os.symlink(victim, spool_dir / "position")
    with pytest.raises(OSError):
        Spool(str(spool_dir), 1 << 20, 4096)
    assert victim.read_bytes() == b"precious"


def test_a_position_survives_a_torn_update(tmp_path):
    dfd = os.open(tmp_path, os.O_RDONLY | os.O_DIRECTORY)
    pf = PositionFile(dfd, "pos")
    pf.save(3, 100)
    pf.save(3, 200)
    pf.close()
    with open(tmp_path / "pos", "r+b") as fh:  # the newer slot half written
        fh.seek(0)  # seq 2 lives in slot 0
        fh.write(b"\xff" * 8)
    pf = PositionFile(dfd, "pos")
    assert pf.value == (3, 100)
    pf.save(4, 0)
    assert PositionFile(dfd, "pos").value == (4, 0)
    os.close(dfd)
