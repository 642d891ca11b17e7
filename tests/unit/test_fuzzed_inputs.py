"""Whatever a capture, a config or a spool holds, the agent answers with an
event, one clear error or a counted loss: never an unexpected exception
(hypothesis, a bounded number of examples per run)."""

from __future__ import annotations

import os
import tempfile

from hypothesis import HealthCheck, given, settings, strategies as st

from otel_fsnotify import config
from otel_fsnotify.delivery.spool import SEGMENT_MAGIC, Spool, encode_entry, parse_frames
from otel_fsnotify.event import FIELD_NAMES, CaptureError, Event, from_json_line, to_json_line
from otel_fsnotify.otel.entry import LogEntry

BOUNDED = settings(max_examples=150, deadline=None,
                   suppress_health_check=[HealthCheck.function_scoped_fixture])

_json_scalars = st.one_of(st.none(), st.booleans(), st.integers(min_value=-2**70, max_value=2**70),
                          st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=20))
_json = st.recursive(_json_scalars, lambda inner: st.one_of(
    st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=12), inner, max_size=4)), max_leaves=12)


@BOUNDED
@given(st.dictionaries(st.sampled_from(FIELD_NAMES + ("bogus",)), _json, max_size=8))
def test_a_capture_line_is_an_event_or_one_error_naming_its_line(fields):
    import json

    try:
        line = json.dumps(fields, allow_nan=True)
    except (TypeError, ValueError):
        return
    try:
        ev = from_json_line(line, "cap.jsonl", 7)
    except CaptureError as exc:
        assert str(exc).startswith("cap.jsonl:7: ")
        return
    assert from_json_line(to_json_line(ev)) == ev  # what is accepted round-trips


@BOUNDED
@given(st.binary(max_size=300))
def test_arbitrary_bytes_in_a_capture_are_an_error_not_a_crash(raw):
    try:
        from_json_line(raw, "cap.jsonl", 1)
    except CaptureError:
        pass


_config_keys = st.sampled_from(["backend", "output", "output_file", "fields", "duration",
                                "stats_interval", "log_level", "filters", "otlp", "nope"])
_filter = st.dictionaries(st.sampled_from(["tracer_pid", "tracee_pid", "tracer_group",
                                           "inotify_only", "fanotify_only", "x"]), _json, max_size=3)
_otlp = st.dictionaries(st.sampled_from(["endpoint", "protocol", "timeout", "headers", "batch_size",
                                         "max_backoff", "spool_max_bytes", "compression", "y"]),
                        _json, max_size=3)


@BOUNDED
@given(st.dictionaries(_config_keys, st.one_of(_json, _filter, _otlp), max_size=5))
def test_a_config_is_accepted_or_refused_in_one_line(raw):
    try:
        config.from_mapping(raw, "agent.toml")
    except config.ConfigError as exc:
        text = str(exc)
        assert text.startswith("agent.toml: ") and "\n" not in text


@BOUNDED
@given(st.text(max_size=200))
def test_any_config_file_text_is_a_config_or_one_error(text):
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as fh:
        fh.write(text)
    try:
        config.load(fh.name)
    except config.ConfigError as exc:
        assert "\n" not in str(exc).strip() or "not valid TOML" in str(exc)
    finally:
        os.unlink(fh.name)


def _frames(n: int) -> list[bytes]:
    return [encode_entry(LogEntry(f"u{i}", i, Event(name=f"f{i}"))) for i in range(n)]


@BOUNDED
@given(st.binary(max_size=2000))
def test_any_bytes_parse_as_frames_or_counted_damage(data):
    found = parse_frames(data, complete=True)
    assert found.used == len(data)
    assert found.lost >= (1 if data and not found.payloads else 0)


@BOUNDED
@given(st.lists(st.tuples(st.integers(min_value=0, max_value=4000), st.integers(0, 255)),
                max_size=6),
       st.integers(min_value=0, max_value=300))
def test_a_damaged_spool_opens_and_delivers_every_intact_frame(flips, cut):
    frames = _frames(20)
    with tempfile.TemporaryDirectory() as d:
        spool_dir = os.path.join(d, "spool")
        sp = Spool(spool_dir, 1 << 20, 1 << 20)
        for f in frames:
            sp.append(f)
        sp.close()
        seg = sorted(n for n in os.listdir(spool_dir) if n.endswith(".seg"))[-1]
        path = os.path.join(spool_dir, seg)
        data = bytearray(open(path, "rb").read())
        touched = set()
        for at, value in flips:  # flipped bytes (never the segment header)
            at = len(SEGMENT_MAGIC) + at % (len(data) - len(SEGMENT_MAGIC))
            data[at] ^= value or 1
            touched.add(at)
        if cut % 200:  # a torn tail
            del data[len(data) - cut % 200:]
        with open(path, "wb") as fh:
            fh.write(data)
        sp = Spool(spool_dir, 1 << 20, 1 << 20)
        payloads, pos, lost = sp.read(1000)
        # every frame no flip or cut reached is delivered, in order
        intact, off = [], len(SEGMENT_MAGIC)
        for f in frames:
            end = off + len(f)
            if end <= len(data) and not any(off <= t < end for t in touched):
                intact.append(f[12:])
            off = end
        assert [p for p in payloads if p in intact] == intact
        assert len(payloads) + lost + sp.corrupt_events >= len(intact)
        sp.ack(pos, len(payloads))
        sp.close()


_RULE_PARTS = st.sampled_from([
    "title: t\n", "id: 00000000-0000-4000-8000-000000000001\n", "level: high\n", "level: nope\n",
    "logsource: {product: linux, category: file_event}\n", "logsource: [x]\n",
    "detection:\n  s: {TargetFilename|endswith: /x}\n  condition: s\n",
    "detection:\n  s: {TargetFilename|re: '('}\n  condition: s\n",
    "detection:\n  s: {Image|cidr: 1.2.3.4/8}\n  condition: s\n",
    "detection:\n  condition: s or\n", "detection: 5\n", "---\n", ": :\n", "- a\n", "\t\n",
])


@BOUNDED
@given(st.lists(_RULE_PARTS, max_size=8), st.text(max_size=40))
def test_any_rule_file_is_rules_or_one_error_naming_the_file(tmp_path_factory, parts, noise):
    from otel_fsnotify.rules.compiler import RuleError
    from otel_fsnotify.rules.engine import RuleSet

    path = tmp_path_factory.mktemp("rules") / "fuzz.yml"
    path.write_text("".join(parts) + noise)
    try:
        RuleSet.load([str(path)])
    except RuleError as exc:
        assert str(path) in str(exc) and "\n" not in str(exc)
