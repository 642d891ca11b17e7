"""Hashes that match the standard tools, read once for every algorithm;
files that cannot be hashed say why; a scan's rate limit holds."""

from __future__ import annotations

import os
import subprocess
import time

import pytest

from otel_fsnotify.fim.hashing import HashConfigError, Hasher


def test_hashes_match_the_coreutils(tmp_path):
    f = tmp_path / "data"
    f.write_bytes(os.urandom(3 << 20) + b"tail")
    st = Hasher(["sha256", "sha1", "md5", "blake2b"]).state(str(f))
    for algo, tool in (("sha256", "sha256sum"), ("sha1", "sha1sum"), ("md5", "md5sum"),
                       ("blake2b", "b2sum")):
        assert st.hashes[algo] == subprocess.run([tool, str(f)], capture_output=True, text=True,
                                                 check=True).stdout.split()[0]
    assert st.size == (3 << 20) + 4 and st.hash_skipped == "" and st.ino == os.stat(f).st_ino


def test_what_is_not_hashed_says_why(tmp_path):
    big = tmp_path / "big"
    big.write_bytes(b"x" * 2048)
    link = tmp_path / "link"
    link.symlink_to(big)
    h = Hasher(max_file_size=1024)
    assert h.state(str(big)).hash_skipped == "too_large" and h.state(str(big)).size == 2048
    assert h.state(str(link)).hash_skipped == "not_regular"  # never followed
    assert h.state(str(tmp_path)).hash_skipped == "not_regular"
    assert h.state(str(tmp_path / "gone")) is None


@pytest.mark.skipif(os.geteuid() != 0, reason="chowns a file to another user")
def test_an_unreadable_file_is_reported_so():
    import shutil
    import tempfile

    d = tempfile.mkdtemp(dir="/tmp")
    try:
        os.chmod(d, 0o755)  # nobody may look, not read
        secret = os.path.join(d, "secret")
        with open(secret, "wb") as fh:
            fh.write(b"s")
        os.chmod(secret, 0o600)
        r, w = os.pipe()
        child = os.fork()
        if child == 0:  # the agent as user nobody: it may stat the file, not read it
            try:
                os.setgroups([])
                os.setgid(65534)
                os.setuid(65534)
                s = Hasher().state(secret)
                os.write(w, f"{s.hash_skipped} {s.size}".encode())
            finally:
                os._exit(0)
        os.close(w)
        got = os.read(r, 100).decode().split()
        os.waitpid(child, 0)
        assert got == ["unreadable", "1"]
    finally:
        shutil.rmtree(d)


def test_the_scan_rate_limit_holds(tmp_path):
    f = tmp_path / "f"
    f.write_bytes(b"y" * (4 << 20))
    h = Hasher(bytes_per_s=8 << 20)  # 4 MiB at 8 MiB/s: half a second at least
    start = time.monotonic()
    h.state(str(f))
    assert time.monotonic() - start >= 0.45 and h.bytes_hashed == 4 << 20


def test_an_unknown_algorithm_is_one_line():
    with pytest.raises(HashConfigError, match="'crc32'"):
        Hasher(["sha256", "crc32"])
