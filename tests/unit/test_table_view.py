"""`--output table` as a person reads it: a time column, masks by name,
only what applies to each row's type, widths that fit the terminal,
colour on a terminal but not with NO_COLOR, and `--fields help`."""

from __future__ import annotations

import fcntl
import os
import re
import struct
import subprocess
import sys
import termios
import time

import pytest

from otel_fsnotify.event import FIELD_NAMES, Event
from otel_fsnotify.table import DEFAULT_COLUMNS, Table, cell

ANSI = re.compile(r"\x1b\[[0-9;]*m")
T0 = 1_764_547_200_123_000_000  # a ns timestamp with 123 ms


def inotify() -> Event:
    return Event(timestamp=T0, type="inotify", tracer_comm="inotifywait", tracer_pid=812, tracee_comm="touch",
                 tracee_pid=9120, i_mask=0x40000100, i_mask_names=["IN_CREATE", "IN_ISDIR"],
                 path="/etc/some/dir", name="dir", attribution="inferred")


def fanotify_denied() -> Event:
    return Event(timestamp=T0, type="fanotify", tracer_comm="fapolicyd", tracer_pid=600, tracee_comm="cat",
                 tracee_pid=700, fa_mask=0x10000, fa_mask_names=["FAN_OPEN_PERM"], fa_response="deny",
                 path="/etc/shadow", attribution="exact")


def fim_rename() -> Event:
    return Event(timestamp=T0, type="fim", action="renamed", old_path="/etc/a", path="/etc/b",
                 tracee_comm="mv", tracee_pid=5, attribution="exact")


def test_the_time_column_is_local_time_to_the_millisecond():
    expected = time.strftime("%H:%M:%S", time.localtime(T0 // 10**9)) + ".123"
    assert cell(inotify(), "time") == expected


def test_each_rows_event_column_names_its_own_api_only():
    assert cell(inotify(), "event") == "IN_CREATE|IN_ISDIR"
    assert cell(fanotify_denied(), "event") == "FAN_OPEN_PERM deny"
    assert cell(fim_rename(), "event") == "renamed from /etc/a"
    assert (cell(inotify(), "tracer"), cell(inotify(), "tracee")) == ("inotifywait[812]", "touch[9120]")
    assert cell(Event(type="inotify"), "tracee") == "?[0]"


def test_mask_fields_given_by_name_are_shown_by_name_not_hex():
    assert cell(inotify(), "i_mask") == "IN_CREATE|IN_ISDIR"
    assert cell(fanotify_denied(), "fa_mask") == "FAN_OPEN_PERM"
    assert cell(inotify(), "fa_mask") == "0"


def _pty(columns: int):
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 30, columns, 0, 0))
    return master, open(slave, "w")


def test_rows_fit_a_narrow_terminal_keeping_the_end_of_the_path(monkeypatch):
    monkeypatch.delenv("COLUMNS", raising=False)
    master, fh = _pty(100)
    try:
        ev = inotify()
        ev.path = "/var/lib/a/very/long/directory/that/goes/on/and/on/and/on/for/a/while/file.txt"
        table = Table([], fh)
        row = ANSI.sub("", table.row(ev))
        assert len(row) <= 100 and row.endswith("file.txt") and "…" in row
        assert ANSI.sub("", table.header()).split() == [c.upper() for c in DEFAULT_COLUMNS]
    finally:
        fh.close()
        os.close(master)


def test_colour_on_a_terminal_none_with_no_color_or_off_a_terminal(monkeypatch, tmp_path):
    master, fh = _pty(120)
    try:
        monkeypatch.delenv("NO_COLOR", raising=False)
        monkeypatch.setenv("TERM", "xterm")
        assert "\x1b[31m" in Table([], fh).row(fanotify_denied())  # a denial in red
        monkeypatch.setenv("NO_COLOR", "1")
        assert "\x1b[" not in Table([], fh).row(fanotify_denied())
    finally:
        fh.close()
        os.close(master)
    monkeypatch.delenv("NO_COLOR")
    with open(tmp_path / "out", "w") as plain:
        assert "\x1b[" not in Table([], plain).row(fanotify_denied())


def test_fields_help_lists_every_field_with_a_line_each():
    out = subprocess.run([sys.executable, "-m", "otel_fsnotify", "run", "--fields", "help"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    helped = {line.split()[0]: line.split(None, 1)[1] for line in out.stdout.splitlines()}
    assert set(FIELD_NAMES) | {"time", "tracer", "tracee", "event", "attrib"} == set(helped)
    assert all(len(text) > 5 for text in helped.values())


@pytest.mark.parametrize("fields", [["time", "tracee_comm", "i_mask", "path"]])
def test_named_fields_are_the_columns(fields):
    table = Table(fields, open(os.devnull, "w"))
    assert table.header().split() == [f.upper() for f in fields]
    assert table.row(inotify()).split() == [cell(inotify(), "time"), "touch", "IN_CREATE|IN_ISDIR", "/etc/some/dir"]


def test_a_file_name_cannot_write_escape_sequences_or_rows_to_the_terminal():
    ev = inotify()
    ev.path = "/tmp/evil\x1b[2J\nFORGED ROW\x9b\udcff.txt"
    text = cell(ev, "path")
    assert text == "/tmp/evil\\x1b[2J\\x0aFORGED ROW\\x9b\\xff.txt"
    assert "\n" not in Table([], open(os.devnull, "w")).row(ev)
