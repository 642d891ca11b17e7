"""log.record.uid: ULIDs (26 Crockford base32 characters, 48-bit ms time then
80 random bits counted up within a ms), made one by one or for a whole batch."""

from __future__ import annotations

import time

from otel_fsnotify.delivery.shipper import UidGenerator

CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _value(uid: str) -> int:
    n = 0
    for c in uid:
        n = n * 32 + CROCKFORD.index(c)
    return n


def test_uids_of_batches_and_single_calls_count_up_without_gaps_or_repeats():
    gen = UidGenerator()
    uids = gen.many(1000) + [gen()] + gen.many(3) + gen.many(5000)
    assert all(len(u) == 26 and set(u) <= set(CROCKFORD) for u in uids)
    assert uids == sorted(uids) and len(set(uids)) == len(uids)
    values = [_value(u) for u in uids[:1000]]
    assert values == list(range(values[0], values[0] + 1000))  # one batch: consecutive


def test_uid_time_part_is_the_milliseconds_now():
    before = time.time_ns() // 1_000_000
    uid = UidGenerator()()
    after = time.time_ns() // 1_000_000
    assert before <= _value(uid) >> 80 <= after


def test_a_batch_that_carries_past_the_last_eight_characters_still_counts_up():
    gen = UidGenerator()
    gen._ms = time.time_ns() // 1_000_000 + 60_000  # a minute ahead: the next calls stay in it
    gen._rand = (1 << 40) - 5  # the low 40 bits about to carry
    uids = gen.many(20)
    values = [_value(u) for u in uids]
    assert values == list(range(values[0], values[0] + 20))
    assert uids[-1][:18] != uids[0][:18]  # the carry reached the leading characters
