"""The HTTP protocol ``athar serve`` runs (``api.http_protocol``): a response's head and body leave in one send, and
what reaches the client over a real socket is exactly the HTTP uvicorn meant to send (keep-alive, pipelining,
HEAD, problems, closing connections)."""

from __future__ import annotations

import asyncio
import json
import re
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from api.http_protocol import FLUSH_AT, HANDLED, CoalescingHttpToolsProtocol, _CoalescingTransport
from api.settings import Settings
from ledger.paths import ENV_DATABASE_URL, ENV_HOME
from scanner_cli.commands import admin
from tests.integration.server import running_server
from tests.reliability.harness import now_clock
from tests.support import GTIN, make_world


class Recording(asyncio.Transport):
    """Stands for the socket: records what the protocol hands it."""

    def __init__(self) -> None:
        super().__init__()
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes | bytearray | memoryview) -> None:
        assert not self.closed, "written after close"
        self.sent.append(bytes(data))

    def writelines(self, lines: Any) -> None:  # one system call: recorded as one send
        self.write(b"".join(lines))

    def write_eof(self) -> None:
        self.sent.append(b"<EOF>")

    def abort(self) -> None:
        self.closed = True

    def get_write_buffer_size(self) -> int:
        return 7

    def close(self) -> None:
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 5000)}.get(name, default)


def test_a_head_and_its_body_leave_together_at_once_and_a_lone_write_a_turn_later() -> None:
    async def scenario() -> list[list[bytes]]:
        raw = Recording()
        t = _CoalescingTransport(raw, asyncio.get_running_loop())
        seen = []
        t.write(b"HTTP/1.1 200 OK\r\n\r\n")
        seen.append(list(raw.sent))  # held
        t.write(b"body")
        seen.append(list(raw.sent))  # the second write sends both, in one call
        t.write(b"chunk")
        seen.append(list(raw.sent))  # a lone write is held ...
        await asyncio.sleep(0)
        seen.append(list(raw.sent))  # ... until the loop's next callback
        t.write(b"last")
        t.close()  # closing sends what is held first
        seen.append(list(raw.sent))
        assert raw.closed and t.get_extra_info("peername") == ("127.0.0.1", 5000)
        await asyncio.sleep(0)  # the callback scheduled for "last" finds nothing left to send
        seen.append(list(raw.sent))
        return seen

    held, pair, lone, turn, closed, after = asyncio.run(scenario())
    assert held == []
    assert pair == lone == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert turn == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"chunk"]
    assert closed == after == [b"HTTP/1.1 200 OK\r\n\r\nbody", b"chunk", b"last"]


def test_what_is_held_when_the_peer_has_gone_is_dropped() -> None:
    async def scenario() -> list[bytes]:
        raw = Recording()
        t = _CoalescingTransport(raw, asyncio.get_running_loop())
        t.write(b"late reply")
        raw.closed = True  # the client hung up within the same turn
        await asyncio.sleep(0)
        return raw.sent

    assert asyncio.run(scenario()) == []


def test_big_writes_leave_at_once_and_every_other_call_comes_after_the_held_writes() -> None:
    async def scenario() -> None:
        raw = Recording()
        t = _CoalescingTransport(raw, asyncio.get_running_loop())
        t.write(b"b" * FLUSH_AT)  # alone, but big: sent at once
        assert raw.sent == [b"b" * FLUSH_AT]
        chunk = bytearray(b"mutable")
        t.write(chunk)
        chunk[:] = b"changed"  # what was written is what is sent, whatever the caller does with its buffer
        assert t.get_write_buffer_size() == 7 + 7
        t.write_eof()
        assert raw.sent[1:] == [b"mutable", b"<EOF>"]
        t.writelines([b"x", b"y"])
        assert raw.sent[3:] == [b"xy"]
        t.write(b"dropped")
        t.abort()  # abort: what is held is discarded, as the transport's own buffer is
        await asyncio.sleep(0)
        assert raw.sent[3:] == [b"xy"] and raw.closed

    asyncio.run(scenario())


def test_the_installed_uvicorn_calls_only_transport_methods_the_wrapper_handles() -> None:
    """An upgrade of uvicorn that calls another transport method (one that would act before the held writes)
    fails here instead of reordering responses in service."""
    import uvicorn.protocols

    root = Path(uvicorn.protocols.__file__).parent
    called = set()
    for source in (root / "http" / "httptools_impl.py", root / "http" / "flow_control.py", root / "utils.py",
                   *(root / "websockets").glob("*.py")):
        called |= set(re.findall(r"\btransport\.(\w+)", source.read_text()))
    assert {"write", "close", "is_closing"} <= called  # the scan found uvicorn's calls
    assert called <= HANDLED, called - HANDLED


def test_athar_serve_runs_this_protocol(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from uvicorn.importer import import_from_string
    from uvicorn.supervisors import Multiprocess

    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_world(tmp_path / "home", url, clock=now_clock())
    seen: dict[str, Any] = {}
    # no server: its settings
    monkeypatch.setattr(Multiprocess, "run", lambda self: seen.update(vars(self.config)))
    # _serve sets the environment its workers read: restored after the test, so no later test serves this ledger
    for name in (ENV_HOME, ENV_DATABASE_URL, "UV_TCP_SINGLE_ACCEPT"):
        monkeypatch.setenv(name, "")
        monkeypatch.delenv(name)
    admin._serve(tmp_path / "home", url, "127.0.0.1", 0, 2, sequencer=False)
    assert seen["app"] == "api.app:app_from_env" and seen["workers"] == 2
    assert import_from_string(seen["http"]) is CoalescingHttpToolsProtocol


@pytest.fixture
def base(tmp_path: Path) -> Iterator[str]:
    url = f"sqlite:///{tmp_path / 'ledger.db'}"
    make_world(tmp_path / "home", url, clock=now_clock())
    settings = Settings(data_dir=tmp_path / "home", database_url=url, overdue_check_seconds=0)
    with running_server(settings) as b:
        yield b


def _split_responses(data: bytes, heads: list[bool]) -> list[tuple[bytes, dict[bytes, bytes], bytes]]:
    """Cut a byte stream into responses (Content-Length framed; a HEAD's has no body), all of it used."""
    out = []
    for head in heads:
        head_end = data.index(b"\r\n\r\n")
        status, *lines = data[:head_end].split(b"\r\n")
        headers = {k.lower(): v.strip() for k, v in (line.split(b":", 1) for line in lines)}
        length = 0 if head else int(headers[b"content-length"])
        out.append((status, headers, data[head_end + 4:head_end + 4 + length]))
        data = data[head_end + 4 + length:]
    assert data == b"", data[:200]
    return out


def test_pipelined_keep_alive_requests_get_whole_responses_in_order(base: str) -> None:
    host, port = base.removeprefix("http://").split(":")
    paths = [f"/v1/packs/{GTIN}/NOSUCHSERIAL{i}" for i in range(5)] + ["/v1/log/checkpoint", "/v1/nope"]
    requests = [f"GET {p} HTTP/1.1\r\nHost: x\r\n\r\n".encode() for p in paths]
    requests += [b"HEAD /v1/ready HTTP/1.1\r\nHost: x\r\n\r\n",
                 b"GET /v1/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"]
    data = b""
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(b"".join(requests))  # all at once: the server answers them in turn on one connection
        while chunk := sock.recv(65536):  # until the server closes, as the last request asked
            data += chunk
    answers = _split_responses(data, [False] * 7 + [True, False])
    for i, (status, _, body) in enumerate(answers[:5]):
        assert status == b"HTTP/1.1 200 OK"
        assert json.loads(body)["serial"] == f"NOSUCHSERIAL{i}"
    assert answers[5][0] == b"HTTP/1.1 200 OK" and "\u2014 " in answers[5][2].decode()  # the signed note
    assert answers[6][0] == b"HTTP/1.1 404 Not Found"
    assert answers[6][1][b"content-type"] == b"application/problem+json"
    assert answers[7][0] == b"HTTP/1.1 405 Method Not Allowed"  # a HEAD: headers only, its body left out
    assert answers[8][0] == b"HTTP/1.1 200 OK" and json.loads(answers[8][2])
    assert answers[8][1][b"connection"] == b"close"


def _raw_exchange(base: str, request: bytes) -> bytes:
    host, port = base.removeprefix("http://").split(":")
    data = b""
    with socket.create_connection((host, int(port)), timeout=20) as sock:
        sock.sendall(request)
        while chunk := sock.recv(65536):
            data += chunk
    return data


def test_a_response_of_many_segments_arrives_whole(base: str) -> None:
    data = _raw_exchange(base, b"GET /openapi.json HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    ((status, _, body),) = _split_responses(data, [False])  # Content-Length framed: every byte accounted for
    assert status == b"HTTP/1.1 200 OK" and len(body) > 30_000
    assert json.loads(body)["openapi"].startswith("3.")


def test_a_malformed_request_gets_its_whole_400_then_the_connection_closes(base: str) -> None:
    data = _raw_exchange(base, b"NOT HTTP AT ALL\r\n\r\n")
    ((status, headers, body),) = _split_responses(data, [False])
    assert status == b"HTTP/1.1 400 Bad Request" and headers[b"connection"] == b"close" and body


def test_the_server_answers_ordinary_clients_alike(base: str) -> None:
    with httpx.Client(base_url=base, timeout=20) as http:
        for _ in range(3):  # keep-alive: the same connection each time
            r = http.get(f"/v1/packs/{GTIN}/NOSUCH")
            assert r.status_code == 200 and r.json()["verdict"] == "UNKNOWN"
        too_big = http.post("/v1/events", content=b"x" * (16 * 1024 * 1024 + 1),
                            headers={"content-type": "application/json"})
        assert too_big.status_code == 413 and too_big.json()["code"] == "body_too_large"

        def chunks() -> Iterator[bytes]:
            yield b"{not json"

        broken = http.post("/v1/events", content=chunks(), headers={"content-type": "application/json"})
        assert broken.status_code in (400, 422) and broken.headers["content-type"] == "application/problem+json"
