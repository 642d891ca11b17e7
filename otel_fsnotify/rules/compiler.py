"""Sigma rules compiled once into Python code that runs per event.

pySigma parses each rule and resolves its condition (`1 of sel_*`, `all of
them`, parentheses, `not`) into a tree of AND / OR / NOT over field
comparisons; the modifiers (`contains`, `startswith`, `endswith`, `all`,
`cased`, `re` with its flags, `exists`) are already applied as wildcards,
regular expressions and value types. This module turns each tree into one
Python expression over the event's field values and joins the rules of a
logsource category into one generated function: a per-event cost of a few
comparisons per rule, no tree walking. Values and patterns reach the code as
constants (K[i], R[i]), never as source text.

Matching is Sigma's: strings compare case-insensitively unless `cased`; `*`
and `?` are wildcards; a regular expression matches anywhere in the value
unless anchored. An unknown value (0 / "" in the event) is null.
"""

from __future__ import annotations

import re
from typing import Callable, NamedTuple

from sigma.conditions import (
    ConditionAND, ConditionFieldEqualsValueExpression, ConditionNOT, ConditionOR)
from sigma.types import (
    SigmaCasedString, SigmaExists, SigmaNull, SigmaNumber, SigmaRegularExpression,
    SigmaRegularExpressionFlag, SigmaString, SpecialChars)

from .taxonomy import FIELDS

_NUMERIC = frozenset(("tracee_pid",))
_RE_FLAGS = {
    SigmaRegularExpressionFlag.IGNORECASE: re.IGNORECASE,
    SigmaRegularExpressionFlag.MULTILINE: re.MULTILINE,
    SigmaRegularExpressionFlag.DOTALL: re.DOTALL,
}


class RuleError(ValueError):
    """A rule the engine cannot evaluate (one line: file, rule, construct)."""


class Unsupported(Exception):
    """A construct of one rule (the loader names the file and rule)."""


class Compiled(NamedTuple):
    """One rule's condition as a Python expression over field variables."""

    expr: str
    fields: frozenset[str]  # event-side names of the fields it reads


class _Builder:
    """Collects constants and regexes shared by all rules of one function."""

    def __init__(self):
        self.consts: list = []
        self.regexes: list[re.Pattern] = []

    def const(self, value) -> str:
        self.consts.append(value)
        return f"K[{len(self.consts) - 1}]"

    def regex(self, pattern: re.Pattern) -> str:
        self.regexes.append(pattern)
        return f"R[{len(self.regexes) - 1}]"

    def compile(self, node, fields: set[str]) -> str:
        if isinstance(node, ConditionAND):
            return "(" + " and ".join(self.compile(a, fields) for a in node.args) + ")"
        if isinstance(node, ConditionOR):
            return "(" + " or ".join(self.compile(a, fields) for a in node.args) + ")"
        if isinstance(node, ConditionNOT):
            return "(not " + self.compile(node.args[0], fields) + ")"
        if isinstance(node, ConditionFieldEqualsValueExpression):
            return self._compare(node.field, node.value, fields)
        raise Unsupported(_construct(node))

    def _compare(self, sigma_field: str, value, fields: set[str]) -> str:
        spec = FIELDS.get(sigma_field)
        if spec is None:
            raise Unsupported(f"field {sigma_field!r} (known: {', '.join(FIELDS)})")
        name = spec.event
        fields.add(name)
        raw, low = f"v_{name}", f"l_{name}"
        if isinstance(value, SigmaNull):
            return f"({raw} is None)"
        if isinstance(value, SigmaExists):
            return f"({raw} is {'not ' if value.exists else ''}None)"
        if isinstance(value, SigmaNumber):
            number = value.number
            return f"({raw} == {self.const(number if name in _NUMERIC else str(number))})"
        if isinstance(value, SigmaRegularExpression):
            flags = 0
            for flag in value.flags or ():
                flags |= _RE_FLAGS.get(flag, 0)
            try:
                pattern = re.compile(str(value.regexp), flags)
            except re.error as exc:
                raise Unsupported(f"regular expression {str(value.regexp)!r}: {exc}") from None
            return f"({raw} is not None and {self.regex(pattern)}.search(str({raw})) is not None)"
        if isinstance(value, SigmaString):
            return self._string(value, raw, low, name)
        raise Unsupported(f"{type(value).__name__} values (field {sigma_field})")

    def _string(self, value: SigmaString, raw: str, low: str, name: str) -> str:
        cased = isinstance(value, SigmaCasedString)
        var = raw if cased or name in _NUMERIC else low
        parts = list(value.s)
        if any(isinstance(p, SpecialChars) and p not in (SpecialChars.WILDCARD_MULTI,
                                                         SpecialChars.WILDCARD_SINGLE) for p in parts):
            raise Unsupported("placeholders (the expand modifier)")
        text = [p for p in parts if isinstance(p, str)]
        star = SpecialChars.WILDCARD_MULTI
        fold = (lambda s: s) if cased else str.lower
        if len(text) == len(parts) and name in _NUMERIC:
            return f"({raw} == {self.const(_int_or_str(''.join(text)))})"
        if len(text) == len(parts):
            return f"({var} == {self.const(fold(''.join(text)))})"
        if len(text) == 1:  # one literal, wildcards only around it: the fast forms
            inner = fold(text[0])
            if parts == [star, text[0], star]:
                return f"({var} is not None and {self.const(inner)} in {var})"
            if parts == [text[0], star]:
                return f"({var} is not None and {var}.startswith({self.const(inner)}))"
            if parts == [star, text[0]]:
                return f"({var} is not None and {var}.endswith({self.const(inner)}))"
        regex = "".join(".*" if p is star else "." if isinstance(p, SpecialChars) else re.escape(p)
                        for p in parts)
        pattern = re.compile(regex, re.DOTALL | (0 if cased else re.IGNORECASE))
        return f"({raw} is not None and {self.regex(pattern)}.fullmatch(str({raw})) is not None)"


def _int_or_str(text: str):
    try:
        return int(text)
    except ValueError:
        return text


def _construct(node) -> str:
    name = type(node).__name__
    if name == "ConditionValueExpression":
        return "keyword searches (values without a field)"
    if name == "ConditionFieldValueInExpression":
        return "field IN lists"
    return f"the condition element {name}"


def compile_rules(trees: list[list]) -> tuple[Callable, list[str]]:
    """One function for a group of rules: `match(values, out)` appends the
    index of every rule whose condition holds. trees[i] is rule i's parsed
    conditions (a rule with several conditions matches if any does).
    Returns the function and the event fields it reads, in argument order."""
    b = _Builder()
    exprs, used = [], set()
    for conditions in trees:
        fields: set[str] = set()
        exprs.append(" or ".join(b.compile(tree, fields) for tree in conditions))
        used |= fields
    order = sorted(used)
    args = ", ".join(f"v_{n}, l_{n}" for n in order)
    lines = [f"def match({args}{', ' if args else ''}out):"]
    lines += [f"    if {expr}:\n        out.append({i})" for i, expr in enumerate(exprs)]
    lines.append("    return out")
    namespace = {"K": tuple(b.consts), "R": tuple(b.regexes)}
    exec(compile("\n".join(lines), "<otel-fsnotify rules>", "exec"), namespace)  # noqa: S102
    return namespace["match"], order
