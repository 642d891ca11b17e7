"""OTLP delivery settings: one struct built from OTEL_EXPORTER_OTLP_* variables,
then overridden by the config file / command line (same names as the fields).

Precedence: field default < OTEL_EXPORTER_OTLP_<X> < OTEL_EXPORTER_OTLP_LOGS_<X>
< overrides passed to `from_env` (TOML keys and flags; None means "not given").
"""

from __future__ import annotations

import math
import os
import re
import urllib.parse
from typing import Any, Mapping

import msgspec

PROTOCOLS = ("grpc", "http/protobuf", "http/json")
COMPRESSIONS = ("none", "gzip")


class SettingsError(ValueError):
    """A bad OTLP setting; the message is one line naming the key."""


def _default_spool_dir() -> str:
    if os.geteuid() == 0:
        return "/var/lib/otel-fsnotify/spool"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "otel-fsnotify", "spool")


class OtlpSettings(msgspec.Struct, kw_only=True):
    """Where and how events are shipped, and how much the spool may hold.

    Fields (TOML key / override name = field name):

    - endpoint: collector base URL. grpc: ``http(s)://host:4317``; http/*:
      ``http(s)://host:4318`` to which ``/v1/logs`` is appended.
      Env: OTEL_EXPORTER_OTLP_ENDPOINT. Default: localhost on the protocol's port.
    - logs_endpoint: full URL of the logs signal, used as is (no path appended).
      Env: OTEL_EXPORTER_OTLP_LOGS_ENDPOINT. Wins over `endpoint` when set.
    - protocol: ``grpc``, ``http/protobuf`` (both through opentelemetry-exporter-otlp)
      or ``http/json`` (msgspec encoder, the fastest). Env: OTEL_EXPORTER_OTLP_PROTOCOL
      / OTEL_EXPORTER_OTLP_LOGS_PROTOCOL. Default http/protobuf (the OTLP default).
    - headers: extra request headers (gRPC metadata). Env: ``k1=v1,k2=v2``
      (values URL-decoded) in OTEL_EXPORTER_OTLP_HEADERS / ..._LOGS_HEADERS.
    - compression: ``none`` or ``gzip``. Env: OTEL_EXPORTER_OTLP_COMPRESSION.
    - timeout: seconds one export request may take (env value is milliseconds,
      as the OTLP spec says: OTEL_EXPORTER_OTLP_TIMEOUT=10000). Default 10.
    - insecure: gRPC without TLS when the endpoint has no scheme
      (OTEL_EXPORTER_OTLP_INSECURE=true). An ``http://`` endpoint is always plain.
    - certificate: PEM file of CA certificates to trust (OTEL_EXPORTER_OTLP_CERTIFICATE).
    - client_key / client_certificate: PEM files for mutual TLS
      (OTEL_EXPORTER_OTLP_CLIENT_KEY / OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE).
    - spool_dir: directory of the on-disk write-ahead spool. Every event is
      written there before it is sent and removed once the collector
      acknowledged it, so events survive a collector outage and an agent crash.
    - spool_max_bytes: bound on the spool's size on disk (default 1 GiB). When
      full, new events are dropped and counted as ``dropped_spool_full``.
    - spool_segment_bytes: size at which a spool segment file is closed
      (4 MiB, or spool_max_bytes/4 when that is smaller; a value given that is
      larger than spool_max_bytes/4 is refused: a segment only frees its room
      once it is closed and fully acknowledged).
    - spool_fsync: fsync the spool after each batch written (survives power
      loss, not only a crash of the agent; slower). Default false.
    - batch_size: log records per export request (default 1000).
    - batch_linger: seconds to wait for a batch to fill before sending a
      partial one (default 0.2).
    - max_in_flight: export requests sent at once, each on its own
      connection (default 4): the next batches are encoded and sent while
      the collector works on the first. The spool still acknowledges them in
      order, so a batch is never acknowledged before an earlier one.
    - max_backoff: longest wait in seconds between retries of a failed export
      (default 30); a Retry-After from the collector is honoured up to this cap.
    - drain_timeout: seconds `close()` / `replay` wait for the spool to drain
      before giving up (the rest stays in the spool for the next run). Default 60.
    - include_command_line: add ``process.command_line`` (read from /proc when
      the event is received; may carry secrets). Default false.
    - metrics_interval: seconds between exports of the agent's counters as
      OTLP metrics; 0 disables them. Default 30.
    - max_request_bytes: the largest export request sent; a batch that
      encodes larger is split (default 4 MiB, the collectors' default limit
      for a gRPC message).
    """

    endpoint: str = ""
    logs_endpoint: str = ""
    protocol: str = "http/protobuf"
    headers: dict[str, str] = {}
    compression: str = "none"
    timeout: float = 10.0
    insecure: bool = False
    certificate: str = ""
    client_key: str = ""
    client_certificate: str = ""
    spool_dir: str = ""
    spool_max_bytes: int = 1 << 30
    spool_segment_bytes: int = 4 << 20
    spool_fsync: bool = False
    batch_size: int = 1000
    batch_linger: float = 0.2
    max_in_flight: int = 4
    max_backoff: float = 30.0
    drain_timeout: float = 60.0
    include_command_line: bool = False
    metrics_interval: float = 30.0
    max_request_bytes: int = 4 << 20

    # ------------------------------------------------------------------ build
    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> "OtlpSettings":
        """Settings from OTEL_EXPORTER_OTLP_* in `environ`, then `overrides`.

        Raises SettingsError (a ValueError) with one line naming the bad key.
        """
        raw = _from_environment(os.environ if environ is None else environ)
        fields = set(cls.__struct_fields__)
        for key, value in overrides.items():
            if value is None:
                continue
            if key not in fields:
                raise SettingsError(f"otlp.{key}: unknown setting (known: {', '.join(sorted(fields))})")
            if key == "headers" and isinstance(value, str):
                value = parse_headers(value, "otlp.headers")
            raw[key] = value
        try:
            settings = msgspec.convert(raw, cls, strict=False)
        except msgspec.ValidationError as exc:
            msg = str(exc)
            where = msg.rsplit("at `$.", 1)
            if len(where) == 2:
                key = where[1].rstrip("`").split("[")[0].split(".")[0]
                raise SettingsError(f"otlp.{key}: {where[0].strip().rstrip('-').strip()}") from None
            raise SettingsError(f"otlp: {msg}") from None
        if "spool_segment_bytes" not in raw:
            # the default segment size follows a small spool down
            settings.spool_segment_bytes = min(settings.spool_segment_bytes,
                                               max(4096, settings.spool_max_bytes // 4))
        settings.validate()
        return settings

    def validate(self) -> None:
        if self.protocol not in PROTOCOLS:
            raise SettingsError(f"otlp.protocol: {self.protocol!r} is not one of {', '.join(PROTOCOLS)}")
        if self.compression not in COMPRESSIONS:
            raise SettingsError(f"otlp.compression: {self.compression!r} is not one of "
                                f"{', '.join(COMPRESSIONS)}")
        for key in ("endpoint", "logs_endpoint"):
            url = getattr(self, key)
            if url:
                _check_url(url, key, self.protocol)
        self._validate_numbers()
        self._validate_tls_and_headers()

    def _validate_numbers(self) -> None:
        for key, (low, high) in NUMBER_RANGES.items():
            value = getattr(self, key)
            if not (math.isfinite(value) and low <= value <= high):
                raise SettingsError(f"otlp.{key}: must be a number from {low:g} to {high:g}, got {value}")
        if self.timeout == 0:
            raise SettingsError("otlp.timeout: must be > 0")
        if self.max_backoff == 0:
            raise SettingsError("otlp.max_backoff: must be > 0")
        if self.spool_segment_bytes > self.spool_max_bytes // 4:
            raise SettingsError(f"otlp.spool_segment_bytes: must be <= spool_max_bytes/4 "
                                f"({self.spool_max_bytes // 4}), got {self.spool_segment_bytes}")

    def _validate_tls_and_headers(self) -> None:
        for key in ("certificate", "client_key", "client_certificate"):
            path = getattr(self, key)
            if path and not os.path.isfile(path):
                raise SettingsError(f"otlp.{key}: {path}: no such file")
        if bool(self.client_key) != bool(self.client_certificate):
            raise SettingsError("otlp.client_key: client_key and client_certificate go together")
        for k, v in self.headers.items():
            if not _TOKEN.fullmatch(k):
                raise SettingsError(f"otlp.headers: {k!r} is not a valid header name (RFC 9110 token)")
            if _CONTROL.search(v):
                raise SettingsError(f"otlp.headers: the value of {k!r} holds control characters "
                                    "(CR, LF...), refused")

    # -------------------------------------------------------------- resolved
    def logs_url(self) -> str:
        """The URL the logs go to (gRPC: scheme://host:port)."""
        if self.logs_endpoint:
            return _with_scheme(self.logs_endpoint, self)
        if self.protocol == "grpc":
            return _with_scheme(self.endpoint or "http://localhost:4317", self)
        base = _with_scheme(self.endpoint or "http://localhost:4318", self)
        return base.rstrip("/") + "/v1/logs"

    def metrics_url(self) -> str:
        """Where metrics go: the logs endpoint's collector, /v1/metrics for HTTP."""
        if self.protocol == "grpc":
            return self.logs_url()
        if self.logs_endpoint and not self.endpoint:
            u = urllib.parse.urlsplit(_with_scheme(self.logs_endpoint, self))
            return urllib.parse.urlunsplit((u.scheme, u.netloc, "/v1/metrics", "", ""))
        base = _with_scheme(self.endpoint or "http://localhost:4318", self)
        return base.rstrip("/") + "/v1/metrics"

    def resolved_spool_dir(self) -> str:
        return self.spool_dir or _default_spool_dir()



# OTEL_EXPORTER_OTLP_<NAME> (or its _LOGS_ variant, which wins) -> setting
_ENV_STRINGS = (("CERTIFICATE", "certificate"), ("CLIENT_KEY", "client_key"),
                ("CLIENT_CERTIFICATE", "client_certificate"), ("PROTOCOL", "protocol"))


def _from_environment(env: Mapping[str, str]) -> dict[str, Any]:
    """The settings the standard OTEL_EXPORTER_OTLP_* variables give."""
    raw: dict[str, Any] = {}

    def pick(name: str) -> tuple[str, str] | None:
        for var in (f"OTEL_EXPORTER_OTLP_LOGS_{name}", f"OTEL_EXPORTER_OTLP_{name}"):
            val = env.get(var)
            if val is not None and val.strip() != "":
                return var, val.strip()
        return None

    # the signal-specific endpoint is used as is; the generic one gets /v1/logs
    for var, key in (("OTEL_EXPORTER_OTLP_LOGS_ENDPOINT", "logs_endpoint"),
                     ("OTEL_EXPORTER_OTLP_ENDPOINT", "endpoint")):
        got = env.get(var, "").strip()
        if got:
            raw[key] = got
    for name, key in _ENV_STRINGS:
        if (p := pick(name)):
            raw[key] = p[1]
    if (p := pick("HEADERS")):
        raw["headers"] = parse_headers(p[1], p[0])
    if (p := pick("COMPRESSION")):
        raw["compression"] = p[1].lower()
    if (p := pick("TIMEOUT")):
        try:
            raw["timeout"] = float(p[1]) / 1000.0
        except ValueError:
            raw["timeout"] = math.nan
        if not math.isfinite(raw["timeout"]) or raw["timeout"] <= 0:
            raise SettingsError(f"{p[0]}: {p[1]!r} is not a number of milliseconds") from None
    if (p := pick("INSECURE")):
        raw["insecure"] = _parse_bool(p[1], p[0])
    return raw


def _with_scheme(url: str, s: OtlpSettings) -> str:
    if "://" in url:
        return url
    # gRPC endpoints are often given as host:port; OTEL_EXPORTER_OTLP_INSECURE decides.
    return ("http://" if s.insecure else "https://") + url


# number settings: (lowest, highest) accepted; every one must be finite
NUMBER_RANGES: dict[str, tuple[float, float]] = {
    "timeout": (0, 3600), "batch_linger": (0, 60), "max_backoff": (0, 3600),
    "drain_timeout": (0, 7 * 86400), "metrics_interval": (0, 86400),
    "batch_size": (1, 100_000), "max_in_flight": (1, 64), "spool_max_bytes": (64 * 1024, 1 << 50),
    "spool_segment_bytes": (4096, 1 << 40), "max_request_bytes": (64 * 1024, 1 << 30),
}
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")  # RFC 9110 field name
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


def _check_url(url: str, key: str, protocol: str) -> None:
    if _CONTROL.search(url) or any(c.isspace() for c in url):
        raise SettingsError(f"otlp.{key}: {url!r}: spaces or control characters in a URL")
    probe = url if "://" in url else "https://" + url
    u = urllib.parse.urlsplit(probe)
    if u.scheme not in ("http", "https"):
        raise SettingsError(f"otlp.{key}: {url!r}: scheme must be http or https")
    if not u.hostname:
        raise SettingsError(f"otlp.{key}: {url!r}: no host")
    try:
        u.port
    except ValueError:
        raise SettingsError(f"otlp.{key}: {url!r}: bad port") from None
    if u.username or u.password:
        raise SettingsError(f"otlp.{key}: credentials in the URL are not sent: use headers")


def parse_headers(text: str, where: str) -> dict[str, str]:
    """``k1=v1,k2=v2`` (W3C baggage-like, values URL-decoded) -> dict."""
    out: dict[str, str] = {}
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        if "=" not in item:
            raise SettingsError(f"{where}: {item!r} is not key=value")
        k, v = item.split("=", 1)
        k = urllib.parse.unquote(k.strip())
        if not k:
            raise SettingsError(f"{where}: {item!r} has an empty key")
        out[k] = urllib.parse.unquote(v.strip())
    return out


def _parse_bool(text: str, where: str) -> bool:
    t = text.strip().lower()
    if t in ("true", "1", "yes", "on"):
        return True
    if t in ("false", "0", "no", "off", ""):
        return False
    raise SettingsError(f"{where}: {text!r} is not true or false")
