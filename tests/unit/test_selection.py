"""The selection filters on single events: an unknown actor is nobody's,
a queue overflow (a loss signal) passes every filter, watch-mode changes
are not judged by the watcher's name."""

from otel_fsnotify.enrich.selection import Selection
from otel_fsnotify.event import Event


def test_an_unknown_actor_is_not_kept_for_a_uid_or_name_but_not_excluded_either():
    unknown = Event(type="inotify", tracee_pid=0, tracee_uid=0, path="/etc/x")
    assert not Selection(uids=[0]).holds(unknown)
    assert not Selection(comms=["cat"]).holds(unknown)
    assert Selection(exclude_comms=["cat"]).holds(unknown)
    assert Selection(uids=[0]).holds(Event(type="inotify", tracee_pid=7, tracee_uid=0))


def test_a_queue_overflow_passes_every_filter():
    overflow = Event(type="inotify", i_wd=-1, i_mask=0x4000)
    sel = Selection(paths=["/etc"], comms=["cat"], tracer_comms=["inotifywait"], uids=[1000])
    assert sel.holds(overflow) and sel.holds(Event(type="fanotify", fa_mask=0x4000))
    assert sel.left_out == 0


def test_watch_mode_changes_are_not_judged_by_the_watchers_name():
    change = Event(type="fim", action="modified", tracee_pid=5, tracee_comm="vim", path="/etc/motd")
    assert Selection(tracer_comms=["inotifywait"]).holds(change)
    assert not Selection(tracer_comms=["inotifywait"]).holds(Event(type="inotify", tracer_comm="code"))


def test_paths_match_whole_components_and_count_what_they_leave_out():
    sel = Selection(paths=["/etc/"])
    assert sel.holds(Event(path="/etc")) and sel.holds(Event(path="/etc/ssh/sshd_config"))
    assert not sel.holds(Event(path="/etcetera/x")) and not sel.holds(Event(path=""))
    assert sel.left_out == 2
