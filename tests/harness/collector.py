"""A real OTLP collector for tests: rotel-agent on loopback.

`Rotel(workdir)` runs the `rotel-agent` binary shipped by the PyPI package
`rotel` with its gRPC and HTTP receivers on free loopback ports, the blackhole
exporter, and the detailed debug log, which prints every received log record
(resource, scope, timestamps, severity, EventName, body, attributes including
arrays as ``Slice(...)``). The helper parses that log back into `Record`s.

Verified with rotel 0.0.1a15 (agent 0.0.1-alpha10): EventName and array
attributes are printed. Known limits of reading the debug log:
- a string value containing a newline is printed on several lines; the parser
  joins continuation lines back with "\\n", so newlines survive, but a value
  whose continuation line itself looks like ``     -> key: Str(...)`` would be
  misread (our events never contain such names in tests);
- inside ``Slice(...)`` the items are split on ``), `` boundaries, so an array
  item that itself contains ``), Str(`` would be split wrongly.

API (stable; other tests import it):
    r = Rotel(tmp_path); r.start()
    r.grpc_endpoint   -> "http://127.0.0.1:P"
    r.http_endpoint   -> "http://127.0.0.1:Q"
    r.records()       -> list[Record] received so far (all log records)
    r.uids()          -> list[str] of every log.record.uid seen (fast scan)
    r.wait_for_records(n, timeout) / r.wait_for_uids(n, timeout)
    r.metric_names()  -> set of metric names received (debug log of metrics)
    r.stop(); r.restart()  (same ports; the log file keeps earlier records)
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


def rotel_binary() -> str:
    """Path of rotel-agent from the installed `rotel` package (or $ROTEL_AGENT)."""
    env = os.environ.get("ROTEL_AGENT")
    if env:
        return env
    try:
        import rotel  # noqa: F401  (PyPI package `rotel`)

        cand = Path(rotel.__file__).resolve().parent / "rotel-agent"
        if cand.exists():
            return str(cand)
    except ImportError:
        pass
    cand = Path(sys.prefix) / "lib" / f"python{sys.version_info.major}.{sys.version_info.minor}" \
        / "site-packages" / "rotel" / "rotel-agent"
    if cand.exists():
        return str(cand)
    raise FileNotFoundError("rotel-agent not found: pip install rotel (test extra)")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Record:
    """One log record as the collector received it."""

    resource: dict[str, Any] = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    timestamp: int = 0
    observed_timestamp: int = 0
    severity_text: str = ""
    severity_number: int = 0
    event_name: str = ""
    body: Any = None
    attributes: dict[str, Any] = field(default_factory=dict)

    @property
    def uid(self) -> str | None:
        return self.attributes.get("log.record.uid")


# ---------------------------------------------------------------- log parser

_ANSI_LOG = re.compile(r"^(\x1b\[|\d{4}-\d\d-\d\dT)")
_ATTR = re.compile(r"^     -> (.+?): (.*)$")
_VALUE = re.compile(r"^(Str|Int|Double|Bool|Bytes|Slice|Map|Empty)\((.*)\)$", re.S)


def _split_items(inner: str) -> list[str]:
    """Split 'Str(a), Int(1), Slice(Str(b))' into top-level items (paren depth)."""
    items, depth, start = [], 0, 0
    i = 0
    while i < len(inner):
        c = inner[i]
        if c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "," and depth == 0 and inner.startswith(", ", i):
            items.append(inner[start:i])
            start = i + 2
            i += 1
        i += 1
    if inner[start:]:
        items.append(inner[start:])
    return items


def parse_value(text: str) -> Any:
    """rotel debug value -> Python value (Str->str, Int->int, Slice->list...)."""
    m = _VALUE.match(text)
    if not m:
        return text
    kind, inner = m.groups()
    if kind == "Str":
        return inner
    if kind == "Int":
        return int(inner)
    if kind == "Double":
        return float(inner)
    if kind == "Bool":
        return inner == "true"
    if kind == "Slice":
        if inner.startswith("Str("):
            # strings may contain parens: split on the item separator only
            parts = inner[4:-1].split("), Str(") if inner.endswith(")") else [inner]
            return parts
        return [parse_value(x) for x in _split_items(inner)]
    if kind == "Empty":
        return None
    return inner


def _severity_number(text: str) -> int:
    m = re.search(r"\((\d+)\)", text)  # "Info (9)"
    return int(m.group(1)) if m else 0


# one-line fields of a log record: (line prefix, Record attribute, parser of the rest)
_RECORD_FIELDS = (
    ("ObservedTimestamp: ", "observed_timestamp", lambda v: int(v or 0)),
    ("Timestamp: ", "timestamp", lambda v: int(v or 0)),
    ("SeverityText: ", "severity_text", str),
    ("SeverityNumber: ", "severity_number", _severity_number),
    ("EventName: ", "event_name", str),
)


_STRUCTURE_ONLY = ("ScopeLogs #", "ScopeLogs SchemaURL", "Resource SchemaURL")
_RECORD_END = ("    Trace ID", "    Span ID", "Flags: ")


class _DebugLogParser:
    """rotel's detailed logs debug output, a line at a time."""

    def __init__(self):
        self.records: list[Record] = []
        self.resource: dict[str, Any] = {}
        self.scope = ("", "")
        self.section = None  # "resource" | "attributes"
        self.cur: Record | None = None
        self.last: tuple[dict, str] | None = None  # (dict, key) a continuation line extends

    def line(self, line: str) -> None:
        if _ANSI_LOG.match(line) or self._structure(line):
            return
        m = _ATTR.match(line)
        if m and self.section in ("resource", "attributes"):
            key, val = m.groups()
            target = self.resource if self.section == "resource" else self.cur.attributes
            target[key] = val
            self.last = (target, key)
        elif self.cur is None or not self._record_line(line):
            if self.last is not None:
                target, key = self.last
                target[key] = target[key] + "\n" + line

    def _structure(self, line: str) -> bool:
        """Resource / scope / record boundaries; True when the line was one."""
        if line.startswith("ResourceLog #"):
            self.resource, self.section, self.last, self.cur = {}, None, None, None
        elif line == "Resource attributes:":
            self.section = "resource"
        elif line.startswith("InstrumentationScope "):
            parts = line.split(" ")
            self.scope = (parts[1] if len(parts) > 1 else "", parts[2] if len(parts) > 2 else "")
            self.last = None
        elif line.startswith("LogRecord #"):
            self.cur = Record(resource=self.resource, scope_name=self.scope[0],
                              scope_version=self.scope[1])
            self.records.append(self.cur)
            self.section, self.last = None, None
        elif line.startswith(_STRUCTURE_ONLY):
            self.last = None
        else:
            return False
        return True

    def _record_line(self, line: str) -> bool:
        """A field of the current log record; True when the line was one."""
        cur = self.cur
        one_line = next((f for f in _RECORD_FIELDS if line.startswith(f[0])), None)
        if one_line:
            prefix, name, convert = one_line
            setattr(cur, name, convert(line[len(prefix):]))
            self.last = None
        elif line.startswith("Body: "):
            cur.body = line.split(": ", 1)[1]
            self.last = (cur.__dict__, "body")
        elif line == "Attributes:":
            self.section, self.last = "attributes", None
        elif line.startswith(_RECORD_END):
            self.section, self.last = None, None
        else:
            return False
        return True


def parse_debug_log(text: str) -> list[Record]:
    """Parse rotel's detailed logs debug output into Records."""
    parser = _DebugLogParser()
    for line in text.split("\n"):
        parser.line(line)
    records = parser.records
    # convert raw value texts
    seen_res: set[int] = set()
    for rec in records:
        if id(rec.resource) not in seen_res:
            seen_res.add(id(rec.resource))
            for k, v in list(rec.resource.items()):
                rec.resource[k] = parse_value(v)
        for k, v in list(rec.attributes.items()):
            rec.attributes[k] = parse_value(v)
        if isinstance(rec.body, str):
            rec.body = parse_value(rec.body)
    return records


_UID_LINE = re.compile(rb"^     -> log\.record\.uid: Str\((.*)\)$", re.M)


def _read_env_file(path) -> dict[str, str]:
    """KEY=VALUE lines (comments and blanks skipped), as `set -a; . file` would."""
    out = {}
    for line in Path(path).read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            out[key.strip()] = value.strip()
    return out


class Rotel:
    """A real rotel-agent on loopback, for tests and benchmarks."""

    def __init__(self, workdir: str | os.PathLike, metrics: bool = True,
                 extra_args: list[str] | None = None, env_file: str | os.PathLike | None = None,
                 env: dict[str, str] | None = None, debug_log: bool = True):
        """env_file: a ROTEL_* configuration (config/collector/*.env) whose
        exporter replaces the blackhole; env: variables over it (the
        receivers always listen on free loopback ports). debug_log=False:
        no record is printed (a benchmark's millions), so none can be read back."""
        self.env = _read_env_file(env_file) if env_file else {}
        self.env.update(env or {})
        self.exporter_from_env = env_file is not None
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.grpc_port = free_port()
        self.http_port = free_port()
        while self.http_port == self.grpc_port:
            self.http_port = free_port()
        self.log_path = self.workdir / "rotel-debug.log"
        self.metrics = metrics
        self.debug_log = debug_log
        self.extra_args = list(extra_args or [])
        self.proc: subprocess.Popen | None = None

    # endpoints ---------------------------------------------------------
    @property
    def grpc_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.grpc_port}"

    @property
    def http_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.http_port}"

    def endpoint(self, protocol: str) -> str:
        """Endpoint for an OTLP protocol name: grpc, http/protobuf, http/json."""
        return self.grpc_endpoint if protocol == "grpc" else self.http_endpoint

    # lifecycle -----------------------------------------------------------
    def _argv(self) -> list[str]:
        argv = [rotel_binary(), "start",
                "--otlp-grpc-endpoint", f"127.0.0.1:{self.grpc_port}",
                "--otlp-http-endpoint", f"127.0.0.1:{self.http_port}",
                "--otlp-grpc-max-recv-msg-size-mib", "64",
                *(() if self.exporter_from_env else ("--exporter", "blackhole")),
                "--pid-file", str(self.workdir / "rotel.pid"),
                "--log-file", str(self.workdir / "rotel-agent.log")]
        if self.debug_log:
            argv += ["--debug-log", "logs"] + (["--debug-log", "metrics"] if self.metrics else [])
            argv += ["--debug-log-verbosity", "detailed"]
        argv += ["--batch-timeout", "50ms"]
        return argv + self.extra_args

    def start(self, timeout: float = 15.0) -> "Rotel":
        if self.proc is not None and self.proc.poll() is None:
            return self
        deadline = time.monotonic() + timeout
        while True:
            out = open(self.log_path, "ab")
            self.proc = subprocess.Popen(self._argv(), stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL, cwd=self.workdir,
                                         start_new_session=True, env={**os.environ, **self.env})
            out.close()
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                if _port_open(self.grpc_port) and _port_open(self.http_port):
                    return self
                time.sleep(0.05)
            if self.proc.poll() is None:
                self.stop()
                raise TimeoutError(f"rotel-agent did not listen within {timeout}s")
            if time.monotonic() >= deadline:
                raise RuntimeError(f"rotel-agent exited {self.proc.returncode}: "
                                   f"see {self.log_path}")
            time.sleep(0.2)  # port still in use by a previous instance: retry

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None

    def restart(self) -> "Rotel":
        self.stop()
        return self.start()

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def __enter__(self) -> "Rotel":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # reading back --------------------------------------------------------
    def raw_log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def records(self) -> list[Record]:
        return parse_debug_log(self.raw_log())

    def uids(self) -> list[str]:
        """Every log.record.uid value received, duplicates included (fast path)."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return []
        return [m.decode() for m in _UID_LINE.findall(data)]

    def record_count(self) -> int:
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return 0
        return data.count(b"\nLogRecord #") + data.startswith(b"LogRecord #")

    def wait_for_uids(self, n: int, timeout: float = 30.0, settle: float = 0.3) -> set[str]:
        """Wait until at least n distinct uids arrived (or timeout); return them."""
        deadline = time.monotonic() + timeout
        got: set[str] = set()
        while time.monotonic() < deadline:
            got = set(self.uids())
            if len(got) >= n:
                time.sleep(settle)
                return set(self.uids())
            time.sleep(0.2)
        return got

    def wait_for_records(self, n: int, timeout: float = 30.0) -> list[Record]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.record_count() >= n:
                return self.records()
            time.sleep(0.1)
        return self.records()

    def metric_names(self) -> set[str]:
        """Names of metrics received (from the metrics debug log)."""
        names = set()
        for m in re.finditer(r"(?m)^\s*-> Name: (\S+)$", self.raw_log()):
            names.add(m.group(1))
        return names
