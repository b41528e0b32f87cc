"""athar label: print pack labels (GS1 DataMatrix + Digital Link QR) as PNG files and an optional PDF sheet."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

import typer

from ledger import identifiers as ids
from scanner_cli import render
from scanner_cli.commands.actions import read_serials, valid
from scanner_cli.identity import DEFAULT_URL, Actor, KeyFile, Url, client, resolve_identity, usage
from scanner_cli.options import DataDir, Json
from scanner_cli.scantext import PackCode


def label(gtin: Annotated[str | None, typer.Option("--gtin", show_default=False)] = None,
          lot: Annotated[str | None, typer.Option("--lot", show_default=False)] = None,
          expiry: Annotated[str | None, typer.Option("--expiry", help="YYYY-MM-DD or YYMMDD",
                                                     show_default=False)] = None,
          serials: Annotated[str | None, typer.Option("--serials", help="comma-separated serial numbers",
                                                      show_default=False)] = None,
          serials_file: Annotated[Path | None, typer.Option("--serials-file", show_default=False)] = None,
          batch: Annotated[str | None, typer.Option("--batch", help="GTIN/LOT: label every pack of a registered "
                                                    "batch (a signed read of its history)",
                                                    show_default=False)] = None,
          out: Annotated[Path, typer.Option("--out", help="directory for the PNG labels")] = Path("labels"),
          pdf: Annotated[Path | None, typer.Option("--pdf", help="also write an A4 PDF sheet of the labels",
                                                   show_default=False)] = None,
          base_url: Annotated[str | None, typer.Option("--base-url", envvar="ATHAR_PUBLIC_URL",
                                                       help="Digital Link resolver for the QR (default: --url)",
                                                       show_default=False)] = None,
          url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
          json_out: Json = False) -> None:
    """Write one PNG label per pack (and optionally a PDF sheet) for given packs or a registered batch."""
    product: str | None = None
    if batch is not None:
        if any(v is not None for v in (gtin, lot, expiry, serials, serials_file)):
            usage("give --batch GTIN/LOT, or --gtin --lot --expiry --serials, not both")
        packs, product = _from_ledger(batch, url, key, actor, data_dir)
    else:
        if gtin is None or lot is None or expiry is None:
            usage("give --gtin, --lot, --expiry and --serials (or --serials-file), or --batch GTIN/LOT")
        listed = read_serials(serials, serials_file)
        if listed is None:
            usage("name the packs to label: --serials A,B,C or --serials-file FILE")
        g, lt, exp = valid(ids.gtin14, gtin), valid(ids.lot, lot), valid(ids.expiry, expiry)
        packs = [PackCode(g, lt, exp, s, "gs1", "") for s in listed]
    resolver = base_url or url
    from scanner_cli import labels  # fpdf and the barcode writers load only when labelling

    try:
        written = labels.write_label_pngs(packs, out, resolver)
        sheet = labels.write_label_sheet_pdf(packs, pdf, resolver, product) if pdf is not None else None
    except ValueError as exc:
        usage(str(exc))
    except OSError as exc:
        usage(f"cannot write the labels: {exc}")
    if json_out:
        render.emit_json({"labels": [str(p) for p in written], "pdf": str(sheet) if sheet else None,
                          "packs": len(packs)})
        return
    render.console.print(f"[green]{len(written)} labels[/] written to {render.escape(out)}" +
                         (f", sheet {render.escape(sheet)}" if sheet else ""), highlight=False)


def _from_ledger(batch: str, url: str, key: Path | None, actor: str | None,
                 data_dir: Path | None) -> tuple[list[PackCode], str | None]:
    gtin, sep, lot = batch.partition("/")
    if not sep:
        usage(f"--batch {batch!r} must be GTIN/LOT")
    g, lt = valid(ids.gtin14, gtin), valid(ids.lot, lot)
    me = resolve_identity(key, actor, data_dir, required=True, what="labelling a registered batch")
    with client(url, me) as api:
        history = api.history(g, lt)
    commission: dict[str, Any] | None = None
    for item in history.get("entries", []):
        body = item["entry"]["event"]
        if body.get("type") == "commission":
            commission = body
            break
    if commission is None:
        usage(f"the history of batch {g}/{lt} has no commissioning event")
    expiry = dt.date.fromisoformat(str(commission["expiry"]))
    packs = [PackCode(g, lt, expiry, str(s), "gs1", "") for s in commission.get("serials", [])]
    if not packs:
        usage(f"batch {g}/{lt} has no serialized packs to label")
    return packs, str(commission.get("product") or "") or None
