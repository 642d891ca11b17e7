"""The health endpoint probes use (`--health-listen`): /healthz while the
backend is polled, /readyz while events can go somewhere — 503 once the
spool holding them for an absent collector is full."""

from __future__ import annotations

import urllib.error
import urllib.request

import pytest

from tests.harness.agent import Agent
from tests.harness.collector import free_port
from tests.harness.poll import until

pytestmark = pytest.mark.host


def get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.status, r.read().decode().strip()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode().strip()
    except urllib.error.URLError as e:  # not listening yet
        return 0, str(e.reason)


def get_once_up(port: int, path: str) -> tuple[int, str]:
    """The answer once the endpoint answers 200: the agent opens it after its
    `started` line, and reports polled once its first poll is done."""
    until(lambda: get(port, path)[0] == 200)
    return get(port, path)


def test_healthz_and_readyz_answer_for_probes(tmp_path):
    port = free_port()
    agent = Agent(tmp_path / "a", "--health-listen", str(port))  # a bare port: 127.0.0.1
    try:
        code, text = get_once_up(port, "/healthz")
        assert code == 200 and text.startswith("ok: tracepoint backend polled"), text
        assert get(port, "/readyz") == (200, "ready")
        assert get(port, "/metrics")[0] == 404
    finally:
        agent.stop()


def test_readyz_fails_when_the_spool_for_an_absent_collector_is_full(tmp_path):
    port = free_port()
    tree = tmp_path / "tree"
    tree.mkdir()
    cfg = tmp_path / "agent.toml"
    cfg.write_text("[otlp]\nspool_max_bytes = 65536\n")
    work = tmp_path / "a"
    agent = Agent(work, "--config", str(cfg), "--health-listen", f"127.0.0.1:{port}", "--watch", str(tree),
                  "--fim-only", "--state-dir", str(work / "state"), "--endpoint",
                  f"http://127.0.0.1:{free_port()}", "--protocol", "http/json",
                  "--spool-dir", str(work / "spool"), output="otlp")
    try:
        agent.wait_ready()
        assert get_once_up(port, "/readyz")[0] == 200
        for batch in range(40):
            for i in range(25):
                (tree / f"f{batch}-{i}").write_text("x" * 100)
            code, text = get(port, "/readyz")
            if code == 503:
                break
            agent.wait_for(lambda e: False, timeout=0.3)
        assert code == 503 and text.startswith("the spool is full"), text
        assert get(port, "/healthz")[0] == 200  # alive: not a reason to restart it
    finally:
        agent.stop()
