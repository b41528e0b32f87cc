"""uvicorn's httptools protocol, with the writes of one turn of the event loop sent together.

uvicorn writes a response's status line and headers, then its body, each with a ``transport.write`` of its
own, and under uvloop every write to an idle socket is a ``send`` system call and a TCP segment on its own: two
per response, and the client is woken twice. Buffering the writes made in one turn of the loop and sending them
at its end turns a plain response (headers and body sent back to back by Starlette) into one ``send``; a
streamed response still leaves chunk by chunk, one turn later at most.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class _CoalescingTransport:
    """A transport whose writes are held until the end of the current turn of the loop, then sent as one.
    Everything else is the wrapped transport's; closing it sends what is held first."""

    __slots__ = ("_held", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not self._held:
            self._loop.call_soon(self._flush)
        self._held.append(data)

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._flush()  # an upgraded connection writes on the transport itself from now on
        self._transport.set_protocol(protocol)

    def _flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held = []
        if not self._transport.is_closing():
            self._transport.write(held[0] if len(held) == 1 else b"".join(held))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """What ``athar serve`` runs (``uvicorn.run(..., http="api.http_protocol:CoalescingHttpToolsProtocol")``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = _CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)


#: uvicorn's ``http`` setting for the servers the tests start (``athar serve`` names the class the same way)
HTTP_PROTOCOL = f"{__name__}:{CoalescingHttpToolsProtocol.__name__}"
