"""What an OTLP encoder turns into one log record: the event plus what the
agent adds when it receives it."""

from __future__ import annotations

import msgspec

from ..event import Event


class LogEntry(msgspec.Struct, array_like=True, gc=False):
    """One event as it becomes a log record: its identity (uid) and observed
    time are fixed once, before the first delivery attempt, and kept across
    retries and restarts (the spool stores exactly this)."""

    uid: str  # log.record.uid, kept across retries and restarts
    observed: int  # ns since epoch when the agent received the event
    event: Event
    command_line: str = ""  # only filled when include_command_line is on
