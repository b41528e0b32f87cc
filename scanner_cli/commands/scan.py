"""athar scan: decode pack codes (images, text, stdin) and give each a verdict, online or from an offline bundle.

Exit code: the worst verdict over all codes (exit_codes.VERDICT: TAMPERED, then suspect verdicts, then
AUTHENTIC); when no code got a suspect verdict: 6 if a pack could not be checked offline (not in the bundle),
else 2 if some input could not be read at all (no image, no barcode, not a GS1 pack code).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from ledger import errors as E
from ledger.heap import long_task
from ledger.verdict import Verdict
from scanner_cli import exit_codes, render
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
from scanner_cli.verify import (
    SEVERITY,
    BundleFileError,
    OfflineBundle,
    ScanResult,
    offline_verdict,
    online_verdict,
    read_bundle,
    tampered,
    verify_offline,
)

COLOURS = {Verdict.AUTHENTIC: "bold green", Verdict.TAMPERED: "bold white on red", Verdict.UNKNOWN: "bold red",
           Verdict.MISMATCH: "bold red"}
BORDERS = {Verdict.AUTHENTIC: "green", Verdict.TAMPERED: "red", Verdict.UNKNOWN: "red", Verdict.MISMATCH: "red"}


@dataclass(frozen=True)
class Scanned:
    source: str
    code: PackCode | None
    error: str | None = None


_Show = Callable[[Scanned, ScanResult | None], None]


def scan(images: Annotated[list[Path] | None, typer.Argument(help="image files (photos or scans of packs)",
                                                              show_default=False)] = None,
         text: Annotated[list[str] | None, typer.Option("--text", help="a scanned code as text, e.g. "
                                                        "']d20106111234567895172806301012AB<GS>21XY9' (repeatable)",
                                                        show_default=False)] = None,
         stdin: Annotated[bool, typer.Option("--stdin", help="read codes from standard input, one per line")] = False,
         offline: Annotated[Path | None, typer.Option("--offline", help="verify against this bundle, with no "
                                                      "network at all", show_default=False)] = None,
         oneline: Annotated[bool, typer.Option("--oneline", help="one line per code (the default for --stdin)")]
         = False,
         url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
         ledger_key: LedgerKey = None, root_key: RootKey = None, json_out: Json = False) -> None:
    """Give each scanned pack a verdict: AUTHENTIC, UNKNOWN, MISMATCH, ALREADY_DISPENSED, RECALLED, QUARANTINED,
    EXPIRED, NOT_IN_CUSTODY or TAMPERED, with its provenance."""
    if not images and not text and not stdin:
        usage("nothing to scan: give image files, --text CODE or --stdin")
    if sys.stdout is None:  # started with stdout closed ('>&-'): the verdicts could not be shown
        usage("standard output is closed: the verdicts cannot be shown")
    oneline = oneline or stdin
    worst = -1
    errors = 0
    not_checked = 0

    def show(item: Scanned, result: ScanResult | None) -> None:
        nonlocal worst, errors, not_checked
        if result is None:
            errors += 1
            render.fail_line(item.error or "unreadable")
            if json_out:
                _json_line({"input": item.source, "verdict": None, "error": item.error})
            return
        if result.not_checked:
            not_checked += 1
        else:
            worst = max(worst, SEVERITY[result.verdict])
        if json_out:
            _json_line(result.to_json(item.source))
        elif oneline:
            _print_line(item.source, result)
        else:
            render.console.print(_panel(item.source, result))

    seen = 0

    def counted(items: Iterator[Scanned]) -> Iterator[Scanned]:
        nonlocal seen
        for item in items:
            seen += 1
            yield item

    inputs = counted(_inputs(images or [], text or [], stdin))
    if offline is not None:
        # the identity is resolved as online (a key file that is missing or names no actor is an error, not
        # silently no identity): custody is judged for the actor it names
        me = resolve_identity(key, actor, data_dir)
        _scan_offline(offline, inputs, show, me.actor if me else None, data_dir, ledger_key, root_key)
    else:
        identity = resolve_identity(key, actor, data_dir)
        # with an identity the pinned keys are required; without one they are used when named (a data directory
        # found by default may be another ledger's, and would turn every verdict of this one into TAMPERED)
        named = data_dir is not None or ledger_key is not None or root_key is not None
        trust = pinned_trust(data_dir, ledger_key, root_key, required=identity is not None) \
            if identity is not None or named else None
        with client(url, identity) as api:
            for item in inputs:
                if item.code is None:
                    show(item, None)
                    continue
                try:
                    result = online_verdict(api, item.code, identity, trust)
                except E.LedgerError as err:
                    if isinstance(err, E.AuthError | E.StorageUnavailable | E.IntegrityError):
                        raise
                    show(Scanned(item.source, None, f"{item.source}: {err.message}"), None)
                    continue
                show(item, result)
    if not seen:  # only --stdin can give nothing: an empty or blank input is a mistake, not a clean scan
        usage("no codes on standard input")
    by_severity = {v: k for k, v in SEVERITY.items()}
    verdict = by_severity.get(worst)
    if verdict is not None and verdict is not Verdict.AUTHENTIC:
        raise typer.Exit(exit_codes.VERDICT[verdict])
    if not_checked:
        raise typer.Exit(exit_codes.NOT_CHECKED)
    raise typer.Exit(exit_codes.USAGE if errors else exit_codes.OK)


def _scan_offline(path: Path, inputs: Iterator[Scanned], show: _Show, actor: str | None, data_dir: Path | None,
                  ledger_key: Path | None, root_key: Path | None) -> None:
    trust = pinned_trust(data_dir, ledger_key, root_key)
    assert trust is not None
    vb: OfflineBundle | None = None
    failure = ""
    with long_task():  # once per session, tens of thousands of objects: the collector would scan them repeatedly
        try:
            doc = read_bundle(path)
        except BundleFileError as exc:
            usage(str(exc))
        try:
            vb = verify_offline(doc, trust)
        except E.IntegrityError as err:
            failure = f"the bundle {path} fails verification: {err.message}"
            render.fail_line(failure)
    for item in inputs:
        if item.code is None:
            show(item, None)
        elif vb is None:
            show(item, tampered(item.code, failure, "offline"))
        else:
            show(item, offline_verdict(vb, item.code, actor))


# ---- inputs -------------------------------------------------------------------------------------------------


def _inputs(images: list[Path], texts: list[str], stdin: bool) -> Iterator[Scanned]:
    for path in images:
        yield from _from_image(path)
    for i, t in enumerate(texts, 1):
        yield _from_text(t, f"text {i}" if len(texts) > 1 else "text")
    if stdin:
        for n, line in enumerate(sys.stdin, 1):
            if n == 1:  # a file saved by a Windows editor starts with a byte order mark
                line = line.removeprefix("\ufeff")
            if line.strip():
                yield _from_text(line.rstrip("\r\n"), f"line {n}")


def _from_text(raw: str, source: str) -> Scanned:
    try:
        code = parse_scanned_text(raw)
    except ScanTextError as exc:
        return Scanned(source, None, f"{source}: {exc}")
    if code.serial is None:
        return Scanned(source, None, f"{source}: the code carries no serial number (AI 21): only serialized packs "
                                     "can be checked")
    return Scanned(source, code)


def _from_image(path: Path) -> Iterator[Scanned]:
    from scanner_cli.decode import DecodeError, decode_image  # zxing-cpp and Pillow load only for images

    name = str(path)
    try:
        symbols = decode_image(path)
    except DecodeError as exc:
        yield Scanned(name, None, str(exc))
        return
    if not symbols:
        yield Scanned(name, None, f"no barcode found in {name}")
        return
    seen: set[tuple[object, ...]] = set()
    found: list[Scanned] = []
    first_error: str | None = None
    for symbol in symbols:
        item = _from_text(symbol.symbology_identifier + symbol.text, f"{name} ({symbol.format})")
        if item.code is None:
            first_error = first_error or item.error
            continue
        ident = (item.code.gtin, item.code.lot, item.code.expiry, item.code.serial)
        if ident not in seen:  # the DataMatrix and the QR of one label name the same pack
            seen.add(ident)
            found.append(Scanned(name, item.code))
    if not found:
        yield Scanned(name, None, first_error or f"no pack code found in {name}")
    yield from found


# ---- output -------------------------------------------------------------------------------------------------


def _json_line(value: object) -> None:
    sys.stdout.write(json.dumps(value, ensure_ascii=False, default=str) + "\n")
    sys.stdout.flush()


def _print_line(source: str, r: ScanResult) -> None:
    c = r.code
    line = Text()
    line.append(f"{r.label:<17}", style=COLOURS.get(r.verdict, "bold yellow") if not r.not_checked else "yellow")
    line.append(f" {c.gtin} lot {c.lot or '-'} sn {c.serial}  {r.reason}  [{source}]")
    render.console.print(line, soft_wrap=True)


def _panel(source: str, r: ScanResult) -> Panel:
    c = r.code
    style = COLOURS.get(r.verdict, "bold yellow") if not r.not_checked else "bold yellow"
    facts = Table.grid(padding=(0, 2))
    facts.add_row("reason", Text(r.reason))
    facts.add_row("product", Text(f"{r.product or '-'}" + (f"  ({r.manufacturer})" if r.manufacturer else "")))
    facts.add_row("pack", Text(f"GTIN {c.gtin}  serial {c.serial}"))
    facts.add_row("as scanned", Text(f"lot {c.lot or '-'}  expiry {c.expiry.isoformat() if c.expiry else '-'}"))
    if r.lot:
        facts.add_row("registered", Text(f"lot {r.lot}  expiry {r.expiry.isoformat() if r.expiry else '-'}"))
    facts.add_row("checked", Text(r.verification))
    parts: list[Table] = [facts]
    if r.provenance:
        steps = Table(title="provenance", title_justify="left", box=None, padding=(0, 1), header_style="dim")
        for col in ("#", "when (UTC)", "what", "who", "role, region", "signature"):
            steps.add_column(col, no_wrap=col in ("#", "when (UTC)", "what", "signature"))
        for s in r.provenance:
            sig = Text("✓ verified", style="green") if s.signature == "verified" else Text(s.signature, style="dim")
            steps.add_row(str(s.index), Text(s.time[:16].replace("T", " "), no_wrap=True), Text(s.type),
                          Text(s.actor_name), Text(", ".join(p for p in (s.role, s.region) if p)), sig)
        parts.append(steps)
    return Panel(Group(*parts), title=Text(f" {r.label} ", style=style), title_align="left",
                 subtitle=Text(source), subtitle_align="right",
                 border_style="yellow" if r.not_checked else BORDERS.get(r.verdict, "yellow"))
