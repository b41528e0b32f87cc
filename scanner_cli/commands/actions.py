"""Custody commands: sign an event with the local key and submit it to the API.

athar batch commission; athar ship, receive, refuse, dispense, recall, report. Each prints the receipt (entry
index, entry hash, tree size), checked against the pinned ledger key when one is at hand.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.text import Text

from ledger import identifiers as ids
from ledger.builder import EventBuilder
from ledger.entry import SignedEvent
from ledger.errors import InvalidIdentifier
from scanner_cli import render
from scanner_cli.client import Identity
from scanner_cli.identity import (
    DEFAULT_URL,
    Actor,
    KeyFile,
    LedgerKey,
    RootKey,
    Url,
    client,
    pinned_trust,
    resolve_identity,
    usage,
)
from scanner_cli.options import DataDir, Json
from scanner_cli.scantext import PackCode, ScanTextError, parse_scanned_text
from scanner_cli.verify import TamperedReceipt, verify_receipt

batch_app = typer.Typer(help="Batches: commission (register) a batch and its serialized packs.",
                        no_args_is_help=True)

Gtin = Annotated[str, typer.Option("--gtin", help="GTIN-14 (or 8/12/13 digits) with its check digit")]
Lot = Annotated[str, typer.Option("--lot", help="lot / batch number (AI 10)")]
Serials = Annotated[str | None, typer.Option("--serials", help="comma-separated serial numbers", show_default=False)]
SerialsFile = Annotated[Path | None, typer.Option("--serials-file", help="file with one serial number per line",
                                                  show_default=False)]
Channel = Annotated[str, typer.Option("--channel", help="supply channel: public (tender) or private")]
Reason = Annotated[str, typer.Option("--reason", help="why (kept in the signed event)")]

T = TypeVar("T")


def valid(check: Callable[[str], T], value: str) -> T:
    try:
        return check(value)
    except InvalidIdentifier as err:
        usage(err.message)


def _channel(value: str) -> str:
    if value not in ("public", "private"):
        usage(f"--channel must be public or private, not {value!r}")
    return value


def read_serials(serials: str | None, serials_file: Path | None) -> list[str] | None:
    if serials is not None and serials_file is not None:
        usage("give --serials or --serials-file, not both")
    if serials is not None:
        items = [s.strip() for s in serials.split(",") if s.strip()]
    elif serials_file is not None:
        try:
            items = [line.strip() for line in serials_file.read_text().splitlines() if line.strip()]
        except (OSError, UnicodeDecodeError) as exc:
            usage(f"cannot read {serials_file}: {exc}")
    else:
        return None
    if not items:
        usage("no serial numbers given")
    return [valid(ids.serial, s) for s in items]


def submit(signed: SignedEvent, identity: Identity, url: str, data_dir: Path | None, ledger_key: Path | None,
            root_key: Path | None, json_out: bool, summary: str, **extra: Any) -> None:
    trust = pinned_trust(data_dir, ledger_key, root_key, required=False)
    with client(url, identity) as api:
        receipt = api.submit(signed)
    if trust is not None:
        try:
            verify_receipt(receipt, signed, trust)
        except TamperedReceipt as err:  # the server did take the event: say so, or it would be sent again elsewhere
            raise TamperedReceipt(f"the server says it recorded event {signed.event_id} as entry "
                                  f"{receipt.get('index')}, but its receipt fails verification: {err.message}") from err
    show_receipt(receipt, summary, verified=trust is not None, json_out=json_out, **extra)


def show_receipt(receipt: dict[str, Any], summary: str, *, verified: bool, json_out: bool,
                 unverified_note: str = "no pinned ledger key: pass --ledger-key or --data-dir", **extra: Any) -> None:
    if json_out:
        render.emit_json({**extra, "receipt_verified": verified, "receipt": receipt})
        return
    c = render.console
    again = " (already recorded: the original receipt)" if receipt.get("replayed") else ""
    c.print(f"[green]recorded[/] {render.escape(summary)}{again}", highlight=False, soft_wrap=True)
    c.print(Text(f"  entry {receipt['index']}  hash {receipt['entry_hash']}\n  chain {receipt['chain']}  "
                 f"tree size {receipt['tree_size']}"), highlight=False, soft_wrap=True)
    c.print("  receipt verified against the pinned ledger key" if verified else
            f"  [yellow]receipt not verified[/] ({render.escape(unverified_note)})",
            highlight=False)


def _me(key: Path | None, actor: str | None, data_dir: Path | None, what: str) -> Identity:
    identity = resolve_identity(key, actor, data_dir, required=True, what=what)
    assert identity is not None
    return identity


def _builder(identity: Identity) -> EventBuilder:
    return EventBuilder(identity.actor, identity.key)


def _expiry(value: str) -> dt.date:
    return valid(ids.expiry, value)


@batch_app.command()
def commission(gtin: Gtin, lot: Lot,
               expiry: Annotated[str, typer.Option("--expiry", help="expiry date, YYYY-MM-DD or GS1 YYMMDD")],
               product: Annotated[str, typer.Option("--product", help="product name and strength")],
               serials: Serials = None, serials_file: SerialsFile = None,
               count: Annotated[int | None, typer.Option("--count", min=1, help="number serials PREFIX00001.. "
                                                         "(with --serial-prefix)", show_default=False)] = None,
               serial_prefix: Annotated[str | None, typer.Option("--serial-prefix", show_default=False)] = None,
               channel: Channel = "private", key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
               url: Url = DEFAULT_URL, ledger_key: LedgerKey = None, root_key: RootKey = None,
               json_out: Json = False) -> None:
    """Commission (register) a batch and its serialized packs. Manufacturers only."""
    listed = read_serials(serials, serials_file)
    if (count is None) != (serial_prefix is None):
        usage("--count and --serial-prefix go together")
    if count is not None and serial_prefix is not None:
        if listed is not None:
            usage("give --serials, --serials-file or --count with --serial-prefix, only one of them")
        width = max(5, len(str(count)))
        listed = [valid(ids.serial, f"{serial_prefix}{i:0{width}d}") for i in range(1, count + 1)]
    if listed is None:
        usage("name the packs: --serials A,B,C, --serials-file FILE, or --count N --serial-prefix P")
    me = _me(key, actor, data_dir, "commissioning a batch")
    g, lt = valid(ids.gtin14, gtin), valid(ids.lot, lot)
    signed = _builder(me).commission(g, lt, _expiry(expiry), product, listed, channel=_channel(channel))
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out,
            f"batch {g}/{lt}: {len(listed)} packs commissioned", gtin=g, lot=lt, serials=len(listed))


def ship(gtin: Gtin, lot: Lot,
         to: Annotated[str, typer.Option("--to", help="the recipient's actor id")],
         serials: Serials = None, serials_file: SerialsFile = None,
         quantity: Annotated[int | None, typer.Option("--quantity", min=1, help="packs moved by count",
                                                      show_default=False)] = None,
         channel: Channel = "private", key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
         url: Url = DEFAULT_URL, ledger_key: LedgerKey = None, root_key: RootKey = None,
         json_out: Json = False) -> None:
    """Ship packs you hold to another actor; custody moves when the recipient receives them."""
    listed = read_serials(serials, serials_file)
    if (listed is None) == (quantity is None):
        usage("give either --serials / --serials-file or --quantity")
    me = _me(key, actor, data_dir, "shipping")
    g, lt = valid(ids.gtin14, gtin), valid(ids.lot, lot)
    signed = _builder(me).ship(g, lt, valid(ids.actor_id, to), serials=listed, quantity=quantity,
                               channel=_channel(channel))
    n = len(listed) if listed is not None else quantity
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out,
            f"shipment {signed.event_id}: {n} packs of {g}/{lt} to {to} (the recipient receives it with "
            f"'athar receive {signed.event_id}')", shipment=signed.event_id)


def receive(shipment: Annotated[str, typer.Argument(help="the shipment id (the ship event's id)")],
            key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None, url: Url = DEFAULT_URL,
            ledger_key: LedgerKey = None, root_key: RootKey = None, json_out: Json = False) -> None:
    """Receive a shipment addressed to you: custody moves to you."""
    me = _me(key, actor, data_dir, "receiving")
    signed = _builder(me).receive(valid(ids.event_id, shipment))
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out, f"shipment {shipment} received",
            shipment=shipment)


def refuse(shipment: Annotated[str, typer.Argument(help="the shipment id (the ship event's id)")],
           reason: Reason, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
           url: Url = DEFAULT_URL, ledger_key: LedgerKey = None, root_key: RootKey = None,
           json_out: Json = False) -> None:
    """Refuse a shipment addressed to you: custody returns to the sender."""
    me = _me(key, actor, data_dir, "refusing a shipment")
    signed = _builder(me).refuse(valid(ids.event_id, shipment), reason)
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out, f"shipment {shipment} refused",
            shipment=shipment)


def _code(code: str | None, gtin: str | None, serial: str | None, lot: str | None,
          expiry: str | None) -> PackCode:
    """The pack from a scanned code or from --gtin/--serial (--lot/--expiry as printed)."""
    if code is not None:
        if gtin or serial:
            usage("give a scanned code or --gtin/--serial, not both")
        try:
            pack = parse_scanned_text(code)
        except ScanTextError as exc:
            usage(str(exc))
        return pack
    if gtin is None:
        usage("give the pack: a scanned code, or --gtin and --serial")
    return PackCode(valid(ids.gtin14, gtin), valid(ids.lot, lot) if lot else None,
                    _expiry(expiry) if expiry else None, valid(ids.serial, serial) if serial else None, "gtin",
                    gtin)


CodeArg = Annotated[str | None, typer.Argument(help="the pack's scanned code: GS1 element string (e.g. "
                                               "']d201...<GS>21...'), (01)... form, or Digital Link URI",
                                               show_default=False)]
OptGtin = Annotated[str | None, typer.Option("--gtin", show_default=False)]
OptSerial = Annotated[str | None, typer.Option("--serial", show_default=False)]
OptLot = Annotated[str | None, typer.Option("--lot", help="lot as printed on the pack", show_default=False)]
OptExpiry = Annotated[str | None, typer.Option("--expiry", help="expiry as printed (YYYY-MM-DD or YYMMDD)",
                                               show_default=False)]


def dispense(code: CodeArg = None, gtin: OptGtin = None, serial: OptSerial = None, lot: OptLot = None,
             expiry: OptExpiry = None, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
             url: Url = DEFAULT_URL, ledger_key: LedgerKey = None, root_key: RootKey = None,
             json_out: Json = False) -> None:
    """Dispense (decommission) a pack you hold. Pharmacies and hospitals only."""
    pack = _code(code, gtin, serial, lot, expiry)
    if pack.serial is None:
        usage("the pack has no serial number (AI 21): only serialized packs are dispensed one by one")
    me = _me(key, actor, data_dir, "dispensing")
    signed = _builder(me).dispense(pack.gtin, pack.serial, lot=pack.lot, expiry=pack.expiry)
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out,
            f"pack {pack.gtin} serial {pack.serial} dispensed", gtin=pack.gtin, serial=pack.serial)


def recall(gtin: Gtin, lot: Lot, reason: Reason, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
           url: Url = DEFAULT_URL, ledger_key: LedgerKey = None, root_key: RootKey = None,
           json_out: Json = False) -> None:
    """Recall a batch (its manufacturer or the regulator): it can no longer be shipped or dispensed."""
    me = _me(key, actor, data_dir, "recalling a batch")
    g, lt = valid(ids.gtin14, gtin), valid(ids.lot, lot)
    signed = _builder(me).recall(g, lt, reason)
    submit(signed, me, url, data_dir, ledger_key, root_key, json_out, f"batch {g}/{lt} recalled", gtin=g, lot=lt)


def report(code: CodeArg = None, gtin: OptGtin = None, serial: OptSerial = None, lot: OptLot = None,
           expiry: OptExpiry = None,
           category: Annotated[str, typer.Option("--category", help="suspected_falsified, damaged_pack, "
                                                 "quality_defect, diversion or other")] = "suspected_falsified",
           details: Annotated[str | None, typer.Option("--details", help="free text and contact details: kept off "
                                                       "the log, erasable", show_default=False)] = None,
           region: Annotated[str | None, typer.Option("--region", show_default=False)] = None,
           key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None, url: Url = DEFAULT_URL,
           ledger_key: LedgerKey = None, root_key: RootKey = None, json_out: Json = False) -> None:
    """Report a suspect pack. Anonymous without an identity; signed by you with one."""
    pack = _code(code, gtin, serial, lot, expiry)
    me = resolve_identity(key, actor, data_dir)
    if me is not None and details is None:
        signed = _builder(me).report(pack.gtin, category, serial=pack.serial, lot=pack.lot, region=region,
                                     expiry=pack.expiry.isoformat() if pack.expiry else None)
        submit(signed, me, url, data_dir, ledger_key, root_key, json_out,
                f"report ({category}) on {pack.gtin}" + (f" serial {pack.serial}" if pack.serial else ""))
        return
    payload = {"gtin": pack.gtin, "serial": pack.serial, "lot": pack.lot,
               "expiry": pack.expiry.isoformat() if pack.expiry else None, "category": category, "region": region,
               "details": details}
    with client(url, me) as api:
        receipt = api.report({k: v for k, v in payload.items() if v is not None})
    who = "signed by you" if me is not None else "anonymous"
    show_receipt(receipt, f"report ({category}, {who}) on {pack.gtin}", verified=False, json_out=json_out,
                 unverified_note="the ledger signs public reports itself")
