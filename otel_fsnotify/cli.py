"""Command line: `otel-fsnotify run | replay | doctor | listeners`.

Every user mistake or missing kernel feature ends in one line on stderr,
`otel-fsnotify: error: ...`, and a non-zero exit: 2 for bad input (flags,
config, capture files), 1 for what the host or collector cannot do.
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import sys

from . import __version__
from .backends import CHOICES as BACKEND_CHOICES

EXIT_RUNTIME = 1
EXIT_USAGE = 2


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints usage too: keep it short)
        sys.stderr.write(f"otel-fsnotify: error: {message}\n")
        sys.exit(EXIT_USAGE)


# the last lines of each command's --help: real commands, as a user types them
EXAMPLES = {
    "run": """examples:
  otel-fsnotify run -o table                      who reads which file events, on this terminal
  otel-fsnotify run -o jsonl --path /etc --exclude-comm sshd > fsnotify.jsonl
  otel-fsnotify run --watch /etc --watch /usr/bin --endpoint http://collector:4318 --protocol http/protobuf
  otel-fsnotify run -c /etc/otel-fsnotify/agent.toml -d 60   one minute with a config file""",
    "replay": """examples:
  otel-fsnotify replay fsnotify.jsonl --endpoint http://127.0.0.1:4317
  otel-fsnotify replay fsnotify.jsonl -c agent.toml --protocol http/json --no-progress""",
    "doctor": """examples:
  otel-fsnotify doctor                            what this kernel allows, and the backend auto picks
  otel-fsnotify doctor | grep -w NO               only what cannot work here""",
    "listeners": """examples:
  otel-fsnotify listeners                         every inotify/fanotify listener and what it watches
  otel-fsnotify listeners --pid 1234              one process's
  otel-fsnotify listeners -o json | jq '.limits'  how close each user is to the kernel's limits""",
}
MAX_PID = (1 << 32) - 1  # pids and tids are 32-bit in the kernel
MAX_SECONDS = 10 * 365 * 86400.0


def _pid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pid") from None
    if not 0 < value <= MAX_PID:
        raise argparse.ArgumentTypeError(f"{text!r} is not a pid")
    return value


def _uid(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a uid") from None
    if not 0 <= value < MAX_PID:
        raise argparse.ArgumentTypeError(f"{text!r} is not a uid")
    return value


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not (math.isfinite(value) and 0 <= value <= MAX_SECONDS):
        raise argparse.ArgumentTypeError(f"{text!r}: must be a number of seconds from 0 to {MAX_SECONDS:g}")
    return value


def _add_otlp_flags(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("OTLP delivery (flags override OTEL_EXPORTER_OTLP_* and the config file)")
    g.add_argument("--endpoint", dest="otlp_endpoint", metavar="URL",
                   help="collector endpoint (OTEL_EXPORTER_OTLP_ENDPOINT), e.g. http://127.0.0.1:4317")
    g.add_argument("--protocol", dest="otlp_protocol", choices=("grpc", "http/protobuf", "http/json"),
                   help="OTLP transport (OTEL_EXPORTER_OTLP_PROTOCOL); http/json is the fastest")
    g.add_argument("--header", dest="otlp_headers", metavar="KEY=VALUE", action="append",
                   help="extra request header, repeatable (OTEL_EXPORTER_OTLP_HEADERS)")
    g.add_argument("--compression", dest="otlp_compression", choices=("none", "gzip"))
    g.add_argument("--insecure", dest="otlp_insecure", action="store_const", const=True,
                   help="plain-text gRPC (no TLS)")
    g.add_argument("--certificate", dest="otlp_certificate", metavar="PEM", help="CA bundle to trust")
    g.add_argument("--client-certificate", dest="otlp_client_certificate", metavar="PEM")
    g.add_argument("--client-key", dest="otlp_client_key", metavar="PEM")
    g.add_argument("--spool-dir", dest="otlp_spool_dir", metavar="DIR",
                   help="on-disk spool holding events while the collector is away")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="otel-fsnotify",
                description="Link inotify/fanotify events to the process that caused them (tracee) "
                            "and the one that read them (tracer); ship them over OTLP.")
    p.add_argument("--version", action="version", version=f"otel-fsnotify {__version__}")
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", metavar="{run,replay,doctor,listeners}", parser_class=_Parser)

    def command(name: str, help: str) -> argparse.ArgumentParser:
        return sub.add_parser(name, help=help, epilog=EXAMPLES[name],
                              formatter_class=argparse.RawDescriptionHelpFormatter)

    r = command("run", "trace fsnotify events and send them to an output")
    r.add_argument("-c", "--config", metavar="FILE", help="TOML config file (flags override it)")
    r.add_argument("-b", "--backend", choices=BACKEND_CHOICES,
                   help="kernel hooks: fentry/kprobe (exact), tracepoint (hardened kernels); "
                        "auto picks the first that loads (default)")
    r.add_argument("-o", "--output", choices=("otlp", "jsonl", "table"), help="default otlp")
    r.add_argument("--output-file", metavar="PATH", help="jsonl/table destination (default stdout)")
    r.add_argument("--fields", metavar="F1,F2",
                   help="table columns, e.g. time,tracee_comm,i_mask,path; `--fields help` lists them all")
    r.add_argument("--inotify-only", action="store_const", const=True, help="only inotify events")
    r.add_argument("--fanotify-only", action="store_const", const=True, help="only fanotify events")
    r.add_argument("--tracer-pid", type=_pid, action="append", metavar="PID",
                   help="only events read by this process (repeatable)")
    r.add_argument("--tracee-pid", type=_pid, action="append", metavar="PID",
                   help="only events caused by this process (repeatable)")
    r.add_argument("--tracer-group", metavar="ADDR",
                   help="only events queued to this struct fsnotify_group (kernel address)")
    r.add_argument("--path", action="append", metavar="PREFIX",
                   help="only events on files under this path, repeatable ([filters] path)")
    r.add_argument("--comm", action="append", metavar="NAME",
                   help="only events whose actor (tracee) has this command name, repeatable")
    r.add_argument("--exclude-comm", action="append", metavar="NAME",
                   help="no events whose actor has this command name, repeatable")
    r.add_argument("--tracer-comm", action="append", metavar="NAME",
                   help="only events read by a watcher (tracer) with this command name, repeatable")
    r.add_argument("--uid", type=_uid, action="append", metavar="UID",
                   help="only events whose actor runs with this effective uid, repeatable")
    r.add_argument("--cgroup", metavar="PATH",
                   help="only events whose actor is in this cgroup v2 directory or below")
    r.add_argument("--container-id", metavar="ID", help="only events whose actor is in this container")
    r.add_argument("--pod-uid", metavar="UID", help="only events whose actor is in this Kubernetes pod")
    r.add_argument("--this-pod", action="store_const", const=True,
                   help="only events of the agent's own pod (a sidecar; POD_UID from the downward "
                        "API where its cgroup does not say)")
    r.add_argument("--pod-log-dir", metavar="DIR",
                   help="the kubelet's pod log directory, which names the node's pods for "
                        "k8s.namespace.name and k8s.pod.name (default /var/log/pods)")
    r.add_argument("--kernel-headers", metavar="DIR",
                   help="compile the BPF program against this headers tree (a "
                        "/usr/src/linux-headers-<version>-<flavour> directory) instead of the "
                        "running kernel's; offsets come from BTF either way")
    r.add_argument("--ring-buffer-mib", type=int, metavar="MIB",
                   help="the ring buffer the kernel side fills and the agent drains, in MiB (a "
                        "power of two; default 4): larger rides out longer bursts without "
                        "ringbuf_lost, at that much locked kernel memory")
    r.add_argument("--health-listen", metavar="[ADDR:]PORT",
                   help="serve /healthz and /readyz for probes (off by default; a bare port binds 127.0.0.1)")
    r.add_argument("-d", "--duration", type=_seconds, metavar="SECONDS", help="stop after this long (default: run until signalled)")
    r.add_argument("--stats-interval", type=_seconds, metavar="SECONDS",
                   help="log loss/throughput counters this often (default 60; 0 = only at exit)")
    w = r.add_argument_group("watch mode: file integrity of the paths you name (flags replace [fim])")
    w.add_argument("--watch", dest="fim_paths", action="append", metavar="PATH",
                   help="watch this file or tree (repeatable): every change, its actor and hashes")
    w.add_argument("--exclude", dest="fim_exclude", action="append", metavar="GLOB",
                   help="leave out matching paths (repeatable): a basename glob (*.swp) or, with /, "
                        "a full-path glob (/var/log/**)")
    w.add_argument("--hash", dest="fim_hash", action="append", metavar="ALGO",
                   help="content hash (repeatable): sha256 (default), sha1, md5, blake2b")
    w.add_argument("--fim-only", dest="fim_only", action="store_const", const=True,
                   help="report only watch-mode events (not other listeners' events)")
    w.add_argument("--state-dir", dest="fim_state_dir", metavar="DIR",
                   help="where the baseline is kept (default /var/lib/otel-fsnotify/fim)")
    d = r.add_argument_group("detection: Sigma rules run on every event (flags replace [rules])")
    d.add_argument("--rules", dest="rules_paths", action="append", metavar="PATH",
                   help="Sigma rule file or directory (repeatable): matching events carry the "
                        "rule ids (`rules`) and the rule's level as severity")
    d.add_argument("--alerts-only", dest="rules_alerts_only", action="store_const", const=True,
                   help="ship only events that matched a rule")
    _add_otlp_flags(r)

    rp = command("replay", "ship a jsonl capture over OTLP")
    rp.add_argument("file", help="jsonl capture written by `run --output jsonl`")
    rp.add_argument("-c", "--config", metavar="FILE", help="TOML config file ([otlp] table is used)")
    rp.add_argument("--no-progress", action="store_true", help="no progress lines on stderr")
    _add_otlp_flags(rp)

    command("doctor", "check what this kernel and process allow, and which backend auto picks")
    ls = command("listeners", "list the inotify/fanotify listeners on this host and what they watch")
    ls.add_argument("--pid", type=_pid, action="append", metavar="PID", help="only this process's, repeatable")
    ls.add_argument("-o", "--output", choices=("table", "json"), default="table", help="default table")
    return p


def _fail(message: str, code: int) -> int:
    sys.stderr.write(f"otel-fsnotify: error: {message}\n")
    return code


def _otlp_flags(args) -> dict:
    flags = {k: v for k, v in vars(args).items() if k.startswith("otlp_") and v is not None}
    if "otlp_headers" in flags:
        headers = {}
        for item in flags["otlp_headers"]:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise _UsageError(f"--header {item!r}: expected KEY=VALUE")
            headers[key.strip()] = value.strip()
        flags["otlp_headers"] = headers
    return flags


class _UsageError(Exception):
    pass


def _needs_bpf_privilege() -> str | None:
    if os.geteuid() == 0:
        return None
    from .kernel.probes import capabilities

    ok, detail = capabilities()
    return None if ok else (f"loading BPF programs needs root or CAP_BPF+CAP_PERFMON "
                            f"(uid {os.geteuid()}: {detail})")


def _cmd_run(args) -> int:
    from . import agent, config

    if args.fields == "help":
        from .table import field_help

        for name, line in field_help().items():
            print(f"{name:<26} {line}")
        return 0
    cfg = config.load(args.config)
    fields = args.fields.split(",") if args.fields else None
    cfg = config.apply_overrides(
        cfg, "command line", backend=args.backend, output=args.output, output_file=args.output_file,
        fields=fields, duration=args.duration, stats_interval=args.stats_interval,
        tracer_pid=args.tracer_pid, tracee_pid=args.tracee_pid, tracer_group=args.tracer_group,
        inotify_only=args.inotify_only, fanotify_only=args.fanotify_only, cgroup=args.cgroup,
        path=args.path, comm=args.comm, exclude_comm=args.exclude_comm, tracer_comm=args.tracer_comm,
        uid=args.uid,
        container_id=args.container_id, pod_uid=args.pod_uid, this_pod=args.this_pod,
        health_listen=args.health_listen, pod_log_dir=args.pod_log_dir,
        kernel_headers=args.kernel_headers, ring_buffer_mib=args.ring_buffer_mib, **_otlp_flags(args),
        **{k: v for k, v in vars(args).items() if k.startswith(("fim_", "rules_"))})
    if not args.verbose:
        logging.getLogger().setLevel(cfg.log_level.upper())
    problem = _needs_bpf_privilege()
    if problem:
        return _fail(problem, EXIT_RUNTIME)
    return agent.run(cfg)


def _cmd_replay(args) -> int:
    from . import config
    from .delivery.settings import OtlpSettings
    from .replay import run_replay

    cfg = config.apply_overrides(config.load(args.config), "command line", **_otlp_flags(args))
    settings = OtlpSettings.from_env(os.environ, **cfg.otlp)
    if cfg.rules.paths:  # the names of the rules the capture's events matched
        from .agent import load_rules

        load_rules(cfg, settings.include_command_line)
    return run_replay(args.file, settings, logging.getLogger("otel_fsnotify"), progress=not args.no_progress)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if not args.command:
        build_parser().print_help()
        return EXIT_USAGE
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="otel-fsnotify: %(levelname)s: %(message)s", stream=sys.stderr)

    from .agent import OutputUnusable
    from .fim.fid_group import WatchUnavailable
    from .health import HealthUnavailable
    from .rules.compiler import RuleError
    from .delivery.spool import SpoolBusy, SpoolUnsafe
    from .backends.base import BackendUnavailable
    from .kernel.bcc import BccError
    from .kernel.btf import BtfError
    from .config import ConfigError
    from .event import CaptureError

    try:
        if args.command == "doctor":
            from . import doctor

            return doctor.main()
        if args.command == "listeners":
            from . import listeners

            gone = [pid for pid in args.pid or () if not os.path.isdir(f"/proc/{pid}")]
            if gone:
                return _fail(f"--pid {gone[0]}: no such process", EXIT_USAGE)
            return listeners.main(args.pid, args.output)
        if args.command == "run":
            return _cmd_run(args)
        return _cmd_replay(args)
    except (SpoolBusy, SpoolUnsafe) as exc:  # the spool is another's: not a user typo
        return _fail(str(exc), EXIT_RUNTIME)
    except (ConfigError, CaptureError, _UsageError, RuleError) as exc:
        return _fail(str(exc), EXIT_USAGE)
    except ValueError as exc:  # OtlpSettings: a bad endpoint/protocol/header value
        return _fail(str(exc), EXIT_USAGE)
    except (BackendUnavailable, BccError, BtfError, OutputUnusable, WatchUnavailable,
            HealthUnavailable) as exc:
        return _fail(str(exc), EXIT_RUNTIME)
    except PermissionError as exc:
        return _fail(f"{exc.filename or 'operation'}: permission denied (run as root)", EXIT_RUNTIME)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0


if __name__ == "__main__":
    sys.exit(main())
