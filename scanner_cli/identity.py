"""Who the CLI acts as, which server it talks to, and which keys it pins: options shared by client commands.

An identity is an actor id and its private key. It comes from ``--key FILE`` and ``--actor ID`` (or
``$ATHAR_KEY`` / ``$ATHAR_ACTOR``); a key file written by ``athar keys new --actor ID`` names its actor, so
``--key`` alone is enough; ``--actor`` alone uses ``<data-dir>/keys/actors/<actor>.key`` (where ``athar demo``
keeps the demo actors' keys).

The pinned keys (ledger checkpoint key and regulator root key) are all an offline verifier trusts. They come
from ``--ledger-key`` / ``--root-key`` (or ``$ATHAR_LEDGER_KEY`` / ``$ATHAR_ROOT_KEY``), else from
``<data-dir>/keys/ledger.pub`` and ``root.pub``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Annotated, NoReturn

import httpx
import typer

from ledger.admission import TrustAnchors
from scanner_cli import exit_codes, render
from scanner_cli.client import AtharClient, Identity
from scanner_cli.options import home_path
from signing import PublicKey
from signing.errors import SigningError
from signing.keys import read_private_key, read_public_key

DEFAULT_URL = "http://127.0.0.1:8000"
ACTOR_LABEL = "athar actor "
_ACTOR_ID = re.compile(r"[a-z0-9][a-z0-9.-]{2,63}")

Url = Annotated[str, typer.Option("--url", envvar="ATHAR_URL", help="base URL of the athar API")]
KeyFile = Annotated[Path | None, typer.Option("--key", envvar="ATHAR_KEY", show_default=False,
                                              help="your private key file (from 'athar keys new')")]
Actor = Annotated[str | None, typer.Option("--actor", envvar="ATHAR_ACTOR", show_default=False,
                                           help="your actor id, as registered by the regulator")]
LedgerKey = Annotated[Path | None, typer.Option("--ledger-key", envvar="ATHAR_LEDGER_KEY", show_default=False,
                                                help="pinned ledger public key (default <data-dir>/keys/ledger.pub)")]
RootKey = Annotated[Path | None, typer.Option("--root-key", envvar="ATHAR_ROOT_KEY", show_default=False,
                                              help="pinned regulator root public key (default "
                                                   "<data-dir>/keys/root.pub)")]


def usage(message: str) -> NoReturn:
    """A usage error: one readable line on stderr, exit code 2."""
    render.fail_line(message)
    raise typer.Exit(exit_codes.USAGE)


def key_file_actor(path: Path) -> str | None:
    """The actor a key file was made for (``athar keys new --actor``), if it says."""
    try:
        label = json.loads(path.read_text()).get("label", "")
    except (OSError, ValueError, AttributeError):
        return None
    if isinstance(label, str) and label.startswith(ACTOR_LABEL):
        actor = label[len(ACTOR_LABEL):].strip()
        return actor if _ACTOR_ID.fullmatch(actor) else None
    return None


def resolve_identity(key: Path | None, actor: str | None, data_dir: Path | None, *,
                     required: bool = False, what: str = "this command") -> Identity | None:
    """The identity given by the options, None when none is given (unless ``required``)."""
    if key is None and actor is None:
        if required:
            usage(f"{what} needs your identity: pass --key FILE and --actor ID (or set ATHAR_KEY and ATHAR_ACTOR)")
        return None
    if key is None:
        assert actor is not None
        key = home_path(data_dir) / "keys" / "actors" / f"{actor}.key"
        if not key.exists():
            usage(f"no key given for actor {actor!r} and {key} does not exist: pass --key FILE")
    if not key.exists():
        usage(f"the key file {key} does not exist")
    if actor is None:
        actor = key_file_actor(key)
        if actor is None:
            usage(f"{key} does not say which actor it belongs to: pass --actor ID")
    try:
        pair = read_private_key(key)
    except SigningError as exc:
        usage(str(exc))
    return Identity(actor, pair)


def _read_pinned(path: Path, what: str) -> PublicKey:
    try:
        return read_public_key(path)
    except SigningError as exc:
        usage(f"cannot read the pinned {what}: {exc}")


def pinned_trust(data_dir: Path | None, ledger_key: Path | None, root_key: Path | None, *,
                 required: bool = True) -> TrustAnchors | None:
    """The pinned keys from the options or the data directory; None when absent and not ``required``."""
    keys = home_path(data_dir) / "keys"
    ledger_path = ledger_key or keys / "ledger.pub"
    root_path = root_key or keys / "root.pub"
    if not required and ledger_key is None and root_key is None and not (ledger_path.exists()
                                                                         and root_path.exists()):
        return None
    for path, what, flag in ((ledger_path, "ledger key", "--ledger-key"), (root_path, "root key", "--root-key")):
        if not path.exists():
            usage(f"the pinned {what} {path} does not exist: pass {flag} FILE (the public key the regulator "
                  "publishes) or --data-dir")
    return TrustAnchors(root=_read_pinned(root_path, "regulator root key"),
                        ledger=_read_pinned(ledger_path, "ledger key"))


def client(url: str, identity: Identity | None = None) -> AtharClient:
    check_url(url)
    return AtharClient(url, identity)


def check_url(url: str) -> None:
    """A usage error unless ``url`` is an absolute http(s) URL httpx can send to: checked before any request, since
    httpx reports a bad one (an unclosed IPv6 bracket, an IPv4 octet over 255) as InvalidURL, not a network error."""
    if not url.startswith(("http://", "https://")):
        usage(f"--url {url!r} must be an http(s) URL, e.g. {DEFAULT_URL}")
    try:
        parsed = httpx.URL(url)
        port = parsed.port
    except (httpx.InvalidURL, ValueError) as exc:
        usage(f"--url {url!r} is not a valid URL: {exc}")
    if not parsed.host or " " in url:
        usage(f"--url {url!r} is not a valid URL: it names no host, e.g. {DEFAULT_URL}")
    if port is not None and not 0 < port < 65536:
        usage(f"--url {url!r} is not a valid URL: port {port} is out of range")
    if parsed.query or parsed.fragment:
        usage(f"--url {url!r} must be the API's base URL, without a query or fragment, e.g. {DEFAULT_URL}")
