"""A minimal HTTP/1.1 keep-alive client on asyncio streams, for the load generator.

httpx costs several milliseconds of CPU per request once dozens of requests share one connection pool, so
with it the load generator, on the same cores as the server, measured itself. This client does only what
the benchmark needs: one connection per closed-loop client, a request written in one call, the status line,
Content-Length or chunked bodies. It shares no code with the server (the server's HTTP stack is uvicorn's).
"""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit


class HttpError(Exception):
    pass


class Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, host: str) -> None:
        self.reader = reader
        self.writer = writer
        self.host = host

    @classmethod
    async def open(cls, base: str) -> Connection:
        url = urlsplit(base)
        if url.scheme != "http" or url.hostname is None:
            raise HttpError(f"only http:// URLs are supported, not {base!r}")
        port = url.port or 80
        reader, writer = await asyncio.open_connection(url.hostname, port, limit=2**22)
        return cls(reader, writer, f"{url.hostname}:{port}")

    async def request(self, method: str, path: str, body: bytes | None = None,
                      content_type: str = "application/json") -> tuple[int, bytes]:
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body is not None:
            head += f"Content-Type: {content_type}\r\nContent-Length: {len(body)}\r\n"
        self.writer.write(head.encode("latin-1") + b"\r\n" + (body or b""))
        status_line = await self.reader.readline()
        if not status_line:
            raise HttpError("the server closed the connection")
        parts = status_line.split(None, 2)
        if len(parts) < 2 or not parts[1].isdigit():
            raise HttpError(f"bad status line {status_line[:80]!r}")
        length: int | None = None
        chunked = close = False
        while True:
            line = await self.reader.readline()
            if line in (b"\r\n", b"\n", b""):
                break
            name, _, value = line.partition(b":")
            name = name.strip().lower()
            if name == b"content-length":
                length = int(value)
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
            elif name == b"connection":
                close = b"close" in value.lower()
        if chunked:
            content = await self._chunked()
        elif length is not None:
            content = await self.reader.readexactly(length)
        else:
            content = await self.reader.read()
            close = True
        if close:
            self.close()
        return int(parts[1]), content

    async def _chunked(self) -> bytes:
        out = bytearray()
        while True:
            size = int((await self.reader.readline()).split(b";")[0], 16)
            if size == 0:
                while (await self.reader.readline()) not in (b"\r\n", b""):
                    pass
                return bytes(out)
            out += await self.reader.readexactly(size)
            await self.reader.readexactly(2)

    def close(self) -> None:
        self.writer.close()
