"""A small health endpoint for probes (`run --health-listen ADDR:PORT`; off
unless asked for, and a bare port binds 127.0.0.1).

    GET /healthz  200 while the backend is loaded and the loop polled it
                  within STALE_S; 503 otherwise (liveness: restart me)
    GET /readyz   200 while events can go somewhere: the output is not OTLP,
                  or the spool (which holds them while the collector is
                  away) still has room; 503 otherwise (readiness)

Each answer is one line of text with the reason. Served from a daemon thread;
it only reads what the run loop publishes (`Health.polled`, the output's
counters).
"""

from __future__ import annotations

import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALE_S = 30.0
FULL = 0.95  # of spool_max_bytes: not ready (the next events may not fit)


class HealthError(ValueError):
    """A --health-listen value that is not an address (one line)."""


class HealthUnavailable(RuntimeError):
    """The address cannot be listened on (in use, not local): one line."""


def parse_listen(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    if not sep:
        host, port = "127.0.0.1", text
    try:
        number = int(port)
    except ValueError:
        number = -1
    if not 0 < number < 65536:
        raise HealthError(f"health_listen {text!r}: expected [ADDRESS:]PORT, e.g. 127.0.0.1:8787")
    return host.strip("[]") or "127.0.0.1", number


class Health:
    def __init__(self, listen: str, output, spool_limit: int = 0):
        self.host, self.port = parse_listen(listen)
        self.output = output
        self.spool_limit = spool_limit  # bytes; 0: not an OTLP output
        self.last_poll = 0.0
        self.backend = ""
        self._dropped = 0  # dropped_spool_full at the previous /readyz
        health = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self):  # noqa: N802 (http.server's name)
                code, text = health.answer(self.path)
                body = (text + "\n").encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain; charset=utf-8")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args):  # probes every few seconds: no log line each
                pass

        try:
            self.server = ThreadingHTTPServer((self.host, self.port), Handler)
        except OSError as exc:
            raise HealthUnavailable(f"health_listen {listen}: cannot listen: {exc.strerror}") from None
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, name="health", daemon=True).start()

    def polled(self, backend: str) -> None:
        self.backend = backend
        self.last_poll = time.monotonic()

    def answer(self, path: str) -> tuple[int, str]:
        if path == "/healthz":
            age = time.monotonic() - self.last_poll
            if not self.last_poll:
                return 503, "starting: no backend loaded yet"
            if age > STALE_S:
                return 503, f"stalled: the {self.backend} backend was last polled {age:.0f} s ago"
            return 200, f"ok: {self.backend} backend polled {age:.1f} s ago"
        if path == "/readyz":
            if not self.last_poll:
                return 503, "starting: no backend loaded yet"
            if not self.spool_limit:
                return 200, "ready"
            c = self.output.counters()
            spooled, dropped = c.get("spool_bytes", 0), c.get("dropped_spool_full", 0)
            newly, self._dropped = dropped - self._dropped, dropped
            if newly or spooled >= self.spool_limit * FULL:
                return 503, (f"the spool is full ({spooled} of {self.spool_limit} bytes; "
                             f"{dropped} events dropped so far): is the collector reachable?")
            return 200, f"ready: spool {spooled} of {self.spool_limit} bytes"
        return 404, "not found: /healthz or /readyz"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
