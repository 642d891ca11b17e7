"""The Sigma Linux file taxonomy, mapped once: onto the event (the in-agent
engine, compiler.py) and onto the OTel attributes (the pySigma pipeline that
converts rules for a SIEM, pipeline.py). The README's table is this one.

A Sigma field names a value of the event and the attribute the record
carries it in; a logsource category names the changes it covers, by the
event's normalised action (watch mode's `action`, or masks.action() of an
inotify/fanotify event's mask) and the same value of `fsnotify.action` in
the record.
"""

from __future__ import annotations

from typing import NamedTuple


class Field(NamedTuple):
    event: str  # how the engine reads it (compiler.FIELD_READERS)
    attribute: str  # the OTLP record's attribute
    meaning: str


FIELDS: dict[str, Field] = {
    "TargetFilename": Field("path", "file.path", "the file changed (full path)"),
    "SourceFilename": Field("old_path", "fsnotify.old_path", "a rename's source (watch mode)"),
    "Image": Field("tracee_exe", "process.executable.path", "the acting process's executable"),
    "ProcessId": Field("tracee_pid", "process.pid", "the acting process"),
    "User": Field("tracee_user", "process.user.name", "the acting process's user name"),
    "CommandLine": Field("tracee_command_line", "process.command_line",
                         "the acting process's command line (only with include_command_line)"),
}

# Sigma category -> the actions it covers: watch mode's names first, then
# the inotify/fanotify ones (masks.action)
CATEGORIES: dict[str, tuple[str, ...]] = {
    "file_event": ("created", "create"),
    "file_change": ("modified", "attributes", "modify", "attrib", "close_write"),
    "file_delete": ("deleted", "delete"),
    "file_rename": ("renamed", "rename"),
    "file_access": ("access", "open", "open_exec", "close_nowrite"),
}
PRODUCT = "linux"

# The records' event_name for events that can match a file category
EVENT_NAMES = ("fsnotify.fim", "fsnotify.inotify", "fsnotify.fanotify")

# Sigma level -> the record's severity (Event.severity; otel/mapping.py)
LEVELS: dict[str, str] = {
    "informational": "info", "low": "info", "medium": "warn", "high": "error", "critical": "fatal",
}
