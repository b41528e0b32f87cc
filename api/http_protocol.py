"""uvicorn's httptools protocol, with a response's head and body sent in one system call.

uvicorn writes a response's status line and headers, then its body, each with a ``transport.write`` of its
own, and under uvloop every write to an idle socket is a ``send`` system call and a TCP segment on its own: two
per response, and the client is woken twice. Here a write is held until the next one, and the two leave
together (Starlette sends a plain response's head and body back to back, so that is one ``send``); a write
left alone (a head with no body, the last chunk of a stream) goes out from the loop's next callback. Sending at
the second write rather than at the end of the loop's turn keeps the response ahead of the request's remaining
work (the access-log line): the client waits no longer than before. A write of ``FLUSH_AT`` bytes or more goes
out at once, so a big body meets the transport's flow control as before.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

#: uvicorn's own high-water mark for a connection's write buffer
FLUSH_AT = 64 * 1024


class _CoalescingTransport:
    """A transport that holds a write until the next write or the loop's next callback, whichever comes first,
    and sends what it holds in one system call. Whatever else the protocol asks of it is the wrapped
    transport's, after what is held has been sent (``abort`` discards it, as the transport's own buffer)."""

    __slots__ = ("_held", "_held_bytes", "_loop", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._held: list[bytes] = []
        self._held_bytes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        held = data if type(data) is bytes else bytes(data)  # a caller's buffer may change before it is sent
        self._held.append(held)
        self._held_bytes += len(held)
        if len(self._held) > 1 or self._held_bytes >= FLUSH_AT:
            self._flush()  # a response's head and body: sent now, not after the request's remaining work
        else:
            self._loop.call_soon(self._flush)  # a lone write (a head without body, a chunk) waits a turn at most

    def writelines(self, lines: Iterable[bytes | bytearray | memoryview]) -> None:
        for data in lines:
            self.write(data)

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._held, self._held_bytes = [], 0
        self._transport.abort()

    def get_write_buffer_size(self) -> int:
        return self._held_bytes + self._transport.get_write_buffer_size()

    def _flush(self) -> None:
        held = self._held
        if not held:
            return
        self._held, self._held_bytes = [], 0
        if self._transport.is_closing():
            return  # the peer has gone: nothing more reaches it
        if len(held) == 1:
            self._transport.write(held[0])
        else:
            self._transport.writelines(held)  # one system call under uvloop, without joining the buffers

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """What ``athar serve`` runs (``uvicorn.run(..., http="api.http_protocol:CoalescingHttpToolsProtocol")``)."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        wrapped: Any = _CoalescingTransport(transport, asyncio.get_running_loop())
        super().connection_made(wrapped)


#: uvicorn's ``http`` setting for the servers the tests start (``athar serve`` names the class the same way)
HTTP_PROTOCOL = f"{__name__}:{CoalescingHttpToolsProtocol.__name__}"

#: the transport methods uvicorn's httptools protocol and its helpers call; a test checks the installed uvicorn
#: calls no other, so that an upgrade cannot reach past the held writes unnoticed
HANDLED = frozenset({"write", "writelines", "write_eof", "close", "abort", "get_write_buffer_size", "is_closing",
                     "get_extra_info", "pause_reading", "resume_reading", "set_protocol"})
