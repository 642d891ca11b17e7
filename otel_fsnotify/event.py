"""The event: the one schema every backend produces and every output consumes.

Field names are flat and follow the seed gadget (``tracer_comm``, ``i_mask``...)
so ``--fields`` habits carry over. JSON lines of this struct are both the
``--output jsonl`` format and the ``replay`` input format.
"""

from __future__ import annotations

import msgspec

EVENT_TYPES = ("inotify", "fanotify", "fa_resp")
FA_RESPONSES = ("na", "allow", "deny", "interrupted")
ATTRIBUTIONS = ("exact", "inferred", "unknown")


class Event(msgspec.Struct, omit_defaults=False, forbid_unknown_fields=True):
    """One fsnotify event, linked to its tracee (actor) and tracer (reader).

    Unknown values are 0 or "" — never invented.
    """

    timestamp: int = 0  # ns since epoch when the tracee generated it (fa_resp: when answered)
    type: str = "inotify"  # inotify | fanotify | fa_resp

    tracer_pid: int = 0
    tracer_tid: int = 0
    tracer_ppid: int = 0
    tracer_uid: int = 0
    tracer_gid: int = 0
    tracer_mntns_id: int = 0
    tracer_comm: str = ""
    tracer_pcomm: str = ""
    tracer_exe: str = ""

    tracee_pid: int = 0
    tracee_tid: int = 0
    tracee_ppid: int = 0
    tracee_uid: int = 0
    tracee_gid: int = 0
    tracee_mntns_id: int = 0
    tracee_comm: str = ""
    tracee_pcomm: str = ""
    tracee_exe: str = ""
    tracee_container_id: str = ""

    prio: int = 0

    i_wd: int = 0
    i_mask: int = 0
    i_cookie: int = 0
    i_ino: int = 0
    i_ino_dir: int = 0
    i_mask_names: list[str] = []

    fa_type: str = ""
    fa_mask: int = 0
    fa_pid: int = 0
    fa_flags: int = 0
    fa_f_flags: int = 0
    fa_mask_names: list[str] = []
    fa_response: str = "na"

    name: str = ""
    path: str = ""
    attribution: str = "unknown"


FIELD_NAMES: tuple[str, ...] = Event.__struct_fields__

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder(Event)


def append_json_line(event: Event, buf: bytearray) -> None:
    """Encode one event as a JSON line at the end of `buf` (no intermediate bytes)."""
    _encoder.encode_into(event, buf, -1)
    buf += b"\n"


def to_json_line(event: Event) -> bytes:
    """Encode one event as a JSON line (with trailing newline)."""
    buf = bytearray()
    append_json_line(event, buf)
    return bytes(buf)


class CaptureError(ValueError):
    """A capture (jsonl) file line that is not an Event."""

    def __init__(self, source: str, lineno: int, reason: str):
        super().__init__(f"{source}:{lineno}: not an otel-fsnotify event: {reason}")
        self.source = source
        self.lineno = lineno


def from_json_line(line: bytes | str, source: str = "<input>", lineno: int = 0) -> Event:
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise CaptureError(source, lineno, str(exc)) from None


def iter_capture(path: str):
    """Yield (lineno, Event) from a jsonl capture; blank lines are skipped.

    Raises CaptureError naming the file and line of the first bad record.
    """
    with open(path, "rb") as fh:
        for lineno, line in enumerate(fh, 1):
            if line.strip():
                yield lineno, from_json_line(line, path, lineno)
