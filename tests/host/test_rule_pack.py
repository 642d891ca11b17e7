"""The rule pack (config/rules/) on real changes: for every rule, a real
program makes the change that must fire it and a benign neighbour that must
not, under one agent watching /etc, /usr/bin, /usr/sbin, /boot and a test
home (`--rules config/rules`). Then the same events, as the records a
collector receives, loaded into SQLite: the pack converted by pySigma's
SQLite backend through the otel_fsnotify pipeline selects exactly the
events the agent flagged.

The changes are made to the host's real files, and undone: mtimes moved
with touch, test files created and removed (this runs on a disposable CI
machine as root).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from otel_fsnotify.event import Event
from otel_fsnotify.otel.mapping import attributes, event_name
from tests.harness.agent import Agent
from tests.harness.poll import until_still

pytestmark = pytest.mark.host

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "config" / "rules"
SIGMA = Path(shutil.which("sigma") or REPO / ".venv" / "bin" / "sigma")


def rule_id(name: str) -> str:
    return yaml.safe_load((PACK / f"{name}.yml").read_text())["id"]


@pytest.fixture(scope="module")
def pack(tmp_path_factory):
    base = tmp_path_factory.mktemp("pack")
    home = base / "home" / "alice"
    (home / ".ssh").mkdir(parents=True)
    (home / ".config" / "systemd" / "user").mkdir(parents=True)
    (home / ".bashrc").write_text("# bashrc\n")
    dpkg = base / "bin" / "dpkg"  # a shell that calls itself dpkg: the package manager's Image
    dpkg.parent.mkdir()
    shutil.copy("/bin/dash", dpkg)
    cfg = base / "agent.toml"
    cfg.write_text("[fim]\nmax_file_size = 65536\n")  # the baseline of /usr/bin in seconds
    agent = Agent(base / "agent", "--config", str(cfg), "--fim-only", "--rules", str(PACK),
                  "--state-dir", str(base / "state"), *sum((["--watch", p] for p in (
                      "/etc", "/usr/bin", "/usr/sbin", "/boot", str(base / "home"))), []),
                  patience=15)
    agent.wait_ready(300)
    yield {"agent": agent, "home": home, "dpkg": str(dpkg), "base": base}
    agent.stop()


def sh(script: str) -> None:
    subprocess.run(["sh", "-c", script], check=True)


def boot_file() -> str:
    return sorted(str(p) for p in Path("/boot").iterdir() if p.is_file())[0]


# rule -> (setup, the change that fires it, its path, a benign neighbour, its path, cleanup)
def cases(p) -> dict[str, tuple]:
    home, dpkg = p["home"], p["dpkg"]
    return {
        "account_files_modified": ("", "touch /etc/passwd", "/etc/passwd",
                                   "touch /etc/hostname", "/etc/hostname", ""),
        "account_files_replaced": ("", "cp -p /etc/group /etc/group.otel && mv /etc/group.otel /etc/group",
                                   "/etc/group",
                                   "cp -p /etc/group /etc/group.otel && mv /etc/group.otel /etc/group.otel2",
                                   "/etc/group.otel2", "rm -f /etc/group.otel2"),
        "sudoers_changed": ("mkdir -p /etc/sudoers.d && echo '# t' > /etc/sudoers.d/zz-otel "
                            "&& echo '# t' > /etc/sudoers-otel",
                            "echo '# more' >> /etc/sudoers.d/zz-otel", "/etc/sudoers.d/zz-otel",
                            "echo '# more' >> /etc/sudoers-otel", "/etc/sudoers-otel",
                            "rm -f /etc/sudoers.d/zz-otel /etc/sudoers-otel"),
        "sudoers_dropin_created": ("mkdir -p /etc/sudoers.d", "echo '# t' > /etc/sudoers.d/zz-otel-new",
                                   "/etc/sudoers.d/zz-otel-new", "echo x > /etc/sudoers.otel-new",
                                   "/etc/sudoers.otel-new",
                                   "rm -f /etc/sudoers.d/zz-otel-new /etc/sudoers.otel-new"),
        "ssh_authorized_keys_changed": (f"touch {home}/.ssh/authorized_keys {home}/.ssh/known_hosts",
                                        f"echo 'ssh-ed25519 AAAA t' >> {home}/.ssh/authorized_keys",
                                        f"{home}/.ssh/authorized_keys",
                                        f"echo 'host ssh-ed25519 AAAA' >> {home}/.ssh/known_hosts",
                                        f"{home}/.ssh/known_hosts", ""),
        "ssh_authorized_keys_created": ("", f"echo k > {home}/.ssh/authorized_keys2",
                                        f"{home}/.ssh/authorized_keys2", f"echo k > {home}/.ssh/id_test.pub",
                                        f"{home}/.ssh/id_test.pub", ""),
        "cron_job_created": ("mkdir -p /etc/cron.d", "echo '# t' > /etc/cron.d/zz-otel",
                             "/etc/cron.d/zz-otel", "echo x > /etc/crontab.otel", "/etc/crontab.otel",
                             "rm -f /etc/cron.d/zz-otel /etc/crontab.otel"),
        "cron_job_modified": ("echo '#' > /etc/cron.d/zz-otel-mod && echo '#' > /etc/cron.otel-mod",
                              "echo '#2' >> /etc/cron.d/zz-otel-mod", "/etc/cron.d/zz-otel-mod",
                              "echo '#2' >> /etc/cron.otel-mod", "/etc/cron.otel-mod",
                              "rm -f /etc/cron.d/zz-otel-mod /etc/cron.otel-mod"),
        "systemd_unit_created": ("", "printf '[Unit]\\n' > /etc/systemd/system/zz-otel.service",
                                 "/etc/systemd/system/zz-otel.service",
                                 f"{dpkg} -c \"printf '[Unit]\\n' > /etc/systemd/system/zz-otel-pkg.service\"",
                                 "/etc/systemd/system/zz-otel-pkg.service",
                                 "rm -f /etc/systemd/system/zz-otel.service /etc/systemd/system/zz-otel-pkg.service"),
        "systemd_unit_modified": (f"printf '[Unit]\\n' > {home}/.config/systemd/user/zz.service",
                                  f"echo '# x' >> {home}/.config/systemd/user/zz.service",
                                  f"{home}/.config/systemd/user/zz.service",
                                  f"{dpkg} -c \"echo '# y' >> {home}/.config/systemd/user/zz.service\"",
                                  f"{home}/.config/systemd/user/zz.service", ""),
        "ld_so_preload_created": ("test ! -e /etc/ld.so.preload", "touch /etc/ld.so.preload",
                                  "/etc/ld.so.preload", "touch /etc/ld.so.preload.otel",
                                  "/etc/ld.so.preload.otel", "rm -f /etc/ld.so.preload /etc/ld.so.preload.otel"),
        "ld_so_preload_modified": ("test ! -e /etc/ld.so.preload && touch /etc/ld.so.preload",
                                   "touch -d 2020-01-01 /etc/ld.so.preload", "/etc/ld.so.preload",
                                   "touch /etc/ld.so.conf", "/etc/ld.so.conf", "rm -f /etc/ld.so.preload"),
        "shell_profile_modified": (f"echo '#' > {home}/.bashrc_notes", f"echo 'alias x=y' >> {home}/.bashrc",
                                   f"{home}/.bashrc", f"echo '#' >> {home}/.bashrc_notes",
                                   f"{home}/.bashrc_notes", ""),
        "binary_created_in_system_path": ("", "cp /bin/true /usr/bin/zz-otel-tool", "/usr/bin/zz-otel-tool",
                                          f"{dpkg} -c 'cat /bin/true > /usr/bin/zz-otel-pkg-tool'",
                                          "/usr/bin/zz-otel-pkg-tool",
                                          "rm -f /usr/bin/zz-otel-tool /usr/bin/zz-otel-pkg-tool"),
        "binary_renamed_into_system_path": ("mkdir -p /usr/bin/zz-otel-dir && cp /bin/true /usr/sbin/.zz1 "
                                            "&& cp /bin/true /usr/sbin/.zz2",
                                            "mv /usr/sbin/.zz1 /usr/sbin/zz-otel-mv", "/usr/sbin/zz-otel-mv",
                                            "mv /usr/sbin/.zz2 /usr/bin/zz-otel-dir/tool",
                                            "/usr/bin/zz-otel-dir/tool",
                                            "rm -rf /usr/sbin/zz-otel-mv /usr/bin/zz-otel-dir"),
        "boot_file_created": ("", "touch /boot/zz-otel", "/boot/zz-otel", f"touch {boot_file()}", boot_file(),
                              "rm -f /boot/zz-otel"),
        "boot_file_modified": ("", f"touch {boot_file()}", boot_file(), "touch /boot/zz-otel-new",
                               "/boot/zz-otel-new", "rm -f /boot/zz-otel-new"),
    }


RULES = sorted(p.stem for p in PACK.glob("*.yml"))


def test_every_rule_of_the_pack_has_a_case():
    assert set(RULES) == set(cases({"home": Path("/h"), "dpkg": "dpkg"}))


def after(agent: Agent, seen: int, path: str, timeout: float = 15.0) -> list[dict]:
    """The watch events on path reported after the first `seen` events."""
    deadline = time.monotonic() + timeout
    while True:
        got = [e for e in agent.events()[seen:] if e["type"] == "fim" and e["path"] == path]
        if got or time.monotonic() > deadline:
            return got
        time.sleep(0.1)


def quiet(agent: Agent, still_s: float = 0.8, timeout: float = 15.0) -> None:
    """Until no event has come for still_s (a change is reported 0.2 s after
    its writer closes the file, later on a busy machine)."""
    until_still(lambda: len(agent.events()), still_s, timeout)


@pytest.mark.parametrize("rule", RULES)
def test_the_rule_fires_on_its_change_and_not_on_a_benign_neighbour(pack, rule):
    agent, rid = pack["agent"], rule_id(rule)
    setup, fire, fire_path, benign, benign_path, cleanup = cases(pack)[rule]
    try:
        if setup:
            sh(setup)
            quiet(agent)  # the setup's own changes are reported first
        seen = len(agent.events())
        sh(fire)
        fired = after(agent, seen, fire_path)
        seen = len(agent.events())
        sh(benign)
        neighbour = after(agent, seen, benign_path)
    finally:
        if cleanup:
            sh(cleanup)
    assert fired and rid in fired[0]["rules"], f"{rule} did not fire on {fire!r}: {fired}"
    assert fired[0]["severity"] in ("warn", "error", "fatal")
    assert neighbour, f"the benign neighbour {benign!r} was not reported at all"
    assert all(rid not in e["rules"] for e in neighbour), (rule, neighbour)


def test_the_pack_converted_for_sqlite_selects_exactly_what_the_agent_flagged(pack, tmp_path):
    """Run after the cases: every event they produced, as the record a
    collector receives, in a SQLite table with one column per attribute."""
    events = [Event(**{k: v for k, v in e.items()}) for e in pack["agent"].events() if e["type"] == "fim"]
    assert len(events) > 30
    rows = [{"event_name": event_name(ev), **attributes(ev)} for ev in events]
    columns = sorted({k for r in rows for k in r})
    db = sqlite3.connect(tmp_path / "records.db")
    # SQLite leaves REGEXP to the application (`x REGEXP p` calls regexp(p, x))
    db.create_function("REGEXP", 2, lambda p, x: x is not None and re.search(p, str(x)) is not None)
    db.execute(f"CREATE TABLE logs (row INTEGER, {', '.join(f'`{c}`' for c in columns)})")
    for i, r in enumerate(rows):
        values = [json.dumps(v) if isinstance(v, list) else v for v in (r.get(c) for c in columns)]
        db.execute(f"INSERT INTO logs VALUES (?, {', '.join('?' for _ in columns)})", [i, *values])
    for rule in RULES:
        query = subprocess.run([str(SIGMA), "convert", "-t", "sqlite", "-p", "otel_fsnotify",
                                str(PACK / f"{rule}.yml")], capture_output=True, text=True, check=True,
                               cwd=tmp_path).stdout.strip().splitlines()[-1]
        assert query.startswith("SELECT * FROM logs WHERE"), query
        selected = {row[0] for row in db.execute(query.replace("SELECT *", "SELECT row", 1))}
        flagged = {i for i, ev in enumerate(events) if rule_id(rule) in ev.rules}
        assert flagged, f"{rule} flagged nothing: the cases above should have fired it"
        assert selected == flagged, (rule, query, sorted(selected ^ flagged))


FOREIGN_RULE = """\
title: Web shell dropped in a served directory
id: 2617ccd5-1927-43b1-8d7d-a5df7c11d2ce
status: experimental
description: A script file written into the document root by anything but the deploy tool
references: [https://attack.mitre.org/techniques/T1505/003/]
author: someone else
date: 2026/11/30
tags: [attack.persistence, attack.t1505.003]
logsource:
  product: linux
  category: file_event
detection:
  selection_root:
    TargetFilename|contains: '/www/'
  selection_ext:
    - TargetFilename|endswith: ['.php', '.jsp', '.phtml']
    - TargetFilename|re|i: '\\.php[0-9]$'
  filter_deploy:
    Image|endswith: '/rsync'
  filter_cache:
    TargetFilename|contains|all: ['/cache/', '.tmp']
  condition: all of selection_* and not 1 of filter_*
falsepositives: [Developers editing files on the server]
level: critical
"""


def test_a_rule_written_elsewhere_fires_on_exactly_the_events_it_describes(tmp_path):
    www = tmp_path / "srv" / "www"
    (www / "cache").mkdir(parents=True)
    rule = tmp_path / "webshell.yml"
    rule.write_text(FOREIGN_RULE)
    agent = Agent(tmp_path / "agent", "--watch", str(tmp_path / "srv"), "--rules", str(rule),
                  "--fim-only", "--state-dir", str(tmp_path / "state"))
    agent.wait_ready()
    fire = [www / "shell.php", www / "up.PHP5", www / "a.jsp"]
    quiet = [www / "index.html", www / "cache" / "x.tmp.php", tmp_path / "srv" / "notes.php"]
    rsync = tmp_path / "rsync"  # the deploy tool, by name
    shutil.copy("/bin/dash", rsync)
    for path in fire + quiet:
        sh(f"echo '<?php ?>' > {path}")
    sh(f"{rsync} -c \"echo x > {www / 'deployed.php'}\"")
    quiet.append(www / "deployed.php")
    for path in fire + quiet:
        assert after(agent, 0, str(path)), f"{path} was not reported"
    agent.stop()
    flagged = {e["path"] for e in agent.events() if e["type"] == "fim" and e["rules"]}
    assert flagged == {str(p) for p in fire}
    assert all(e["severity"] == "fatal" for e in agent.events() if e["path"] in flagged)
