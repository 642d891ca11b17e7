"""Agent configuration: a TOML file with the same options as the flags.

Precedence: built-in defaults < OTEL_* environment variables (OTLP settings
only) < config file < command-line flags. A bad key or value is reported as one
line naming the file and the key, and the CLI exits 2.
"""

from __future__ import annotations

import math
import os
import tomllib
from typing import Any, Union

import msgspec

from .backends import CHOICES as BACKEND_CHOICES
from .backends.base import DEFAULT_RING_MIB, MAX_PID_FILTERS, Filters
from .enrich.selection import COMM_MAX
from .table import TABLE_FIELDS
from .fim.excludes import ExcludeError, Excludes
from .fim.hashing import ALGORITHMS, DEFAULT_MAX_FILE_SIZE
from .otel.mapping import SEVERITY_NUMBERS

OUTPUTS = ("otlp", "jsonl", "table")
RING_MIB_CHOICES = tuple(1 << i for i in range(11))  # 1 MiB .. 1 GiB: a ring buffer is a power of two
MAX_SECONDS = 10 * 365 * 86400.0  # durations and intervals: finite, under ten years
# The seed gadget's column names, accepted so its users' --fields carry over.
FIELD_ALIASES = {"type_str": "type", "fa_type_str": "fa_type", "fa_response_str": "fa_response"}


class ConfigError(ValueError):
    """One line saying which key or value is wrong, and where."""


class FilterConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    tracer_pid: list[int] = []
    tracee_pid: list[int] = []
    tracer_group: str = ""  # struct fsnotify_group address, hex ("0xffff...")
    inotify_only: bool = False
    fanotify_only: bool = False
    # scope: only events whose actor is in this cgroup / container / pod (enrich/scope.py)
    cgroup: str = ""
    container_id: str = ""
    pod_uid: str = ""
    this_pod: bool = False
    # what a person selects (enrich/selection.py): files under these paths,
    # actors with these command names or effective uids, watchers by name
    path: list[str] = []
    comm: list[str] = []
    exclude_comm: list[str] = []
    tracer_comm: list[str] = []
    uid: list[int] = []


class FimPath(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """A watched path with what its events carry."""

    path: str
    tags: list[str] = []
    severity: str = ""  # the records' severity: trace, debug, info, warn, error, fatal


class FimConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Watch mode (`[fim]`, `--watch`): paths are strings or {path, tags, severity}."""

    paths: list[Union[str, FimPath]] = []
    exclude: list[str] = []
    hash: list[str] = msgspec.field(default_factory=lambda: ["sha256"])
    max_file_size: int = DEFAULT_MAX_FILE_SIZE  # bytes; larger files get metadata, no hash
    scan_rate: float = 0.0  # bytes/s hashed during scans; 0 = as fast as the disk goes
    state_dir: str = ""  # where the baseline lives; "" = default_state_dir()
    only: bool = False  # --fim-only: no events of other listeners


def default_state_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/otel-fsnotify/fim"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "otel-fsnotify", "fim")


class RulesConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    """Sigma rules run in the agent (`[rules]`, `--rules`)."""

    paths: list[str] = []  # rule files or directories
    alerts_only: bool = False  # --alerts-only: only events that matched a rule


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    backend: str = "auto"
    output: str = "otlp"
    output_file: str = ""  # jsonl/table destination; "" = stdout
    fields: list[str] = []  # table columns; [] = each row's own (table.py DEFAULT_COLUMNS)
    duration: float = 0.0  # seconds; 0 = until SIGINT/SIGTERM
    stats_interval: float = 60.0  # seconds between loss/throughput log lines; 0 = only at exit
    log_level: str = "info"
    health_listen: str = ""  # [ADDRESS:]PORT of /healthz and /readyz; "" = off
    pod_log_dir: str = "/var/log/pods"  # the kubelet's: names the pods on this node (enrich/pods.py)
    kernel_headers: str = ""  # the headers tree bcc compiles against; "" = the running kernel's (kernel/bcc.py)
    ring_buffer_mib: int = DEFAULT_RING_MIB  # the kernel-to-agent ring buffer (backends/base.py)
    filters: FilterConfig = msgspec.field(default_factory=FilterConfig)
    fim: FimConfig = msgspec.field(default_factory=FimConfig)
    rules: RulesConfig = msgspec.field(default_factory=RulesConfig)
    # OTLP delivery settings; keys are OtlpSettings fields (see delivery/settings.py).
    otlp: dict[str, Any] = {}


def _check(cfg: AgentConfig, where: str) -> AgentConfig:
    if cfg.backend not in BACKEND_CHOICES:
        raise ConfigError(f"{where}: backend = {cfg.backend!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    if cfg.output not in OUTPUTS:
        raise ConfigError(f"{where}: output = {cfg.output!r}: expected one of {', '.join(OUTPUTS)}")
    fields = [FIELD_ALIASES.get(f, f) for f in cfg.fields]
    bad = [f for f in fields if f not in TABLE_FIELDS]
    if bad:
        raise ConfigError(f"{where}: fields: unknown field {bad[0]!r} (--fields help lists them)")
    cfg.fields = fields
    for key in ("duration", "stats_interval"):
        value = getattr(cfg, key)
        if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
            raise ConfigError(f"{where}: {key} = {value}: must be a number of seconds from 0 "
                              f"to {MAX_SECONDS:g}")
    if cfg.ring_buffer_mib not in RING_MIB_CHOICES:
        raise ConfigError(f"{where}: ring_buffer_mib = {cfg.ring_buffer_mib}: expected a power of two "
                          f"from 1 to {RING_MIB_CHOICES[-1]}")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: log_level = {cfg.log_level!r}: expected debug, info, warning or error")
    if cfg.otlp:
        from .delivery.settings import OtlpSettings

        try:  # the file's/flags' own keys, without the environment's
            OtlpSettings.from_env({}, **cfg.otlp)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    _check_fim(cfg.fim, where)
    if cfg.health_listen:
        from .health import HealthError, parse_listen

        try:
            parse_listen(cfg.health_listen)
        except HealthError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    if cfg.rules.alerts_only and not cfg.rules.paths:
        raise ConfigError(f"{where}: rules alerts_only (--alerts-only) needs rules (--rules)")
    f = cfg.filters
    if f.inotify_only and f.fanotify_only:
        raise ConfigError(f"{where}: inotify_only and fanotify_only exclude each other")
    if f.tracer_group:
        parse_group(f.tracer_group, where)
    _check_selection(f, where)
    for key in ("tracer_pid", "tracee_pid"):
        if len(getattr(f, key)) > MAX_PID_FILTERS:
            raise ConfigError(f"{where}: filters.{key}: at most {MAX_PID_FILTERS} pids "
                              "(the in-kernel filter map's size)")
        for pid in getattr(f, key):
            if not 0 < pid < 1 << 32:
                raise ConfigError(f"{where}: filters.{key}: {pid} is not a pid")
    return cfg


def _check_selection(f: FilterConfig, where: str) -> None:
    for i, path in enumerate(f.path):
        if not path.startswith("/"):
            raise ConfigError(f"{where}: filters.path: {path!r}: give an absolute path")
        f.path[i] = os.path.normpath(path).replace("//", "/")
    for key in ("comm", "exclude_comm", "tracer_comm"):
        for name in getattr(f, key):
            if not name or len(name.encode()) > COMM_MAX:
                raise ConfigError(f"{where}: filters.{key}: {name!r}: a command name is 1 to {COMM_MAX} "
                                  f"bytes (the kernel cuts longer names: use the first {COMM_MAX})")
    for uid in f.uid:
        if not 0 <= uid < (1 << 32) - 1:
            raise ConfigError(f"{where}: filters.uid: {uid} is not a uid")
    for key in ("comm", "exclude_comm", "tracer_comm", "uid"):
        if len(getattr(f, key)) > MAX_PID_FILTERS:
            raise ConfigError(f"{where}: filters.{key}: at most {MAX_PID_FILTERS} (the in-kernel filter map's size)")


def _check_fim(fim: FimConfig, where: str) -> None:
    paths: list[FimPath] = []
    for item in fim.paths:
        entry = FimPath(path=item) if isinstance(item, str) else item
        if not entry.path.startswith("/"):
            raise ConfigError(f"{where}: fim.paths: {entry.path!r}: give an absolute path")
        entry.path = os.path.normpath(entry.path).replace("//", "/")
        if not os.path.lexists(entry.path):
            raise ConfigError(f"{where}: fim.paths: {entry.path}: no such file or directory")
        if entry.severity and entry.severity not in SEVERITY_NUMBERS:
            raise ConfigError(f"{where}: fim.paths: {entry.path}: severity {entry.severity!r}: expected "
                              f"one of {', '.join(SEVERITY_NUMBERS)}")
        if any(p.path == entry.path for p in paths):
            raise ConfigError(f"{where}: fim.paths: {entry.path} is given twice")
        paths.append(entry)
    fim.paths = paths
    if fim.only and not paths:
        raise ConfigError(f"{where}: fim only (--fim-only) needs at least one watched path (--watch)")
    bad = [a for a in fim.hash if a not in ALGORITHMS]
    if bad or not fim.hash:
        raise ConfigError(f"{where}: fim.hash: {bad[0] if bad else '(none)'!r}: expected one or more "
                          f"of {', '.join(ALGORITHMS)}")
    if fim.max_file_size < 0:
        raise ConfigError(f"{where}: fim.max_file_size = {fim.max_file_size}: must be 0 or more bytes")
    if not (math.isfinite(fim.scan_rate) and fim.scan_rate >= 0):
        raise ConfigError(f"{where}: fim.scan_rate = {fim.scan_rate}: must be 0 (unlimited) or more "
                          "bytes per second")
    if fim.state_dir and not fim.state_dir.startswith("/"):
        raise ConfigError(f"{where}: fim.state_dir: {fim.state_dir!r}: give an absolute path")
    try:
        Excludes(fim.exclude, [p.path for p in paths] or ["/"])
    except ExcludeError as exc:
        raise ConfigError(f"{where}: fim.{exc}") from None


def parse_group(text: str, where: str = "--tracer-group") -> int:
    try:
        value = int(text, 0)
    except ValueError:
        raise ConfigError(f"{where}: tracer_group {text!r} is not an address (e.g. 0xffff8881234abcd0)") from None
    if value <= 0:
        raise ConfigError(f"{where}: tracer_group {text!r} is not an address")
    return value


def _msgspec_path(err: str) -> str:
    # msgspec: "Expected `int`, got `str` - at `$.filters.tracer_pid[0]`"
    msg, _, path = err.partition(" - at `")
    path = path.rstrip("`").removeprefix("$").lstrip(".")
    if msg.startswith("Object contains unknown field"):
        key = msg.split("`")[1]
        full = f"{path}.{key}" if path else key
        return f"unknown key {full!r}"
    return f"{path or 'value'}: {msg[0].lower() + msg[1:]}" if msg else err


def load(path: str | None) -> AgentConfig:
    """Read and validate a TOML config file (None: defaults)."""
    if not path:
        return _check(AgentConfig(), "defaults")
    try:
        with open(path, "rb") as fh:
            raw = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from None
    return from_mapping(raw, path)


def from_mapping(raw: Any, where: str) -> AgentConfig:
    """A config from parsed TOML (tables as dicts); ConfigError naming `where`."""
    try:
        cfg = msgspec.convert(raw, AgentConfig)
    except msgspec.ValidationError as exc:
        raise ConfigError(f"{where}: {_msgspec_path(str(exc))}") from None
    return _check(cfg, where)


def apply_overrides(cfg: AgentConfig, where: str, **flags: Any) -> AgentConfig:
    """Flags override the file; None means 'not given'."""
    filter_keys = set(FilterConfig.__struct_fields__)
    for key, value in flags.items():
        if value is None:
            continue
        if key.startswith("fim_"):
            setattr(cfg.fim, key.removeprefix("fim_"), value)
        elif key.startswith("rules_"):
            setattr(cfg.rules, key.removeprefix("rules_"), value)
        elif key in filter_keys:
            setattr(cfg.filters, key, value)
        elif key.startswith("otlp_"):
            cfg.otlp = {**cfg.otlp, key.removeprefix("otlp_"): value}
        else:
            setattr(cfg, key, value)
    return _check(cfg, where)


def filters_of(cfg: AgentConfig) -> Filters:
    f = cfg.filters
    return Filters(tracer_pids=tuple(f.tracer_pid), tracee_pids=tuple(f.tracee_pid),
                   tracer_group=parse_group(f.tracer_group) if f.tracer_group else 0,
                   inotify_only=f.inotify_only, fanotify_only=f.fanotify_only,
                   tracer_comms=tuple(f.tracer_comm), tracee_comms=tuple(f.comm),
                   exclude_comms=tuple(f.exclude_comm), tracee_uids=tuple(f.uid),
                   fim_only=cfg.fim.only)
