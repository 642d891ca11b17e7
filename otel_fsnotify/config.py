"""Agent configuration: a TOML file with the same options as the flags.

Precedence: built-in defaults < OTEL_* environment variables (OTLP settings
only) < config file < command-line flags. A bad key or value is reported as one
line naming the file and the key, and the CLI exits 2.
"""

from __future__ import annotations

import math
import tomllib
from typing import Any

import msgspec

from .backends import CHOICES as BACKEND_CHOICES
from .backends.base import MAX_PID_FILTERS, Filters
from .event import FIELD_NAMES

OUTPUTS = ("otlp", "jsonl", "table")
MAX_SECONDS = 10 * 365 * 86400.0  # durations and intervals: finite, under ten years
DEFAULT_TABLE_FIELDS = ("type", "tracer_comm", "tracer_pid", "tracee_comm", "tracee_pid",
                        "i_mask", "fa_mask", "fa_response", "attribution", "name")
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


class AgentConfig(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    backend: str = "auto"
    output: str = "otlp"
    output_file: str = ""  # jsonl/table destination; "" = stdout
    fields: list[str] = msgspec.field(default_factory=lambda: list(DEFAULT_TABLE_FIELDS))
    duration: float = 0.0  # seconds; 0 = until SIGINT/SIGTERM
    stats_interval: float = 60.0  # seconds between loss/throughput log lines; 0 = only at exit
    log_level: str = "info"
    filters: FilterConfig = msgspec.field(default_factory=FilterConfig)
    # OTLP delivery settings; keys are OtlpSettings fields (see delivery/settings.py).
    otlp: dict[str, Any] = {}


def _check(cfg: AgentConfig, where: str) -> AgentConfig:
    if cfg.backend not in BACKEND_CHOICES:
        raise ConfigError(f"{where}: backend = {cfg.backend!r}: expected one of {', '.join(BACKEND_CHOICES)}")
    if cfg.output not in OUTPUTS:
        raise ConfigError(f"{where}: output = {cfg.output!r}: expected one of {', '.join(OUTPUTS)}")
    fields = [FIELD_ALIASES.get(f, f) for f in cfg.fields]
    bad = [f for f in fields if f not in FIELD_NAMES]
    if bad:
        raise ConfigError(f"{where}: fields: unknown field {bad[0]!r} (known: {', '.join(FIELD_NAMES)})")
    cfg.fields = fields
    for key in ("duration", "stats_interval"):
        value = getattr(cfg, key)
        if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
            raise ConfigError(f"{where}: {key} = {value}: must be a number of seconds from 0 "
                              f"to {MAX_SECONDS:g}")
    if cfg.log_level.lower() not in ("debug", "info", "warning", "error"):
        raise ConfigError(f"{where}: log_level = {cfg.log_level!r}: expected debug, info, warning or error")
    if cfg.otlp:
        from .delivery.settings import OtlpSettings

        try:  # the file's/flags' own keys, without the environment's
            OtlpSettings.from_env({}, **cfg.otlp)
        except ValueError as exc:
            raise ConfigError(f"{where}: {exc}") from None
    f = cfg.filters
    if f.inotify_only and f.fanotify_only:
        raise ConfigError(f"{where}: inotify_only and fanotify_only exclude each other")
    if f.tracer_group:
        parse_group(f.tracer_group, where)
    for key in ("tracer_pid", "tracee_pid"):
        if len(getattr(f, key)) > MAX_PID_FILTERS:
            raise ConfigError(f"{where}: filters.{key}: at most {MAX_PID_FILTERS} pids "
                              "(the in-kernel filter map's size)")
        for pid in getattr(f, key):
            if not 0 < pid < 1 << 32:
                raise ConfigError(f"{where}: filters.{key}: {pid} is not a pid")
    return cfg


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
        if key in filter_keys:
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
                   inotify_only=f.inotify_only, fanotify_only=f.fanotify_only)
