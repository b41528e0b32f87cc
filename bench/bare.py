"""The HTTP floor: what this machine and uvicorn serve with no application work at all.

An ASGI app that reads each request whole and answers 200 with a small JSON body, run by uvicorn exactly as
``athar serve`` runs athar (the same number of workers, the same HTTP protocol class and event loop), driven by
the same load generator at 64 clients. A pack verification or an append can go no faster than this on the same
cores, so the HTTP figures are shown as a fraction of it, as the per-event figures are of the CPU floor.
"""

from __future__ import annotations

import contextlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from starlette.types import Receive, Scope, Send

from bench.common import http_server
from bench.loadgen import Load, LoadResult, run

BODY = b'{"ok":true}'
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    more = True
    while more:  # read the whole body, as athar does
        message = await receive()
        if message["type"] != "http.request":
            return
        more = message.get("more_body", False)
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": BODY})


@contextlib.contextmanager
def serve_bare(workers: int) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """The bare app under uvicorn on a free port, ready when yielded, stopped afterwards."""
    code = (f"import uvicorn; uvicorn.run('bench.bare:app', host='127.0.0.1', port={{port}}, workers={workers}, "
            "log_level='warning', lifespan='off', http='api.http_protocol:CoalescingHttpToolsProtocol')")
    with tempfile.TemporaryDirectory() as tmp, \
            http_server([sys.executable, "-c", code], Path(tmp) / "bare.log", "/", workers,
                        "the bare HTTP server", timeout=30) as server:
        yield server


def measure(workers: int, duration: float, paths: Sequence[str], bodies: Sequence[bytes]
            ) -> tuple[LoadResult, LoadResult, str, str]:
    """GETs of ``paths`` and POSTs of ``bodies`` (each reused as needed) at 64 clients, one after the other;
    their results and CPU notes."""
    clients = 64
    gets = [paths[i % len(paths)] for i in range(200_000)]
    posts = [bodies[i % len(bodies)] for i in range(200_000)]
    with serve_bare(workers) as (base, proc):
        (get,), get_note = run([Load("bare GET", base, "GET", gets, clients, procs=2)], duration, proc.pid)
        (post,), post_note = run([Load("bare POST", base, "POST", posts, clients, procs=2)], duration, proc.pid)
    return get, post, get_note, post_note
