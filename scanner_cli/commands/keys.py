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
from signing.keys import read_private_key, read_public_key, write_private_key

app = typer.Typer(help="Make and inspect signing keys. The private key never leaves this machine.",
                  no_args_is_help=True)


@app.command()
def new(out: Annotated[Path, typer.Option("--out", help="private key file to create (mode 0600)")],
        actor: Annotated[str | None, typer.Option("--actor", help="the actor id this key is for")] = None,
        json_out: Json = False) -> None:
    """Create a private key file and print its key id and public key (what the regulator registers)."""
    if actor is not None:
        try:
            ids.actor_id(actor)
        except InvalidIdentifier as err:
            usage(err.message)
    pair = KeyPair.generate()
    try:
        write_private_key(out, pair, label=f"{ACTOR_LABEL}{actor}" if actor else "")
    except SigningError as exc:
        usage(str(exc))
    _show(out, pair.key_id, pair.public.b64, actor, private=True, json_out=json_out)


@app.command()
def show(file: Annotated[Path, typer.Argument(help="a private or public key file")], json_out: Json = False) -> None:
    """Print a key file's key id and public key (never the private key)."""
    try:
        private = json.loads(file.read_text()).get("type") == "athar-private-key"
    except (OSError, ValueError, AttributeError):
        private = False
    try:
        public = read_private_key(file).public if private else read_public_key(file)
    except SigningError as exc:
        usage(str(exc))
    _show(file, public.key_id, public.b64, key_file_actor(file) if private else None, private=private,
          json_out=json_out)


def _show(path: Path, key_id: str, public_key: str, actor: str | None, *, private: bool, json_out: bool) -> None:
    info = {"file": str(path), "private": private, "actor": actor, "key_id": key_id, "public_key": public_key}
    if json_out:
        render.emit_json(info)
        return
    c = render.console
    c.print(f"{'private' if private else 'public'} key [bold]{render.escape(path)}[/]"
            + (f" for actor {render.escape(actor)}" if actor else ""),
            highlight=False)
    c.print(f"  key id      {key_id}\n  public key  {public_key}", highlight=False)
