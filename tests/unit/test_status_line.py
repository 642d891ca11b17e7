"""The live status line's figures (status.py), from the agent's counters."""

from otel_fsnotify.status import status_text


def test_an_event_the_pending_map_could_not_hold_is_lost_once_not_twice():
    # the exact backends count it when it is queued (map_full) and when its
    # listener reads it (tracee_unmatched): one event, one loss
    text = status_text({"submitted": 10, "map_full": 3, "tracee_unmatched": 3}, 5.0)
    assert text.endswith("lost 3")


def test_a_lost_read_counts_the_events_it_held_not_its_records():
    stats = {"output_written": 7, "ringbuf_lost": 2, "ringbuf_lost_events": 250, "overflows": 1}
    assert status_text(stats, 1234.4) == "otel-fsnotify: 1,234 ev/s · emitted 7 · lost 251"


def test_delivery_figures_appear_with_an_otlp_output():
    stats = {"submitted": 52113, "delivered": 52000, "spool_pending": 113}
    assert status_text(stats, 0.0) == ("otel-fsnotify: 0 ev/s · emitted 52,113 · delivered 52,000 "
                                       "· spool 113 · lost 0")
