"""The mirror's remembered events (enrich/remembered.py): which actor an
inotify event a tracer reads is given, and what is forgotten when."""

import pytest

from otel_fsnotify.enrich import remembered
from otel_fsnotify.enrich.remembered import NO_MATCH, WINDOW_S, RememberedEvents

OPEN, CLOSE = 0x20, 0x10
DIR, FILE = 100, 200  # inodes of a watched directory and of a watched file in it


def add(events, pid, mask=OPEN, now=0.0, seen_ns=0, keys=((DIR, "f"),), child=0, tid=0):
    events.add(now, seen_ns, mask, pid, tid, list(keys), child)


def actors(events, consumer, n, ino=DIR, name="f", mask=OPEN):
    return [events.match(ino, name, mask, consumer)[0][0] for _ in range(n)]


def test_each_tracer_is_given_the_actors_of_a_files_events_oldest_first_on_its_own():
    events = RememberedEvents()
    for pid in (11, 12, 13):
        add(events, pid)
    assert actors(events, ("tracer-a", 3), 2) == [11, 12]
    assert actors(events, ("tracer-b", 4), 4) == [11, 12, 13, 0]  # a fourth event has no actor
    assert actors(events, ("tracer-a", 3), 2) == [13, 0]


def test_a_match_is_certain_only_when_no_other_actor_came_after_it():
    events = RememberedEvents()
    add(events, 11)
    add(events, 12)
    add(events, 12)
    assert events.match(DIR, "f", OPEN, "t")[1] is False  # 12 may be the one inotify merged
    assert events.match(DIR, "f", OPEN, "t") == ((12, 0, 0, 0), True)


def test_one_event_for_a_file_and_its_directory_is_found_under_each_bit_and_object():
    events = RememberedEvents()
    add(events, 11, mask=OPEN | CLOSE, keys=((DIR, "f"), (FILE, "")), child=FILE, seen_ns=5, tid=21)
    assert events.match(DIR, "f", CLOSE, "t")[0] == (11, 21, FILE, 5)  # the child named in its directory
    assert events.match(FILE, "", OPEN, "t")[0] == (11, 21, 0, 5)  # the file itself has no child
    assert events.match(DIR, "g", OPEN, "t")[0] == NO_MATCH
    assert len(events) == 4  # entries: two objects, two bits each


def test_events_are_forgotten_after_the_window():
    events = RememberedEvents()
    add(events, 11, now=10.0, mask=OPEN | CLOSE, keys=((DIR, "f"), (FILE, "")))
    add(events, 12, now=12.0)
    events.expire(10.0 + WINDOW_S + 0.5)
    assert len(events) == 1
    assert actors(events, "t", 2) == [12, 0]
    assert events.match(FILE, "", CLOSE, "t")[0] == NO_MATCH
    events.expire(12.0 + WINDOW_S + 0.5)
    assert len(events) == 0 and events.match(DIR, "f", OPEN, "u")[0] == NO_MATCH


def test_past_the_bound_the_oldest_events_go_first_and_the_rest_still_match(monkeypatch):
    monkeypatch.setattr(remembered, "MAX_HITS", 500)
    events = RememberedEvents()
    for pid in range(1, 2001):
        add(events, pid)  # one file, 2,000 events: the arrays are cut as they expire
    events.expire(0.0)
    assert len(events) == 500
    assert actors(events, "t", 3) == [1501, 1502, 1503]
    add(events, 3000)
    assert events.match(DIR, "f", OPEN, "u") == ((1501, 0, 0, 0), False)


@pytest.mark.parametrize("other_actor, expected", [
    (None, 11),   # one process on the file: the event merged into its own
    (12, 0),      # another process acted on the file too: not certain
])
def test_an_inotify_event_fanotify_merged_is_given_the_actor_it_merged_into(other_actor, expected):
    events = RememberedEvents()
    add(events, 11)
    if other_actor:
        add(events, other_actor)
    assert events.match(DIR, "f", OPEN, "t")[0][0] == 11
    assert events.merged(DIR, "f", OPEN, "t")[0] == expected


def test_a_merged_event_is_not_given_an_actor_once_another_has_come_and_gone():
    """Its event may have merged into the other actor's event, since expired."""
    events = RememberedEvents()
    add(events, 12, now=0.0)
    add(events, 11, now=1.0)
    assert actors(events, "t", 2) == [12, 11]
    events.expire(0.0 + WINDOW_S + 0.5)  # 12's event is forgotten, 11's is not
    assert events.merged(DIR, "f", OPEN, "t") == NO_MATCH


def test_a_merged_event_is_not_given_an_actor_when_its_matched_one_has_expired():
    events = RememberedEvents()
    add(events, 11, now=0.0)
    assert actors(events, "t", 1) == [11]
    add(events, 11, now=3.0)
    events.expire(0.0 + WINDOW_S + 0.5)
    assert events.merged(DIR, "f", OPEN, "t") == NO_MATCH
