"""athar actors: the actor registry. Anyone lists and shows actors; the regulator, holding the root key, registers
actors and rotates and revokes their keys (``actor_register``, ``key_rotate``, ``key_revoke`` events signed by the
root key and appended like any other event).

The root private key is ``--key FILE``, else ``<data-dir>/keys/root.key`` when ``athar init`` generated it there;
in production the regulator keeps it offline and passes ``--key``.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from ledger import events as ev
from ledger import identifiers as ids
from ledger.builder import EventBuilder, root_builder
from ledger.entry import SignedEvent
from ledger.errors import LedgerError
from scanner_cli import render
from scanner_cli.client import Identity
from scanner_cli.commands.actions import submit, valid
from scanner_cli.identity import DEFAULT_URL, LedgerKey, RootKey, Url, client, usage
from scanner_cli.options import DataDir, Json, home_path
from signing import PublicKey
from signing.errors import SigningError
from signing.keys import read_private_key, read_public_key

_KEY_ID = re.compile(r"ed25519:[0-9a-f]{32}")

app = typer.Typer(help="The actor registry: list and show actors; the regulator registers actors and rotates and "
                       "revokes their keys with the root key.", no_args_is_help=True)

Subject = Annotated[str, typer.Argument(help="the actor id (3-64 characters: a-z, 0-9, '.', '-')",
                                        show_default=False)]
RootSigningKey = Annotated[Path | None, typer.Option(
    "--key", envvar="ATHAR_ROOT_SIGNING_KEY", show_default=False,
    help="the regulator root PRIVATE key file (default <data-dir>/keys/root.key)")]
NewPublicKey = Annotated[str, typer.Option(
    "--public-key", show_default=False,
    help="the actor's public key: the NAME.pub file 'athar keys new' wrote, or the base64 key it printed")]


def _root(key: Path | None, data_dir: Path | None) -> Identity:
    path = key if key is not None else home_path(data_dir) / "keys" / "root.key"
    if not path.is_file():
        usage(f"the root private key {path} does not exist: pass --key FILE (the regulator root key)"
              if key is None else f"the key file {path} does not exist")
    try:
        pair = read_private_key(path)
    except SigningError as exc:
        usage(f"{path}: {exc}")
    return Identity(ev.ROOT_ACTOR, pair)


def _public_key(value: str) -> PublicKey:
    """A public key from a key file or its base64 text: a path that exists is read as a file."""
    path = Path(value).expanduser()
    try:
        # a private key file is refused: the actor keeps it, and whoever holds it signs as the actor
        return read_public_key(path) if path.is_file() else PublicKey.from_b64(value)
    except SigningError as exc:
        # base64 holds '/' too: only what is no key and reads as a path is taken for a missing file
        if not path.is_file() and (path.suffix in (".pub", ".key", ".json") or value.startswith(("/", ".", "~"))):
            usage(f"--public-key: the file {value} does not exist")
        usage(f"--public-key: {exc}")


def _check(signed: SignedEvent) -> SignedEvent:
    """The server would refuse a body it cannot parse: say so before sending it, as a usage error."""
    try:
        ev.parse_event(signed.body)
    except LedgerError as err:
        usage(err.message)
    return signed


def _builder(identity: Identity) -> EventBuilder:
    return root_builder(identity.key)


@app.command("list")
def list_actors(url: Url = DEFAULT_URL, json_out: Json = False) -> None:
    """Every registered actor: its role, region, status and how many of its keys are active."""
    with client(url, None) as api:
        rows = api.actors()
    if json_out:
        render.emit_json(rows)
        return
    table = Table("role", "name", "region", "status", "active keys")
    table.add_column("actor", no_wrap=True)  # whole: it is what every other command takes
    for a in rows:
        active = sum(1 for k in a["keys"] if k["status"] == "active")
        table.add_row(*(Text(str(v)) for v in (a["role"], a["name"], a["region"], a["status"], active, a["id"])))
    render.console.print(table)


@app.command()
def show(subject: Subject, url: Url = DEFAULT_URL, json_out: Json = False) -> None:
    """One actor and all its keys, with the log entries that added and retired them."""
    with client(url, None) as api:
        a = api.actor(valid(ids.actor_id, subject))
    if json_out:
        render.emit_json(a)
        return
    where = ", ".join(str(v) for v in (a.get("city"), a["region"]) if v)
    render.console.print(Text(f"{a['id']}  {a['name']}\n  role {a['role']}, {where}"
                              + (f", GLN {a['gln']}" if a.get("gln") else "")
                              + f"\n  status {a['status']}, registered at entry {a['registered_index']}"),
                         highlight=False)
    # one line per key, not a table: a key id is copied whole into 'revoke-key --key-id', never folded
    for k in a["keys"]:
        retired = "" if k["retired_index"] is None else f", retired at entry {k['retired_index']}"
        render.console.print(Text(f"  {k['status']:<8} {k['key_id']}  added at entry {k['added_index']}{retired}"),
                             highlight=False, soft_wrap=True)


@app.command()
def register(subject: Subject,
             name: Annotated[str, typer.Option("--name", help="the licensed name", show_default=False)],
             role: Annotated[str, typer.Option("--role", help=", ".join(r.value for r in ids.Role),
                                               show_default=False)],
             region: Annotated[str, typer.Option("--region", help="the region it operates in", show_default=False)],
             public_key: NewPublicKey,
             city: Annotated[str | None, typer.Option("--city", show_default=False)] = None,
             gln: Annotated[str | None, typer.Option("--gln", help="GS1 Global Location Number (13 digits)",
                                                     show_default=False)] = None,
             key: RootSigningKey = None, data_dir: DataDir = None, url: Url = DEFAULT_URL,
             ledger_key: LedgerKey = None, root_key: RootKey = None, json_out: Json = False) -> None:
    """Register a licensed actor and its first key (the regulator, with the root key)."""
    if role not in {r.value for r in ids.Role}:
        usage(f"--role must be one of {', '.join(r.value for r in ids.Role)}, not {role!r}")
    pub = _public_key(public_key)
    me = _root(key, data_dir)
    signed = _check(_builder(me).register_actor(valid(ids.actor_id, subject), name, role, region, pub.b64,
                                                city=city, gln=gln))
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out,
            f"actor {subject} registered ({role}) with key {pub.key_id}", actor=subject, key_id=pub.key_id)


@app.command("rotate-key")
def rotate_key(subject: Subject, public_key: NewPublicKey, key: RootSigningKey = None, data_dir: DataDir = None,
               url: Url = DEFAULT_URL, ledger_key: LedgerKey = None, root_key: RootKey = None,
               json_out: Json = False) -> None:
    """Give an actor a new key; its older keys sign nothing after this entry."""
    pub = _public_key(public_key)
    me = _root(key, data_dir)
    signed = _check(_builder(me).rotate_key(valid(ids.actor_id, subject), pub.b64))
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out,
            f"actor {subject}: new key {pub.key_id}, older keys retired", actor=subject, key_id=pub.key_id)


@app.command("revoke-key")
def revoke_key(subject: Subject,
               key_id: Annotated[str, typer.Option("--key-id", help="the key to revoke (ed25519:..., as 'athar "
                                                   "actors show' lists it)", show_default=False)],
               reason: Annotated[str, typer.Option("--reason", help="why (kept in the signed event)",
                                                   show_default=False)],
               key: RootSigningKey = None, data_dir: DataDir = None, url: Url = DEFAULT_URL,
               ledger_key: LedgerKey = None, root_key: RootKey = None, json_out: Json = False) -> None:
    """Revoke one of an actor's keys (lost or stolen): it signs nothing after this entry."""
    if not _KEY_ID.fullmatch(key_id):
        usage(f"--key-id {key_id!r} is not a key id: 'ed25519:' and 32 lowercase hex digits, as 'athar actors show' "
              "lists them")
    me = _root(key, data_dir)
    signed = _check(_builder(me).revoke_key(valid(ids.actor_id, subject), key_id, reason))
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out, f"actor {subject}: key {key_id} revoked",
            actor=subject, key_id=key_id)
