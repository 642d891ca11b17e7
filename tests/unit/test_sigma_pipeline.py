"""The rule pack for every SIEM: sigma-cli finds the otel_fsnotify pipeline
by name, and the pack converts with the Splunk, Elasticsearch (ES|QL and
Lucene), Kusto and Loki backends into queries over the records' attribute
names. (What the conversions select is proven against real events in
tests/host/test_rule_pack.py, through the SQLite backend.)"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "config" / "rules"
SIGMA = shutil.which("sigma") or str(REPO / ".venv" / "bin" / "sigma")


def convert(tmp_path, *args: str) -> subprocess.CompletedProcess:
    # run outside the source tree: sigma-cli reads a directory named like the
    # pipeline (./otel_fsnotify, the package) as a directory of pipeline files
    return subprocess.run([SIGMA, "convert", *args], capture_output=True, text=True, cwd=tmp_path,
                          timeout=120)


def test_sigma_cli_lists_the_pipeline_by_name(tmp_path):
    out = subprocess.run([SIGMA, "list", "pipelines"], capture_output=True, text=True, cwd=tmp_path,
                         check=True).stdout
    assert any(line.split("|")[1].strip() == "otel_fsnotify" for line in out.splitlines() if "|" in line)


@pytest.mark.parametrize("target, extra", [
    ("splunk", []), ("esql", []), ("lucene", []), ("kusto", []), ("loki", []), ("sqlite", []),
])
def test_the_pack_converts_for_each_siem_over_the_record_attributes(tmp_path, target, extra):
    proc = convert(tmp_path, "-t", target, "-p", "otel_fsnotify", *extra, str(PACK))
    assert proc.returncode == 0, proc.stderr[-2000:]
    queries = proc.stdout
    assert "file.path" in queries or "file_path" in queries  # loki: labels use _
    for sigma_name in ("TargetFilename", "Image"):
        assert sigma_name not in queries, (target, sigma_name)
    assert "fsnotify.fim" in queries or "fsnotify\\.fim" in queries


def test_a_splunk_query_names_the_attributes_and_the_logsource(tmp_path):
    proc = convert(tmp_path, "-t", "splunk", "-p", "otel_fsnotify", str(PACK / "ld_so_preload_created.yml"))
    assert proc.returncode == 0, proc.stderr
    query = proc.stdout.strip().splitlines()[-1]
    assert query == ('event_name IN ("fsnotify.fim", "fsnotify.inotify", "fsnotify.fanotify") '
                     'fsnotify.action IN ("created", "create") file.path="/etc/ld.so.preload"')


def test_a_field_the_records_do_not_carry_fails_conversion_by_name(tmp_path):
    rule = tmp_path / "parent.yml"
    rule.write_text("title: p\nid: 00000000-0000-4000-8000-0000000000aa\n"
                    "logsource: {product: linux, category: file_event}\n"
                    "detection: {s: {ParentImage: /bin/sh}, condition: s}\n")
    proc = convert(tmp_path, "-t", "splunk", "-p", "otel_fsnotify", str(rule))
    assert proc.returncode != 0
    assert "otel-fsnotify records carry only these Sigma fields" in proc.stdout + proc.stderr


def test_the_otelcol_contrib_example_says_it_is_untested_and_is_consistent():
    """Not run (no otelcol-contrib binary here): at least every pipeline starts
    with memory_limiter, ends with batch, and names only defined components."""
    import yaml

    text = (REPO / "config" / "otelcol-fim.yaml").read_text()
    assert "NOT RUN BY THE TESTS" in text
    cfg = yaml.safe_load(text)
    defined = {kind: set(cfg.get(kind, {})) for kind in ("receivers", "processors", "exporters", "connectors")}
    for name, p in cfg["service"]["pipelines"].items():
        procs = p.get("processors", [])
        assert procs and (procs[0] == "memory_limiter" or "routing" in p["receivers"]), name
        assert procs[-1] == "batch" or p["exporters"] == ["routing"], name
        for kind in ("receivers", "processors", "exporters"):
            for c in p.get(kind, []):
                assert c in defined[kind] or c in defined["connectors"], (name, c)
    assert "memory_limiter" in cfg["service"]["pipelines"]["logs/in"]["processors"]
    for exporter in cfg["exporters"].values():
        assert exporter["sending_queue"]["storage"] == "file_storage"
