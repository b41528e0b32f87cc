"""athar bundle: export an offline verification bundle (batches, or one pack), and verify one with the pinned
keys."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.text import Text

from ledger import errors as E
from ledger import identifiers as ids
from ledger import pack_bundle
from ledger.bundle import verify_bundle
from ledger.heap import long_task
from scanner_cli import exit_codes, render
from scanner_cli.commands.actions import valid
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
from scanner_cli.verify import BundleFileError, bundle_summary, checked_pack_bundle, read_bundle, verify_offline

app = typer.Typer(help="Offline bundles: what an inspector carries to check packs with no network.",
                  no_args_is_help=True)


@app.command()
def export(out: Annotated[Path, typer.Option("--out", help="bundle file to write")],
           batch: Annotated[list[str] | None, typer.Option("--batch", help="GTIN/LOT (repeatable)",
                                                           show_default=False)] = None,
           region: Annotated[str | None, typer.Option("--region", help="every batch held in this region",
                                                      show_default=False)] = None,
           holder: Annotated[str | None, typer.Option("--holder", help="every batch this actor handled",
                                                      show_default=False)] = None,
           url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
           ledger_key: LedgerKey = None, root_key: RootKey = None, json_out: Json = False) -> None:
    """Fetch a signed bundle for batches, a region or a holder (a signed request), verify it, and write it."""
    if not batch and region is None and holder is None:
        usage("choose what to bundle: --batch GTIN/LOT, --region REGION or --holder ACTOR")
    batches = []
    for item in batch or []:
        gtin, sep, lot = item.partition("/")
        if not sep:
            usage(f"--batch {item!r} must be GTIN/LOT")
        batches.append(f"{valid(ids.gtin14, gtin)}/{valid(ids.lot, lot)}")
    me = resolve_identity(key, actor, data_dir, required=True, what="exporting a bundle")
    trust = pinned_trust(data_dir, ledger_key, root_key, required=False)
    with client(url, me) as api:
        doc = api.bundle(batches=batches, region=region, actor=holder)
    summary = bundle_summary(verify_bundle(doc, trust)) if trust is not None else None
    _write(out, doc)
    _report(out, summary, json_out, {"entries": len(doc.get("entries", []))},
            f"{len(doc.get('entries', []))} entries, tree size {doc.get('manifest', {}).get('tree_size')}")


def _write(out: Path, doc: Any) -> int:
    """Write the bundle whole or not at all; its size in bytes."""
    text = json.dumps(doc, ensure_ascii=False, separators=(",", ":")) + "\n"
    try:
        tmp = out.with_name(out.name + ".part")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, out)
    except OSError as exc:
        usage(f"cannot write {out}: {exc}")
    return len(text.encode())


def _report(out: Path, summary: dict[str, Any] | None, json_out: bool, extra: dict[str, Any], what: str) -> None:
    if json_out:
        render.emit_json({"file": str(out), "verified": summary is not None, **(summary or {}), **extra})
        return
    render.console.print(f"[green]bundle written[/] {render.escape(out)}: {render.escape(what)}", highlight=False)
    render.console.print("  verified against the pinned keys" if summary else
                         "  [yellow]not verified here[/] (no pinned keys: pass --ledger-key/--root-key or --data-dir)",
                         highlight=False)


@app.command()
def pack(gtin: Annotated[str, typer.Argument(help="the pack's GTIN (14 digits)")],
         serial: Annotated[str, typer.Argument(help="the pack's serial (GS1 AI 21)")],
         out: Annotated[Path, typer.Option("--out", help="bundle file to write")],
         url: Url = DEFAULT_URL, data_dir: DataDir = None, ledger_key: LedgerKey = None, root_key: RootKey = None,
         json_out: Json = False) -> None:
    """Fetch one pack's bundle (public, a few kB), verify it when keys are pinned, and write it."""
    g, s = valid(ids.gtin14, gtin), valid(ids.serial, serial)
    trust = pinned_trust(data_dir, ledger_key, root_key, required=False)
    with client(url, None) as api:
        try:
            doc = api.pack_bundle(g, s)
        except ValueError as exc:
            raise E.StorageUnavailable(f"the ledger at {url} did not answer a bundle: {exc}") from exc
    if not isinstance(doc, dict) or doc.get("format") != pack_bundle.FORMAT:
        raise pack_bundle.TamperedPackBundle(f"the ledger at {url} answered something other than a one-pack bundle")
    summary = bundle_summary(checked_pack_bundle(doc, g, s, trust)) if trust is not None else None
    size = _write(out, doc)
    _report(out, summary, json_out, {"bytes": size},
            f"pack {s} of GTIN {g}, {size:,} bytes, tree size {doc.get('statement', {}).get('tree_size')}")


@app.command()
def verify(file: Annotated[Path, typer.Argument(help="the bundle file")], data_dir: DataDir = None,
           ledger_key: LedgerKey = None, root_key: RootKey = None, json_out: Json = False) -> None:
    """Verify a bundle with the pinned keys, with no network: exit 0, or 20 naming the first failure."""
    trust = pinned_trust(data_dir, ledger_key, root_key)
    assert trust is not None
    try:
        with long_task():
            doc = read_bundle(file)
            vb = verify_offline(doc, trust)
    except BundleFileError as exc:
        usage(str(exc))
    except E.IntegrityError as err:
        if json_out:
            render.emit_json({"file": str(file), "ok": False, "failure": err.message,
                              "index": err.details.get("index")})
        render.fail_line(f"TAMPERED: {file}: {err.message}")
        raise typer.Exit(exit_codes.TAMPERED) from None
    summary = bundle_summary(vb)
    if json_out:
        render.emit_json({"file": str(file), "ok": True, **summary})
        return
    render.console.print(f"[green]intact[/]: {render.escape(file)}", highlight=False)
    if summary["kind"] == "one pack":
        p = summary["pack"]
        render.console.print(Text(f"  checkpoint  {summary['origin']}, tree size {summary['tree_size']}, root "
                                  f"{summary['root_hash'][:16]}...\n  created     {summary['created']}\n"
                                  f"  contents    one pack: {p['serial']} of GTIN {p['gtin']}, lot {p['lot']}; "
                                  f"{summary['steps']} steps signed by the ledger"
                                  + (", the latest also by its actor" if summary["latest_entry_signed"] else "")),
                             highlight=False)
        return
    render.console.print(Text(f"  checkpoint  {summary['origin']}, tree size {summary['tree_size']}, root "
                              f"{summary['root_hash'][:16]}...\n  created     {summary['created']}\n"
                              f"  contents    {summary['chains']} chains, {summary['entries']} entries, "
                              f"{summary['actors']} actors, {summary['batches']} batches, {summary['packs']} packs"),
                         highlight=False)
