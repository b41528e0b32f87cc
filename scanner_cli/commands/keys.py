"""athar keys: make and inspect an actor's signing key."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from ledger import identifiers as ids
from ledger.errors import InvalidIdentifier
from scanner_cli import render
from scanner_cli.identity import ACTOR_LABEL, key_file_actor, usage
from scanner_cli.options import Json
from signing import KeyPair
from signing.errors import SigningError
from signing.keys import (
    ALGORITHM,
    public_key_path,
    read_private_key,
    read_public_key,
    write_private_key,
    write_public_key,
)

app = typer.Typer(help="Make and inspect signing keys. The private key never leaves this machine.",
                  no_args_is_help=True)


@app.command()
def new(out: Annotated[Path, typer.Option("--out", help="private key file to create (mode 0600); its public half "
                                          "goes beside it, NAME.pub")],
        actor: Annotated[str | None, typer.Option("--actor", help="the actor id this key is for")] = None,
        json_out: Json = False) -> None:
    """Create a private key file and its public half (NAME.pub: what --root-public-key and --ledger-key read) and
    print its key id and public key (what the regulator registers)."""
    if actor is not None:
        try:
            ids.actor_id(actor)
        except InvalidIdentifier as err:
            usage(err.message)
    pair = KeyPair.generate()
    pub = public_key_path(out)
    if pub.exists():  # checked first, so that a refusal leaves no private key without its public half
        usage(f"{pub} already exists; refusing to overwrite it")
    label = f"{ACTOR_LABEL}{actor}" if actor else ""
    try:
        write_private_key(out, pair, label=label)
        write_public_key(pub, pair.public, label=label)
    except (SigningError, OSError) as exc:
        usage(str(exc))
    _show(out, pair.key_id, pair.public.b64, actor, private=True, json_out=json_out)


@app.command()
def show(file: Annotated[Path, typer.Argument(help="a private or public key file")],
         pub_out: Annotated[Path | None, typer.Option(
             "--pub-out", help="also write the public key file (what --root-public-key and --ledger-key read)")]
         = None,
         json_out: Json = False) -> None:
    """Print a key file's key id and public key (never the private key)."""
    try:
        private = json.loads(file.read_text()).get("type") == "athar-private-key"
    except (OSError, ValueError, AttributeError):
        private = False
    try:
        public = read_private_key(file).public if private else read_public_key(file)
    except SigningError as exc:
        usage(str(exc))
    if pub_out is not None:
        if pub_out.exists():
            usage(f"{pub_out} already exists; refusing to overwrite it")
        try:
            write_public_key(pub_out, public, label=_label(file))
        except OSError as exc:
            usage(f"cannot write {pub_out}: {exc.strerror}")
    _show(file, public.key_id, public.b64, key_file_actor(file) if private else None, private=private,
          json_out=json_out)


def _show(path: Path, key_id: str, public_key: str, actor: str | None, *, private: bool, json_out: bool) -> None:
    info = {"file": str(path), "private": private, "actor": actor, "algorithm": ALGORITHM, "key_id": key_id,
            "public_key": public_key}
    if json_out:
        render.emit_json(info)
        return
    c = render.console
    c.print(f"{'private' if private else 'public'} key [bold]{render.escape(path)}[/]"
            + (f" for actor {render.escape(actor)}" if actor else ""),
            highlight=False)
    c.print(f"  key id      {key_id}\n  public key  {public_key}", highlight=False)


def _label(file: Path) -> str:
    try:
        return str(json.loads(file.read_text()).get("label", ""))
    except (OSError, ValueError, AttributeError):
        return ""
