"""The event: the one schema every backend produces and every output consumes.

Field names are flat and follow the seed gadget (``tracer_comm``, ``i_mask``...)
so ``--fields`` habits carry over. JSON lines of this struct are both the
``--output jsonl`` format and the ``replay`` input format.
"""

from __future__ import annotations

import operator
from typing import Annotated

import msgspec

# Integer widths as the kernel has them: a capture (replay's input) holding a
# value out of range is refused at decode, naming its line.
U32 = Annotated[int, msgspec.Meta(ge=0, le=(1 << 32) - 1)]
U64 = Annotated[int, msgspec.Meta(ge=0)]  # msgspec decodes at most 2**64 - 1
S32 = Annotated[int, msgspec.Meta(ge=-(1 << 31), le=(1 << 31) - 1)]
S64 = Annotated[int, msgspec.Meta(ge=-(1 << 63), le=(1 << 63) - 1)]

# What the event says about a process, once for both roles: the tracer (the
# watcher that read the event) and the tracee (the actor). The jsonl name is
# f"{role}_{name}". The process table (enrich/procs.py), the identity builders
# (enrich/identity.py) and the OTel mapping (otel/mapping.py) walk this list.
PROCESS_FIELDS: tuple[tuple[str, type, object], ...] = (
    ("pid", U32, 0),
    ("tid", U32, 0),
    ("ppid", U32, 0),
    ("uid", U32, 0),  # effective uid
    ("gid", U32, 0),  # effective gid
    ("ruid", U32, 0),  # real uid
    ("suid", U32, 0),  # saved set-user-id
    ("mntns_id", U64, 0),
    ("comm", str, ""),
    ("pcomm", str, ""),  # the parent's comm
    ("exe", str, ""),  # full path of the executable when known
)
# ...and what only the actor carries
TRACEE_ONLY_FIELDS: tuple[tuple[str, type, object], ...] = (
    ("container_id", str, ""),  # from the cgroup path (enrich/procs.py container_of)
    ("container_runtime", str, ""),  # containerd, cri-o, docker, podman
    ("pod_uid", str, ""),  # the Kubernetes pod's uid
    ("pod_namespace", str, ""),  # ...its namespace and name, where the node says them (enrich/pods.py)
    ("pod_name", str, ""),
    ("cgroup", str, ""),  # its cgroup v2 path
)


def _role_fields(role: str) -> list[tuple[str, type, object]]:
    extra = TRACEE_ONLY_FIELDS if role == "tracee" else ()
    return [(f"{role}_{name}", typ, default) for name, typ, default in PROCESS_FIELDS + extra]


# The event's fields in order (the jsonl key order). Unknown values are 0 or ""
# — never invented.
_FIELDS: list[tuple[str, type, object]] = [
    ("timestamp", U64, 0),  # ns since epoch when the tracee generated it (fa_resp: when answered)
    ("type", str, "inotify"),  # inotify | fanotify | fa_resp | fim
    *_role_fields("tracer"),
    *_role_fields("tracee"),
    ("prio", U32, 0),  # fsnotify group priority
    # inotify: struct inotify_event fields, and the inodes (64-bit)
    ("i_wd", S32, 0),  # -1 on a queue overflow
    ("i_mask", U32, 0),
    ("i_cookie", U32, 0),
    ("i_ino", U64, 0),
    ("i_ino_dir", U64, 0),
    ("i_mask_names", list[str], []),
    # fanotify: struct fanotify_event_metadata fields and the group's flags
    ("fa_type", str, ""),
    ("fa_mask", U64, 0),
    ("fa_pid", S32, 0),
    ("fa_flags", U32, 0),
    ("fa_f_flags", U32, 0),
    ("fa_mask_names", list[str], []),
    ("fa_response", str, "na"),  # na | allow | deny | interrupted
    ("name", str, ""),  # inotify: relative to the watched object; fanotify: full path
    ("path", str, ""),  # full path when resolvable, as the tracer sees it
    ("host_path", str, ""),  # the same in the agent's mount namespace, when the tracer's is another
    ("attribution", str, "unknown"),  # exact | inferred | unknown: how the tracee was found
    # watch mode (type "fim", fim/): one change to a watched file, with its facts
    ("action", str, ""),  # created | modified | deleted | renamed | attributes
    ("origin", str, ""),  # live (seen as it happened) | scan (found against the baseline)
    ("old_path", str, ""),  # renamed: the path before
    ("file_size", U64, 0),  # the file after the change (lstat)
    ("file_mode", U32, 0),  # st_mode
    ("file_uid", U32, 0),
    ("file_gid", U32, 0),
    ("file_mtime", S64, 0),  # ns since the epoch
    ("file_ino", U64, 0),
    ("file_hashes", dict[str, str], {}),  # algorithm -> lowercase hex
    ("hash_skipped", str, ""),  # "" | too_large | vanished | unreadable | not_regular
    ("tags", list[str], []),  # the watched path's tags
    ("severity", str, ""),  # the record's severity when not the default (trace..fatal)
    ("rules", list[str], []),  # ids of the Sigma rules the event matched (rules/)
]

# One fsnotify event, linked to its tracee (actor) and tracer (reader).
Event = msgspec.defstruct(
    "Event", _FIELDS, module=__name__, omit_defaults=False, forbid_unknown_fields=True, gc=False)

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


def utf8_text(s: str) -> str:
    """A str that may hold bytes that were not UTF-8 (os.fsdecode's
    surrogates), with those bytes written as \\xNN: what encoders can take."""
    return s.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def utf8_event(event: Event) -> Event:
    """The event with every text field made UTF-8 (utf8_text)."""
    changes = {}
    for name in FIELD_NAMES:
        value = getattr(event, name)
        if isinstance(value, str):
            fixed = utf8_text(value)
            if fixed != value:
                changes[name] = fixed
        elif isinstance(value, list) and any(isinstance(v, str) for v in value):
            changes[name] = [utf8_text(v) for v in value]
        elif isinstance(value, dict):
            changes[name] = {utf8_text(k): utf8_text(v) for k, v in value.items()}
    return msgspec.structs.replace(event, **changes)


class CaptureError(ValueError):
    """A capture (jsonl) file line that is not an Event."""

    def __init__(self, source: str, lineno: int, reason: str):
        super().__init__(f"{source}:{lineno}: not an otel-fsnotify event: {reason}")
        self.source = source
        self.lineno = lineno


_U64_FIELDS = tuple(name for name, typ, _d in _FIELDS if typ is U64)
_U64_MAX = (1 << 64) - 1


def from_json_line(line: bytes | str, source: str = "<input>", lineno: int = 0) -> Event:
    try:
        ev = _decoder.decode(line)
    except msgspec.DecodeError as exc:
        raise CaptureError(source, lineno, str(exc)) from None
    for name in _U64_FIELDS:  # msgspec bounds stop at int64: the top of u64 here
        if getattr(ev, name) > _U64_MAX:
            raise CaptureError(source, lineno, f"Expected `int` <= {_U64_MAX} - at `$.{name}`")
    return ev


_u64_values = operator.attrgetter(*_U64_FIELDS)
CHUNK_BYTES = 1 << 20


def iter_capture_chunks(path: str, chunk_bytes: int = CHUNK_BYTES):
    """Yield lists of (lineno, Event) from a jsonl capture, about
    chunk_bytes of lines at a time; blank lines are skipped.

    Raises CaptureError naming the file and line of the first bad record."""
    decode = _decoder.decode
    lineno = 0
    with open(path, "rb") as fh:
        while True:
            lines = fh.readlines(chunk_bytes)
            if not lines:
                return
            first = lineno + 1
            lineno += len(lines)
            try:
                out = [(n, decode(line)) for n, line in enumerate(lines, first) if line.strip()]
                if out and max(map(max, map(_u64_values, (ev for _n, ev in out)))) > _U64_MAX:
                    raise ValueError  # a u64 field out of range: find it line by line
            except (msgspec.DecodeError, ValueError):  # line by line: the bad one named
                out = []
                for n, line in enumerate(lines, first):
                    if line.strip():
                        try:
                            out.append((n, from_json_line(line, path, n)))
                        except CaptureError:
                            if out:
                                yield out  # the good lines before it
                            raise
            yield out


def iter_capture(path: str):
    """Yield (lineno, Event) from a jsonl capture; blank lines are skipped.

    Raises CaptureError naming the file and line of the first bad record.
    """
    for chunk in iter_capture_chunks(path):
        yield from chunk
