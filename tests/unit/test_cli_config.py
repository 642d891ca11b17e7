"""Bad input gets one clear line and a non-zero exit, never a traceback."""

import os
import subprocess
import sys

import pytest

from otel_fsnotify import config

CLI = [sys.executable, "-m", "otel_fsnotify"]


def run_cli(*args, **kw):
    return subprocess.run(CLI + list(args), capture_output=True, text=True, timeout=120, **kw)


def one_error_line(proc) -> str:
    lines = [l for l in proc.stderr.splitlines() if l.strip()]
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("otel-fsnotify: error: ")
    return lines[0]


def write(tmp_path, text):
    p = tmp_path / "agent.toml"
    p.write_text(text)
    return str(p)


def test_config_file_values_and_flag_override(tmp_path):
    cfg = config.load(write(tmp_path, 'backend = "tracepoint"\noutput = "jsonl"\n'
                                      '[filters]\ntracer_pid = [1, 2]\ninotify_only = true\n'))
    assert cfg.backend == "tracepoint" and cfg.filters.tracer_pid == [1, 2]
    cfg = config.apply_overrides(cfg, "command line", output="table", tracer_pid=[7])
    assert cfg.output == "table" and cfg.filters.tracer_pid == [7] and cfg.filters.inotify_only


@pytest.mark.parametrize("text,needle", [
    ('backend = "ebpf"\n', "backend = 'ebpf'"),
    ('colour = "red"\n', "unknown key 'colour'"),
    ('[filters]\ntracer_pidd = [1]\n', "unknown key 'filters.tracer_pidd'"),
    ('[filters]\ntracer_pid = ["x"]\n', "filters.tracer_pid[0]"),
    ('fields = ["tracer_comm", "nope"]\n', "unknown field 'nope'"),
    ('[filters]\ninotify_only = true\nfanotify_only = true\n', "exclude each other"),
    ('backend = \n', "not valid TOML"),
    ('[otlp]\nprotocl = "grpc"\n', "otlp.protocl: unknown setting"),
    ('[otlp]\nprotocol = "udp"\n', "otlp.protocol: 'udp' is not one of"),
    ('ring_buffer_mib = 3\n', "ring_buffer_mib = 3: expected a power of two from 1 to 1024"),
    ('[otlp]\nmax_in_flight = 0\n', "otlp.max_in_flight"),
    ('[filters]\npath = ["etc"]\n', "filters.path: 'etc': give an absolute path"),
    ('[filters]\ncomm = ["systemd-journald"]\n', "filters.comm: 'systemd-journald': a command name is 1 to 15"),
    ('[filters]\nuid = [-1]\n', "filters.uid: -1 is not a uid"),
])
def test_bad_config_gives_one_line_naming_the_key_and_exit_2(tmp_path, text, needle):
    path = write(tmp_path, text)
    proc = run_cli("run", "--config", path, "--output", "jsonl", "--duration", "0.1")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert path in line and needle in line


def test_missing_config_file(tmp_path):
    proc = run_cli("run", "--config", str(tmp_path / "nope.toml"))
    assert proc.returncode == 2
    assert "nope.toml: cannot read config" in one_error_line(proc)


@pytest.mark.parametrize("args,needle", [
    (["run", "--fields", "tracer_comm,bogus"], "unknown field 'bogus'"),
    (["run", "--tracer-pid", "abc"], "not a pid"),
    (["run", "--backend", "ebpf"], "invalid choice"),
    (["run", "--tracer-group", "zz"], "not an address"),
    (["run", "--duration", "-3"], "must be a number of seconds from 0"),
    (["run", "--duration", "nan"], "must be a number of seconds from 0"),
    (["run", "--stats-interval", "inf"], "must be a number of seconds from 0"),
    (["run", "--tracer-pid", str(1 << 32)], "not a pid"),
    (["run", "--header", "a=b\r\nX-Injected: 1", "--duration", "0.1"], "control characters"),
    (["run", "--endpoint", "http://collector example:4318", "--duration", "0.1"], "spaces or control"),
    (["run", "--header", "novalue", "--duration", "0.1"], "expected KEY=VALUE"),
    (["run", "--ring-buffer-mib", "6", "--duration", "0.1"], "ring_buffer_mib = 6: expected a power of two"),
    (["run", "--uid", "root"], "'root' is not a uid"),
    (["run", "--path", "tmp", "--duration", "0.1"], "filters.path: 'tmp': give an absolute path"),
    (["run", "--exclude-comm", "", "--duration", "0.1"], "filters.exclude_comm: '': a command name is 1 to 15"),
    (["listeners", "--pid", "0"], "not a pid"),
    (["listeners", "-o", "xml"], "invalid choice"),
    (["listeners", "--pid", str((1 << 32) - 2)], "no such process"),
])
def test_bad_flags(args, needle):
    proc = run_cli(*args)
    assert proc.returncode == 2
    assert needle in one_error_line(proc)


def test_seed_field_aliases_are_accepted(tmp_path):
    cfg = config.apply_overrides(config.load(None), "command line",
                                 fields=["type_str", "fa_type_str", "fa_response_str", "name"])
    assert cfg.fields == ["type", "fa_type", "fa_response", "name"]


def test_replay_of_a_malformed_capture_names_file_and_line(tmp_path):
    cap = tmp_path / "bad.jsonl"
    cap.write_text('{"type": "inotify"}\n{"type": 5}\n')
    proc = run_cli("replay", str(cap), "--endpoint", "http://127.0.0.1:9", "--no-progress")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert f"{cap}:2" in line


def test_non_root_gets_one_line_about_privileges():
    if os.geteuid() != 0:
        pytest.skip("needs root to drop to nobody")
    proc = run_cli("run", "--output", "jsonl", "--duration", "1",
                   user=65534, group=65534, env={**os.environ, "HOME": "/tmp"})
    assert proc.returncode == 1
    assert "needs root or CAP_BPF" in one_error_line(proc)


def test_unwritable_spool_dir_is_one_line_not_a_traceback():
    proc = run_cli("run", "--output", "otlp", "--spool-dir", "/proc/otel-fsnotify-spool",
                   "--endpoint", "http://127.0.0.1:9", "--duration", "1")
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("otel-fsnotify: error: spool_dir /proc/otel-fsnotify-spool")


def test_bad_output_file_is_one_line_before_any_bpf_is_loaded():
    proc = run_cli("run", "--output", "jsonl", "--output-file", "/nonexistent/dir/x", "--duration", "1")
    assert proc.returncode == 1
    assert "output_file /nonexistent/dir/x: No such file or directory" in one_error_line(proc)


def test_too_many_pid_filters():
    args = []
    for pid in range(1, 67):
        args += ["--tracer-pid", str(pid)]
    proc = run_cli("run", *args)
    assert proc.returncode == 2
    assert "at most 64 pids" in one_error_line(proc)


def test_shipped_example_config_is_valid():
    import pathlib

    cfg = config.load(str(pathlib.Path(__file__).parents[2] / "config" / "agent.toml"))
    assert cfg.backend == "auto" and cfg.otlp["protocol"] == "http/json"


@pytest.mark.parametrize("value", ["nan", "inf", "-5", "1e400"])
def test_a_timeout_that_cannot_run_is_one_line_and_exit_2(value):
    proc = run_cli("run", "--duration", "0.1", env={**os.environ, "OTEL_EXPORTER_OTLP_TIMEOUT": value})
    assert proc.returncode == 2
    assert "OTEL_EXPORTER_OTLP_TIMEOUT" in one_error_line(proc)


def test_a_capture_with_a_pid_past_32_bits_names_its_line(tmp_path):
    from otel_fsnotify.event import Event, to_json_line

    cap = tmp_path / "cap.jsonl"
    good = to_json_line(Event(tracee_pid=7))
    cap.write_bytes(good + good.replace(b'"tracee_pid":7', b'"tracee_pid":18446744073709551616'))
    proc = run_cli("replay", str(cap), "--endpoint", "http://127.0.0.1:9", "--spool-dir",
                   str(tmp_path / "spool"))
    assert proc.returncode == 2
    assert f"{cap}:2:" in one_error_line(proc) and "tracee_pid" in proc.stderr


def test_an_unusable_ca_file_is_named_as_a_tls_problem(tmp_path):
    bad = tmp_path / "ca.pem"
    bad.write_text("not a certificate\n")
    cap = tmp_path / "cap.jsonl"
    from otel_fsnotify.event import Event, to_json_line

    cap.write_bytes(to_json_line(Event()))
    proc = run_cli("replay", str(cap), "--endpoint", "https://127.0.0.1:9", "--certificate", str(bad),
                   "--spool-dir", str(tmp_path / "spool"))
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert "otlp.certificate" in line and "CA certificates" in line and "spool_dir" not in line


# ---------------------------------------------------------------- watch mode

def test_fim_table_per_path_tags_and_severity_and_flags_replacing_it(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "app").mkdir()
    cfg = config.load(write(tmp_path, f'[fim]\npaths = ["{tmp_path}/etc/", '
                                      f'{{ path = "{tmp_path}/app", tags = ["pci"], severity = "error" }}]\n'
                                      'hash = ["sha256", "blake2b"]\nexclude = ["*.swp"]\n'))
    assert [(p.path, p.tags, p.severity) for p in cfg.fim.paths] == [
        (f"{tmp_path}/etc", [], ""), (f"{tmp_path}/app", ["pci"], "error")]
    assert cfg.fim.hash == ["sha256", "blake2b"] and cfg.fim.max_file_size == 100 << 20
    cfg = config.apply_overrides(cfg, "command line", fim_paths=[str(tmp_path / "etc")], fim_only=True)
    assert [p.path for p in cfg.fim.paths] == [f"{tmp_path}/etc"] and cfg.fim.only
    assert config.filters_of(cfg).fim_only


@pytest.mark.parametrize("args,needle", [
    (["--watch", "/no/such/dir"], "fim.paths: /no/such/dir: no such file or directory"),
    (["--watch", "relative/dir"], "give an absolute path"),
    (["--watch", "/tmp", "--hash", "sha3"], "fim.hash: 'sha3': expected one or more of sha256, sha1, md5, blake2b"),
    (["--watch", "/tmp", "--exclude", "/var/log/**"], "exclude '/var/log/**' can never match a path under"),
    (["--watch", "/tmp", "--exclude", "cache/*"], "start it with / or **"),
    (["--fim-only"], "needs at least one watched path (--watch)"),
    (["--watch", "/tmp", "--watch", "/tmp/"], "/tmp is given twice"),
])
def test_a_watch_mode_mistake_is_one_line_and_exit_2(args, needle):
    proc = run_cli("run", "--output", "jsonl", "--duration", "0.1", *args)
    assert proc.returncode == 2
    assert needle in one_error_line(proc)


def test_a_bad_severity_in_the_fim_table_names_the_path(tmp_path):
    path = write(tmp_path, f'[fim]\npaths = [{{ path = "{tmp_path}", severity = "loud" }}]\n')
    proc = run_cli("run", "--config", path, "--output", "jsonl")
    assert proc.returncode == 2
    line = one_error_line(proc)
    assert path in line and f"fim.paths: {tmp_path}: severity 'loud'" in line


def test_a_state_dir_that_cannot_be_made_is_one_line_and_exit_1(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    proc = run_cli("run", "--output", "jsonl", "--duration", "0.1", "--watch", str(tmp_path),
                   "--state-dir", str(blocker / "state"))
    assert proc.returncode == 1
    assert f"state_dir {blocker}/state: Not a directory" in one_error_line(proc)


def test_a_filesystem_that_refuses_file_handle_marks_is_one_line_and_exit_1():
    proc = run_cli("run", "--output", "jsonl", "--duration", "0.1", "--watch", "/proc",
                   "--state-dir", "/tmp/otel-fsnotify-test-state")
    assert proc.returncode == 1
    assert "cannot watch /proc: its filesystem cannot encode file handles" in one_error_line(proc)


def test_the_images_config_leaves_the_endpoint_to_the_environment():
    """The container image runs with config/agent.toml: a manifest's
    OTEL_EXPORTER_OTLP_ENDPOINT must reach the collector, not the pod's loopback."""
    from otel_fsnotify.delivery.settings import OtlpSettings

    cfg = config.load("config/agent.toml")
    env = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://otel-collector.observability:4318"}
    assert OtlpSettings.from_env(env, **cfg.otlp).endpoint == "http://otel-collector.observability:4318"


def test_a_kernel_headers_dir_that_is_no_headers_tree_is_one_line_and_exit_2(tmp_path):
    proc = run_cli("run", "--output", "jsonl", "--duration", "1", "--kernel-headers", str(tmp_path))
    assert proc.returncode == 2
    assert one_error_line(proc) == (
        f"otel-fsnotify: error: --kernel-headers {tmp_path}: not a kernel headers tree "
        "(no include/generated; give the linux-headers-<version>-<flavour> directory)")


def test_short_flags_mean_the_long_ones(tmp_path):
    """-c -o -b -d are --config --output --backend --duration."""
    from otel_fsnotify.cli import build_parser

    path = write(tmp_path, 'output = "jsonl"\n')
    short = build_parser().parse_args(["run", "-c", path, "-o", "table", "-b", "tracepoint", "-d", "5"])
    long = build_parser().parse_args(["run", "--config", path, "--output", "table", "--backend", "tracepoint",
                                      "--duration", "5"])
    assert vars(short) == vars(long)
    assert (short.config, short.output, short.backend, short.duration) == (path, "table", "tracepoint", 5.0)


@pytest.mark.parametrize("command", ["run", "replay", "doctor", "listeners"])
def test_each_commands_help_ends_with_examples_of_itself(command):
    proc = run_cli(command, "--help")
    assert proc.returncode == 0
    tail = proc.stdout.rsplit("examples:\n", 1)[1].splitlines()
    assert len(tail) >= 2 and all(line.strip().startswith(f"otel-fsnotify {command}") for line in tail), tail


def test_version_names_the_package_version():
    from otel_fsnotify import __version__

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"otel-fsnotify {__version__}"


def test_the_selection_filters_are_config_keys_and_flags_replace_them(tmp_path):
    cfg = config.load(write(tmp_path, '[filters]\npath = ["/etc/"]\ncomm = ["cat"]\nexclude_comm = ["sshd"]\n'
                                      'tracer_comm = ["inotifywait"]\nuid = [0, 1000]\n'))
    f = cfg.filters
    assert (f.path, f.comm, f.exclude_comm, f.tracer_comm, f.uid) == (["/etc"], ["cat"], ["sshd"],
                                                                      ["inotifywait"], [0, 1000])
    cfg = config.apply_overrides(cfg, "command line", path=["/usr"], uid=[7])
    assert cfg.filters.path == ["/usr"] and cfg.filters.uid == [7] and cfg.filters.comm == ["cat"]
