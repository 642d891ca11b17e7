"""Sigma rules in the agent: load them once (file or directory), refuse what
cannot be evaluated in one line, and mark every event with the rules it
matches (`Event.rules`) and the highest level among them (`Event.severity`).

    RuleSet.load(paths) -> RuleSet.apply(event) -> event (+ rules, severity)

Only rules whose logsource applies run: product linux (or none) and one of
the file categories of taxonomy.py; the others are counted and skipped at
load, with one log line.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Callable, Iterable, NamedTuple

import msgspec
import yaml
from sigma.collection import SigmaCollection
from sigma.exceptions import SigmaError

from .. import masks
from ..event import Event
from ..otel.mapping import user_name
from .compiler import RuleError, Unsupported, compile_rules
from .taxonomy import CATEGORIES, LEVELS, PRODUCT

SEVERITY_ORDER = ("", "trace", "debug", "info", "warn", "error", "fatal")
_ACTION_CATEGORY = {action: cat for cat, actions in CATEGORIES.items() for action in actions}
CMDLINE_TTL_S = 1.0


class RuleInfo(NamedTuple):
    """What a record says about a rule it matched (semconv security_rule.*)."""

    id: str
    title: str
    level: str
    severity: str  # the record's severity the level raises it to
    ruleset: str  # the --rules path it came from (its name)
    source: str  # its file


class RuleSet:
    def __init__(self, rules: list[tuple[RuleInfo, str, list]],
                 command_line: Callable[[int], str] | None = None, skipped: int = 0):
        self.rules = [info for info, _cat, _trees in rules]
        self.by_id = {info.id: info for info in self.rules}
        self.skipped = skipped  # loaded, but their logsource never applies here
        self.command_line = command_line  # pid -> its command line, when rules may read it
        self._groups = {}  # category -> (match function, its fields, rule indices)
        for category in CATEGORIES:
            idx = [i for i, (_info, cat, _t) in enumerate(rules) if cat == category]
            if idx:
                fn, fields = compile_rules([rules[i][2] for i in idx])
                self._groups[category] = (fn, [_READERS[f] for f in fields], idx)
        self._cmdlines: dict[int, tuple[float, str | None]] = {}
        self.counters = {"rules_loaded": len(self.rules), "rules_matched_events": 0}

    # -- loading ---------------------------------------------------------------------
    @classmethod
    def load(cls, paths: Iterable[str], command_line: Callable[[int], str] | None = None,
             log: logging.Logger | None = None) -> "RuleSet":
        """Every rule under paths (files, or directories searched for .yml
        and .yaml). RuleError (one line) for a bad file or a rule the engine
        cannot evaluate. command_line: the reader CommandLine rules use
        (None: command lines are off, such rules are refused)."""
        rules, seen, skipped = [], {}, 0
        for path in paths:
            ruleset = Path(path).stem if Path(path).is_file() else Path(path).name
            for file in _rule_files(path):
                for rule in _parse(file):
                    applies, category = _category(rule)
                    if not applies:
                        skipped += 1
                        continue
                    info, trees = _compile_one(rule, file, ruleset, command_line is not None)
                    if info.id in seen:
                        raise RuleError(f"{file}: rule id {info.id} is also used in {seen[info.id]}")
                    seen[info.id] = file
                    rules.append((info, category, trees))
        if skipped and log:
            log.info("rules: %d rules skipped: their logsource is not a Linux file category "
                     "(%s)", skipped, ", ".join(CATEGORIES))
        try:
            return cls(rules, command_line, skipped)
        except Unsupported as exc:  # compiled already per rule: not expected here
            raise RuleError(f"rules: {exc}") from None

    # -- per event ---------------------------------------------------------------------
    def match(self, ev: Event) -> list[RuleInfo]:
        group = self._groups.get(_ACTION_CATEGORY.get(_action(ev), ""))
        if group is None:
            return []
        fn, readers, idx = group
        values = []
        for read in readers:
            raw = read(self, ev)
            values.append(raw)
            values.append(raw.lower() if isinstance(raw, str) else raw)
        hits = fn(*values, [])
        return [self.rules[idx[i]] for i in hits]

    def apply(self, ev: Event) -> Event:
        """The event with the ids of the rules it matched and its severity
        raised to the highest of their levels (unchanged if none)."""
        hits = self.match(ev)
        if not hits:
            return ev
        self.counters["rules_matched_events"] += 1
        hits.sort(key=lambda h: SEVERITY_ORDER.index(h.severity), reverse=True)  # most severe first
        severity = hits[0].severity
        if SEVERITY_ORDER.index(ev.severity) > SEVERITY_ORDER.index(severity):
            severity = ev.severity
        return msgspec.structs.replace(ev, rules=[h.id for h in hits], severity=severity)

    # field readers (taxonomy Field.event): None when the event does not know it
    def _user(self, ev: Event) -> str | None:
        if not (ev.tracee_pid and ev.tracee_comm):
            return None  # the identity was never read: its uid 0 is not a fact
        return user_name(ev.tracee_uid)

    def _command_line(self, ev: Event) -> str | None:
        pid = ev.tracee_pid
        if not (self.command_line and pid):
            return None
        now = time.monotonic()
        hit = self._cmdlines.get(pid)
        if hit is None or now - hit[0] > CMDLINE_TTL_S:
            if len(self._cmdlines) > 4096:
                self._cmdlines.clear()
            hit = (now, self.command_line(pid) or None)
            self._cmdlines[pid] = hit
        return hit[1]


def _action(ev: Event) -> str:
    if ev.type == "fim":
        return ev.action
    if ev.type == "inotify":
        return masks.action(ev.i_mask, fanotify=False)
    if ev.type == "fanotify":
        return masks.action(ev.fa_mask, fanotify=True)
    return ""


def _path(_rs, ev: Event) -> str | None:
    if ev.path:
        return ev.path
    if ev.type == "fanotify" and ev.name.startswith("/"):
        return ev.name
    return None


_READERS = {
    "path": _path,
    "old_path": lambda _rs, ev: ev.old_path or None,
    "tracee_exe": lambda _rs, ev: ev.tracee_exe or None,
    "tracee_pid": lambda _rs, ev: ev.tracee_pid or None,
    "tracee_user": RuleSet._user,
    "tracee_command_line": RuleSet._command_line,
}


def _rule_files(path: str) -> list[str]:
    p = Path(path)
    if p.is_file():
        return [str(p)]
    if p.is_dir():
        found = sorted(str(f) for f in p.rglob("*") if f.suffix in (".yml", ".yaml") and f.is_file())
        if not found:
            raise RuleError(f"{path}: no Sigma rule files (*.yml, *.yaml) in this directory")
        return found
    raise RuleError(f"{path}: no such rule file or directory")


def _parse(file: str) -> list:
    try:
        with open(file, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"{file}: cannot read: {getattr(exc, 'strerror', None) or exc}") from None
    try:
        docs = list(yaml.safe_load_all(text))
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        line = f" line {where.line + 1}:" if where else ""
        why = getattr(exc, "problem", None) or getattr(exc, "reason", None) or exc
        raise RuleError(f"{file}:{line} not valid YAML: {_one_line(why)}") from None
    if not all(isinstance(d, dict) for d in docs if d is not None):
        raise RuleError(f"{file}: not a valid Sigma rule: a rule is a YAML mapping (title, id, "
                        "logsource, detection...)")
    try:
        collection = SigmaCollection.from_yaml(text)
    except SigmaError as exc:
        raise RuleError(f"{file}: not a valid Sigma rule: {_one_line(exc)}") from None
    except (AttributeError, TypeError, ValueError, KeyError) as exc:  # pySigma on odd shapes
        raise RuleError(f"{file}: not a valid Sigma rule: {_one_line(exc)}") from None
    if not collection.rules:
        raise RuleError(f"{file}: no Sigma rule in this file")
    return collection.rules


def _category(rule) -> tuple[bool, str]:
    ls = rule.logsource
    product = (ls.product or PRODUCT).lower()
    category = (ls.category or "").lower()
    return product == PRODUCT and category in CATEGORIES, category


def _compile_one(rule, file: str, ruleset: str, command_line: bool) -> tuple[RuleInfo, list]:
    title = rule.title or "(untitled)"
    if rule.id is None:
        raise RuleError(f"{file}: rule {title!r} has no id (events name the rules they match by id)")
    level = str(rule.level.name).lower() if rule.level else "medium"
    try:
        trees = [c.parsed for c in rule.detection.parsed_condition]
        compile_rules([trees])  # refuse it now, naming it, rather than with its group
    except Unsupported as exc:
        raise RuleError(f"{file}: rule {title!r}: {exc} is not supported") from None
    except SigmaError as exc:
        raise RuleError(f"{file}: rule {title!r}: {_one_line(exc)}") from None
    if not command_line and _reads(trees, "CommandLine"):
        raise RuleError(f"{file}: rule {title!r}: CommandLine needs command lines enabled "
                        "(include_command_line = true in [otlp])")
    info = RuleInfo(str(rule.id), title, level, LEVELS.get(level, "warn"), ruleset, file)
    return info, trees


def _reads(trees: list, field: str) -> bool:
    def walk(node) -> bool:
        if getattr(node, "field", None) == field:
            return True
        return any(walk(a) for a in getattr(node, "args", None) or ())
    return any(walk(t) for t in trees)


def _one_line(exc) -> str:
    return " ".join(str(exc).split())
