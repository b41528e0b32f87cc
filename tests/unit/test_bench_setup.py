"""The benchmark's set-up client resends an event whose outcome the server could not tell, as the API asks of
every client, and still stops at a real refusal, or at a 503 from something other than athar
(``bench.loadgen.submit_all``)."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from bench.loadgen import SETUP_ATTEMPTS, submit_all

UNKNOWN = {"type": "/problems/outcome_unknown", "status": 503, "code": "outcome_unknown",
           "title": "The outcome of the write is not known; resend the same signed event"}


class _Server:
    """Answers 503 outcome_unknown to the first ``unknown`` posts of each body, then 201; a body starting with
    ``bad`` is refused with 409."""

    def __init__(self, unknown: int) -> None:
        self.unknown = unknown
        self.seen: Counter[bytes] = Counter()
        self.lock = threading.Lock()


@pytest.fixture
def server() -> Iterator[tuple[str, _Server]]:
    state = _Server(unknown=0)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["content-length"]))
            with state.lock:
                state.seen[body] += 1
                count = state.seen[body]
            if body.startswith(b"proxy"):  # a proxy in front of the server, out of service
                page = b"<html><body>503 Service Unavailable</body></html>"
                self.send_response(503)
                self.send_header("content-type", "text/html")
                self.send_header("content-length", str(len(page)))
                self.end_headers()
                self.wfile.write(page)
                return
            if body.startswith(b"bad"):
                status, answer = 409, {"code": "custody_violation", "status": 409}
            elif count <= state.unknown:
                status, answer = 503, UNKNOWN
            else:
                status, answer = 201, {"index": 0}
            data = json.dumps(answer).encode()
            self.send_response(status)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: object) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}", state
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_unknown_outcome_is_sent_again_until_answered(server: tuple[str, _Server]) -> None:
    base, state = server
    state.unknown = SETUP_ATTEMPTS - 1
    bodies = [b'{"n": %d}' % i for i in range(6)]
    submit_all(base, bodies, threads=3)
    assert state.seen == Counter({b: SETUP_ATTEMPTS for b in bodies})


def test_an_outcome_unknown_every_time_is_an_error_after_the_last_attempt(server: tuple[str, _Server]) -> None:
    base, state = server
    state.unknown = SETUP_ATTEMPTS
    with pytest.raises(RuntimeError, match="503"):
        submit_all(base, [b'{"n": 1}'], threads=1)
    assert state.seen[b'{"n": 1}'] == SETUP_ATTEMPTS


def test_a_refusal_is_not_sent_again(server: tuple[str, _Server]) -> None:
    base, state = server
    with pytest.raises(RuntimeError, match="409"):
        submit_all(base, [b"bad event"], threads=1)
    assert state.seen[b"bad event"] == 1


def test_a_503_that_is_not_athars_is_a_refusal_not_a_crash(server: tuple[str, _Server]) -> None:
    base, state = server
    with pytest.raises(RuntimeError, match="503"):
        submit_all(base, [b"proxy down"], threads=1)
    assert state.seen[b"proxy down"] == 1
