"""The `run` job: one backend feeding one output until told to stop.

    backend (kernel hooks -> Event) -----------------------> rules -> output (table | jsonl | OTLP)
    watch mode (fim/: the agent's own fanotify group) --^    (Sigma: ids, severity; --alerts-only)
                                   (its actors from the backend)

Loss counters of both sides are logged every `stats_interval` seconds and
printed once at exit as `otel-fsnotify: stats {json}` on stderr.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import time

import msgspec

from . import backends
from .config import AgentConfig, ConfigError, default_state_dir, filters_of
from .delivery.settings import OtlpSettings
from .enrich import pods
from .enrich.mounts import HostPaths
from .enrich.scope import kernel_cgroup
from .enrich.scope import resolve as resolve_scope
from .enrich.selection import Selection
from .kernel import bcc, probes
from .outputs import JsonlOutput, OtlpOutput, TableOutput
from .quiet_gc import quiet_gc
from .status import StatusLine

log = logging.getLogger("otel_fsnotify")

POLL_MS = 200
LOSS_CHECK_S = 1.0  # how often watch mode looks for ring buffer losses (then it rescans)


def make_output(cfg: AgentConfig, backend_name: str, settings=None):
    """The configured output; OutputUnusable (one line) when it cannot be
    opened. settings: the OTLP settings already checked (otlp output)."""
    if cfg.output in ("jsonl", "table"):
        try:
            if cfg.output == "jsonl":
                return JsonlOutput(cfg.output_file)
            return TableOutput(cfg.fields, cfg.output_file)
        except OSError as exc:
            raise OutputUnusable(f"output_file {cfg.output_file}: {exc.strerror}") from None
    from .otel.resource import build_resource

    try:
        return OtlpOutput(settings, build_resource(backend=backend_name), log)
    except OSError as exc:
        raise OutputUnusable(f"spool_dir {settings.resolved_spool_dir()}: {exc.strerror} "
                             "(set --spool-dir or [otlp] spool_dir to a writable directory)") from None


class OutputUnusable(RuntimeError):
    """The output file or the OTLP spool directory cannot be opened."""


class _Stop:
    def __init__(self):
        self.requested = False

    def __call__(self, signum, _frame):
        if self.requested:  # second signal: stop waiting for a flush
            raise KeyboardInterrupt
        self.requested = True
        log.info("received %s, stopping", signal.Signals(signum).name)


def start_fim(cfg: AgentConfig):
    """Watch mode's monitor with its group and marks in place (before the
    backend starts: the backend learns the group), or None without paths."""
    if not cfg.fim.paths:
        return None
    from .fim.excludes import Excludes
    from .fim.hashing import Hasher
    from .fim.monitor import FimMonitor, Watched

    f = cfg.fim
    watched = [Watched(p.path, tuple(p.tags), p.severity) for p in f.paths]
    monitor = FimMonitor(watched, Excludes(f.exclude, [w.path for w in watched]),
                         Hasher(f.hash, f.max_file_size), Hasher(f.hash, f.max_file_size, f.scan_rate),
                         f.state_dir or default_state_dir(), log)
    try:
        monitor.start()
    except BaseException:
        monitor.close()
        raise
    return monitor


def load_rules(cfg: AgentConfig, include_command_line: bool):
    """The Sigma rules, compiled, and their names made known to the OTLP
    mapping (security_rule.*); None without rules. RuleError: one line."""
    if not cfg.rules.paths:
        return None
    from .otel.mapping import register_rules
    from .rules.engine import RuleSet

    from .enrich.procs import command_line

    rules = RuleSet.load(cfg.rules.paths, command_line=command_line if include_command_line else None,
                         log=log)
    register_rules({r.id: (r.title, r.ruleset) for r in rules.rules})
    log.info("rules: %d Sigma rules loaded from %s", len(rules.rules), ", ".join(cfg.rules.paths))
    return rules


class _Sink:
    """Events on their way out: a tracer in another mount namespace or under
    another root (chroot) gets the host's path beside its own, those whose
    actor is out of scope are left out (counted), the rules mark the rest (and
    --alerts-only keeps only the marked, counting the others), then the output."""

    def __init__(self, output, rules, alerts_only: bool, scope=None, selection=None):
        self.output = output
        self.selection = selection if selection else None
        self.rules = rules
        self.alerts_only = alerts_only
        self.scope = scope if scope else None
        self.host_paths = HostPaths()
        self.not_alerts = 0  # events --alerts-only did not ship (counted, by design)
        self.out_of_scope = 0  # events whose actor is outside --cgroup/--pod-uid/... (by design)

    def __call__(self, events) -> None:
        write = self.output.write
        own_ns = self.host_paths.own_ns
        host_path = self.host_paths
        apply = self.rules.apply if self.rules is not None else None
        holds = self.scope.holds if self.scope is not None else None
        selected = self.selection.holds if self.selection is not None else None
        for event in events:
            # inotify paths are the watch's as its owner sees it: under a chroot
            # too (fanotify's come with their host path from the kernel's walk)
            if event.path and (event.tracer_mntns_id != own_ns or event.type == "inotify"):
                event = host_path(event)
            if holds is not None and not holds(event):
                self.out_of_scope += 1
                continue
            if selected is not None and not selected(event):
                continue
            if apply is not None:
                event = apply(event)
                if self.alerts_only and not event.rules:
                    self.not_alerts += 1
                    continue
            write(event)

    def close(self) -> None:
        self.host_paths.close()

    def counters(self) -> dict[str, int]:
        out = dict(self.rules.counters) if self.rules is not None else {}
        out["host_path_unmounted"] = self.host_paths.unmounted
        if self.alerts_only:
            out["alerts_only_not_shipped"] = self.not_alerts
        if self.scope is not None:
            out["filtered_scope"] = self.out_of_scope
        if self.selection is not None:
            out["filtered_selection"] = self.selection.left_out
        return out


def run(cfg: AgentConfig) -> int:
    # A file output is opened, OTLP settings (flags, file, environment) and
    # the rules checked, before any BPF is loaded, so a mistake costs no
    # compile; the OTLP resource names the backend, so that output comes after.
    output = make_output(cfg, "") if cfg.output != "otlp" else None
    settings = OtlpSettings.from_env(os.environ, **cfg.otlp) if cfg.output == "otlp" else None
    rules = load_rules(cfg, bool(settings and settings.include_command_line))
    f = cfg.filters
    scope = resolve_scope(cgroup=f.cgroup, container_id=f.container_id, pod_uid=f.pod_uid,
                          this_pod=f.this_pod)
    pods.configure(cfg.pod_log_dir)
    try:
        bcc.use_headers(cfg.kernel_headers)
    except bcc.HeadersError as exc:
        raise ConfigError(str(exc)) from None
    if scope:
        log.info("scope: only actors in %s", ", ".join(f"{k} {v}" for k, v in scope._asdict().items() if v))
    fim = start_fim(cfg)
    try:
        filters = filters_of(cfg)
        if scope:
            filters = msgspec.structs.replace(filters, scope_cgroup=kernel_cgroup(scope))
        backend = backends.choose(cfg.backend, filters, log,
                                  own_group_fd=fim.fd if fim else -1, ring_mib=cfg.ring_buffer_mib)
    except BaseException:
        if fim is not None:
            fim.close()
        raise
    # what it runs with first: `started` is the line scripts and tests wait for
    log.info("kernel headers: %s", bcc.describe_headers())
    maps = probes.bpf_map_memory()
    log.info("bpf maps: %.1f MiB of kernel memory in %d maps (ring buffer %.1f MiB: ring_buffer_mib)",
             maps.total / (1 << 20), maps.maps, maps.ring / (1 << 20))
    log.info("backend %s started", backend.name)
    if scope:
        where = (f"in the kernel (cgroup {filters.scope_cgroup}) and in user space"
                 if backend.scope_in_kernel and filters.scope_cgroup else "in user space")
        log.info("scope: tested %s", where)
    if output is None:
        try:
            output = make_output(cfg, backend.name, settings)
        except BaseException:
            backend.close()
            if fim is not None:
                fim.close()
            raise
    if fim is not None:
        fim.begin()  # marks are in place: the start-up scan against the baseline
    health = None
    if cfg.health_listen:
        from .health import Health

        try:
            health = Health(cfg.health_listen, output, settings.spool_max_bytes if settings else 0)
        except BaseException:
            backend.close()
            if fim is not None:
                fim.close()
            output.close()
            raise
    quiet_gc()
    stop = _Stop()
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)

    started = time.monotonic()
    deadline = started + cfg.duration if cfg.duration else None
    next_stats = started + cfg.stats_interval if cfg.stats_interval else None
    sink = _Sink(output, rules, cfg.rules.alerts_only, scope,
                 Selection(f.path, f.comm, f.exclude_comm, f.tracer_comm, f.uid))
    metrics = None
    if cfg.output == "otlp":
        metrics = _start_metrics(cfg, output, backend, fim, sink)
    watch = _Watch(fim, backend) if fim is not None else None
    status = StatusLine(sys.stderr, lambda: _stats(backend, output, fim, sink), sys.stdout)
    # rows on the status line's terminal clear it first
    clears = status.shares(getattr(output, "stream", None))
    try:
        while not stop.requested:
            now = time.monotonic()
            if deadline and now >= deadline:
                break
            wait = POLL_MS if not deadline else max(1, min(POLL_MS, int((deadline - now) * 1000)))
            if watch is None:
                sink(backend.poll(wait))
            else:
                watch.turn(sink, wait, now)
            if clears and output.pending:
                status.clear()
            output.flush()  # a reader following --output-file sees each poll's events at once
            status.refresh(now)
            if health is not None:
                health.polled(backend.name)
            if next_stats and now >= next_stats:
                log.info("stats %s", json.dumps(_stats(backend, output, fim, sink)))
                next_stats = now + cfg.stats_interval
        if watch is None:
            sink(backend.poll(0))  # what the kernel already queued
        else:
            watch.turn(sink, 0, time.monotonic())
    finally:
        status.close()
        if health is not None:
            health.close()
        try:
            sink(backend.close())  # and what the backend still held
            if fim is not None:
                sink(fim.finish())  # changes still being written
                fim.close()
            sink.close()
            output.close()  # a second SIGINT/SIGTERM cuts the drain short...
        finally:
            stats = _final_stats(backend, output, metrics, fim, sink)  # ...never the stats line
    if stats.get("spool_corrupt_events"):
        log.error("%d events were lost to damage in the spool (spool_corrupt_events)",
                  stats["spool_corrupt_events"])
        return 1
    return 0


class _Watch:
    """One turn of watch mode beside the backend: read the watch group, then
    drain the ring (the records of that read are in it by then), then let
    the monitor name each change's actor."""

    def __init__(self, fim, backend):
        self.fim = fim
        self.backend = backend
        self.next_loss_check = 0.0
        self.lost_seen = 0

    def turn(self, sink, wait_ms: int, now: float) -> None:
        fim = self.fim
        raw = fim.read()
        if raw or fim.scanning:
            wait_ms = 0
        elif fim.busy:
            wait_ms = min(wait_ms, 20)
        sink(self.backend.poll(wait_ms))
        self.backend.catch_up(sink)  # the records of that read may lie further on
        sink(fim.process(raw, self.backend.fim_actor))
        if now >= self.next_loss_check:
            self.next_loss_check = now + LOSS_CHECK_S
            lost = self.backend.counters().get("ringbuf_lost", 0)
            if lost > self.lost_seen:
                fim.rescan(f"{lost - self.lost_seen} ring buffer records were lost (ringbuf_lost)")
                self.lost_seen = lost


def _final_stats(backend, output, metrics, fim=None, sink=None) -> dict:
    """Print the counters once at exit, whatever interrupted the shutdown."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        if metrics is not None:
            metrics.shutdown()
    finally:
        stats = _stats(backend, output, fim, sink)
        sys.stderr.write("otel-fsnotify: stats " + json.dumps(stats) + "\n")
        sys.stderr.flush()
    return stats


def _stats(backend, output, fim=None, sink=None) -> dict:
    stats = {"backend": backend.name, **backend.counters(), **(fim.counters if fim else {}),
             **(sink.counters() if sink else {}), **output.counters()}
    if "filtered_scope" in stats:  # all left out for scope; ..._in_kernel: of them, by the kernel
        stats["filtered_scope"] += stats.get("filtered_scope_in_kernel", 0)
    return stats


def _start_metrics(cfg: AgentConfig, output, backend, fim=None, sink=None):
    """Export loss/throughput counters as OTLP metrics next to the logs."""
    try:
        from .delivery.metrics import start_metrics
    except ImportError:
        return None
    return start_metrics(output.shipper.settings, output.shipper.resource,
                         lambda: _stats(backend, output, fim, sink))
