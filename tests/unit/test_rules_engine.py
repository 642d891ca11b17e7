"""Sigma rules in the agent: each modifier and condition form Linux file
rules use means what Sigma says, rules that cannot be evaluated are refused
at start in one line naming the file and the construct, and a match names
the rule and raises the record's severity."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

from otel_fsnotify.event import Event
from otel_fsnotify.rules.compiler import RuleError
from otel_fsnotify.rules.engine import RuleSet

RULE = """\
title: {title}
id: {id}
level: {level}
logsource: {{product: linux, category: {category}}}
detection:
{detection}
"""


def rule_file(tmp_path, detection: str, category: str = "file_event", level: str = "high",
              rid: str = "00000000-0000-4000-8000-000000000001", name: str = "r.yml", title="t"):
    path = tmp_path / name
    path.write_text(RULE.format(title=title, id=rid, level=level, category=category,
                                detection=textwrap.indent(textwrap.dedent(detection), "  ")))
    return path


def ev(path="/etc/x", exe="/usr/bin/vim", action="created", **kw) -> Event:
    return Event(type="fim", action=action, path=path, tracee_exe=exe, tracee_pid=42,
                 tracee_comm="vim", **kw)


@pytest.mark.parametrize("detection, yes, no", [
    ("sel: {TargetFilename: /etc/PASSWD}\ncondition: sel", ev("/etc/passwd"), ev("/etc/passwd-")),
    ("sel: {TargetFilename|contains: cron}\ncondition: sel", ev("/etc/CRON.d/x"), ev("/etc/crn")),
    ("sel: {TargetFilename|startswith: /etc/}\ncondition: sel", ev("/etc/a"), ev("/tmp/etc/a")),
    ("sel: {TargetFilename|endswith: .service}\ncondition: sel", ev("/x/a.SERVICE"), ev("/x/a.service.bak")),
    ("sel: {TargetFilename|contains|all: [ssh, keys]}\ncondition: sel", ev("/root/.ssh/authorized_keys"),
     ev("/root/.ssh/config")),
    ("sel: {TargetFilename: ['/a', '/b']}\ncondition: sel", ev("/b"), ev("/c")),
    ("sel: {TargetFilename: '/etc/*.d/?x'}\ncondition: sel", ev("/etc/cron.d/ax"), ev("/etc/cron.d/abx")),
    ("sel: {TargetFilename|re: '^/etc/[a-z]+$'}\ncondition: sel", ev("/etc/hosts"), ev("/etc/HOSTS")),
    ("sel: {TargetFilename|re|i: '^/etc/[a-z]+$'}\ncondition: sel", ev("/etc/HOSTS"), ev("/etc/1")),
    ("sel: {TargetFilename|cased: /etc/Hosts}\ncondition: sel", ev("/etc/Hosts"), ev("/etc/hosts")),
    ("sel: {Image: null}\ncondition: sel", ev(exe=""), ev()),
    ("sel: {Image|exists: false}\ncondition: sel", ev(exe=""), ev()),
    ("sel: {SourceFilename|endswith: .tmp}\ncondition: sel",
     ev("/etc/a", action="renamed", old_path="/etc/a.tmp"), ev("/etc/a", action="renamed", old_path="/etc/b")),
    ("sel: {ProcessId: 42}\ncondition: sel", ev(), Event(type="fim", action="created", path="/x", tracee_pid=7)),
    ("sel: {User: root}\ncondition: sel", ev(), Event(type="fim", action="created", path="/x")),
    ("a: {TargetFilename|startswith: /etc/}\nb: {Image|endswith: /vim}\ncondition: a and not b",
     ev(exe="/usr/bin/nano"), ev()),
    ("s1: {TargetFilename: /x}\ns2: {TargetFilename: /y}\nf: {Image: /bin/ok}\ncondition: 1 of s* and not f",
     ev("/y"), ev("/y", exe="/bin/ok")),
    ("s1: {TargetFilename|startswith: /etc/}\ns2: {Image|endswith: vim}\ncondition: all of s*",
     ev(), ev(exe="/bin/ed")),
    ("s1: {TargetFilename|startswith: /etc/}\ns2: {Image|endswith: vim}\ncondition: all of them",
     ev(), ev("/tmp/x")),
    ("a: {TargetFilename: /x}\nb: {TargetFilename: /y}\nc: {Image: /bin/sh}\ncondition: (a or b) and c",
     ev("/y", exe="/bin/sh"), ev("/x")),
])
def test_each_modifier_and_condition_means_what_sigma_says(tmp_path, detection, yes, no):
    category = {"created": "file_event", "renamed": "file_rename"}[yes.action]
    rules = RuleSet.load([str(rule_file(tmp_path, detection, category=category))])
    assert rules.apply(yes).rules == ["00000000-0000-4000-8000-000000000001"]
    assert rules.apply(no).rules == []


def test_a_match_raises_the_severity_to_the_highest_level_and_lists_every_rule(tmp_path):
    rule_file(tmp_path, "s: {TargetFilename|startswith: /etc/}\ncondition: s", level="medium",
              rid="00000000-0000-4000-8000-00000000000a", name="a.yml")
    rule_file(tmp_path, "s: {TargetFilename: /etc/shadow}\ncondition: s", level="critical",
              rid="00000000-0000-4000-8000-00000000000b", name="b.yml")
    rules = RuleSet.load([str(tmp_path)])
    out = rules.apply(ev("/etc/shadow"))
    assert out.rules == ["00000000-0000-4000-8000-00000000000b", "00000000-0000-4000-8000-00000000000a"]
    assert out.severity == "fatal"
    assert rules.apply(ev("/etc/hosts", severity="error")).severity == "error"  # never lowered


def test_the_logsource_decides_which_events_a_rule_sees(tmp_path):
    rule_file(tmp_path, "s: {TargetFilename: /etc/x}\ncondition: s", category="file_delete")
    rules = RuleSet.load([str(tmp_path)])
    assert rules.apply(ev(action="deleted")).rules and not rules.apply(ev(action="created")).rules
    ino = Event(type="inotify", i_mask=0x200, path="/etc/x")  # IN_DELETE
    assert rules.apply(ino).rules
    other = tmp_path / "win.yml"
    other.write_text(RULE.format(title="w", id="00000000-0000-4000-8000-000000000009", level="low",
                                 category="process_creation", detection="  s: {Image: x}\n  condition: s"))
    assert len(RuleSet.load([str(tmp_path)]).rules) == 1  # loaded, counted as skipped, never run


CLI = [sys.executable, "-m", "otel_fsnotify"]


@pytest.mark.parametrize("text, needle", [
    ("s: {TargetFilename: x}\ncondition: s and keywords\nkeywords: [evil]", "keyword searches"),
    ("s: {TargetFilename|cidr: 10.0.0.0/8}\ncondition: s", "is not supported"),
    ("s: {ParentImage: /bin/sh}\ncondition: s", "field 'ParentImage'"),
    ("s: {CommandLine|contains: curl}\ncondition: s", "CommandLine needs command lines enabled"),
    ("s: {TargetFilename|fieldref: Image}\ncondition: s", "is not supported"),
    ("s: {TargetFilename: x}\ncondition: s and missing_sel", "missing_sel"),
])
def test_a_rule_the_engine_cannot_evaluate_is_one_line_naming_file_and_construct(tmp_path, text, needle):
    path = rule_file(tmp_path, text)
    proc = subprocess.run(CLI + ["run", "--rules", str(path), "--output", "jsonl"], capture_output=True,
                          text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert lines[0].startswith(f"otel-fsnotify: error: {path}") and needle in lines[0], lines[0]


@pytest.mark.parametrize("text, needle", [
    ("title: x\nid: [unclosed\n", "not valid YAML"),
    ("title: no id\nlogsource: {product: linux, category: file_event}\n"
     "detection: {s: {TargetFilename: x}, condition: s}\n", "has no id"),
    ("just a string\n", "not a valid Sigma rule"),
])
def test_a_bad_rule_file_is_one_line_and_exit_2(tmp_path, text, needle):
    path = tmp_path / "bad.yml"
    path.write_text(text)
    proc = subprocess.run(CLI + ["run", "--rules", str(path), "--output", "jsonl"], capture_output=True,
                          text=True, timeout=120)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert str(path) in lines[0] and needle in lines[0], lines[0]


def test_the_same_id_in_two_files_is_refused(tmp_path):
    rule_file(tmp_path, "s: {TargetFilename: /a}\ncondition: s", name="one.yml")
    rule_file(tmp_path, "s: {TargetFilename: /b}\ncondition: s", name="two.yml")
    with pytest.raises(RuleError, match="also used in .*one.yml"):
        RuleSet.load([str(tmp_path)])


def test_the_shipped_rule_pack_loads():
    rules = RuleSet.load(["config/rules"])
    assert len(rules.rules) == 17 and all(r.ruleset == "rules" for r in rules.rules)
