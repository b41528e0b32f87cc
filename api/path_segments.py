"""Lots and serials holding '/' in URL paths.

GS1 character set 82, which lots (AI 10) and serials (AI 21) are written in, includes '/'; a client sends it
percent-encoded, as ``%2F`` inside its path segment (GS1 Digital Link does the same). The ASGI server decodes the
path before routing, so ``/v1/batches/G/A%2FB`` reaches the router as ``/v1/batches/G/A/B``, which names no route,
and such a pack's verdict could never be read. ``EncodedSlashes`` decodes the path segment by segment instead,
writing a slash that was inside a segment as ``SLASH``, a private-use character no GTIN, lot or serial can hold;
the ``segment`` path convertor (``{lot:segment}``) gives the route its '/' back.

A path that already holds ``SLASH`` (sent as its own percent-encoding) gets U+FFFD in its place, so that it reads
as the invalid identifier it is rather than as a slash.
"""

from __future__ import annotations

from urllib.parse import unquote

from starlette.convertors import Convertor, register_url_convertor
from starlette.types import ASGIApp, Receive, Scope, Send

SLASH = "\uf8ff"
SEGMENT = "segment"


class _Segment(Convertor[str]):
    regex = "[^/]+"

    def convert(self, value: str) -> str:
        return value.replace(SLASH, "/")

    def to_string(self, value: str) -> str:
        return value.replace("/", SLASH)


register_url_convertor(SEGMENT, _Segment())


def restore(path: str) -> str:
    """A routed path as the client wrote it, for problem documents and logs."""
    return path.replace(SLASH, "%2F")


class EncodedSlashes:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            raw: bytes = scope.get("raw_path") or b""
            if b"%2F" in raw or b"%2f" in raw:
                try:
                    segments = raw.decode("ascii").split("/")
                except UnicodeDecodeError:
                    segments = None  # the server decoded it its own way; leave it so
                if segments is not None:
                    path = "/".join(unquote(s).replace(SLASH, "\ufffd").replace("/", SLASH) for s in segments)
            elif SLASH in path:
                path = path.replace(SLASH, "\ufffd")
            if path is not scope["path"]:
                scope = {**scope, "path": path}
        await self.app(scope, receive, send)
