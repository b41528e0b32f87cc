"""athar audit: verify the whole ledger (from its database or a remote API), rebuild projections, watch a log.

The storage modules are imported inside the commands that use the database, so remote commands start fast.
"""

from __future__ import annotations

import contextlib
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn
from rich.text import Text

from ledger import errors as E

if TYPE_CHECKING:
    from ledger.admission import TrustAnchors
    from ledger.audit import AuditReport, LogVerifier
    from ledger.audit_state import KeptState
    from scanner_cli.client import AtharClient
from ledger.checkpoint import (
    Checkpoint,
    CheckpointError,
    check_key_name,
    cosign,
    open_checkpoint,
    split_note,
    verifier_key,
)
from ledger.monitor import check_update
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
from scanner_cli.options import DataDir, DbUrl, Json, home_path
from signing import PublicKey, canonical
from signing.errors import SigningError
from signing.keys import read_private_key, read_public_key

Witnesses = Annotated[list[str] | None, typer.Option(
    "--witness", show_default=False,
    help="NAME=FILE: a witness's public key, to check its cosignatures (repeatable; the data directory's "
         "keys/witnesses/NAME.pub are read too)")]

AuditState = Annotated[Path | None, typer.Option(
    "--state", show_default=False,
    help="keep what this audit verified in FILE; when FILE exists, verify only the entries added since it was "
         "written (an incremental audit), then update it. Keep it where only the auditor writes.")]


def witness_keys(data_dir: Path | None, given: list[str] | None) -> dict[str, PublicKey]:
    """The witness keys at hand: the data directory's keys/witnesses/NAME.pub, then each --witness NAME=FILE."""
    from ledger.home import Home

    try:
        keys = Home(home_path(data_dir)).witnesses()
    except SigningError as exc:
        usage(f"a witness key in the data directory: {exc}")
    named: set[str] = set()
    for item in given or []:
        name, sep, file = item.partition("=")
        if not sep or not name or not file:
            usage(f"--witness takes NAME=FILE (a witness's public key file), not {item!r}")
        try:
            check_key_name(name)
        except CheckpointError as exc:
            usage(f"--witness {name}: not a witness name ({exc})")
        if name in named:
            usage(f"--witness {name} is given twice")
        named.add(name)
        try:
            keys[name] = read_public_key(Path(file))
        except SigningError as exc:
            usage(f"--witness {name}: {exc}")
    return keys


app = typer.Typer(help="Audit the ledger: verify every signature, chain link, Merkle node and checkpoint.",
                  no_args_is_help=True)


@app.command()
def verify(data_dir: DataDir = None, db: DbUrl = None,
           url: Annotated[str | None, typer.Option("--url", help="verify a remote ledger through its API instead "
                                                   "(needs --actor/--key of a regulator or inspector)")] = None,
           key: KeyFile = None, actor: Actor = None, ledger_key: LedgerKey = None, root_key: RootKey = None,
           witness: Witnesses = None, state: AuditState = None, json_out: Json = False) -> None:
    """Verify the whole log, from the database or (--url) a remote API: every signature, chain link, Merkle
    node, checkpoint and the cosignatures of the witnesses whose keys are at hand; exit 0 when intact, 20 naming
    the first bad entry otherwise. Locally it needs only the public keys (--ledger-key/--root-key, default the
    data directory's keys/*.pub; witnesses: keys/witnesses/NAME.pub and --witness) and never writes to the
    ledger. With --state, only what was added since the last audit that kept that file."""
    if url is not None:
        verify_remote(url, key, actor, data_dir, ledger_key, root_key, witness, state, json_out)
        return
    from ledger.audit import verify_store
    from ledger.heap import long_task
    from ledger.home import Home, open_store

    Home(home_path(data_dir)).config()  # no data directory at all is the first thing to say
    # only the public keys: an offline verifier of a copy is never given the ledger's private key
    trust = pinned_trust(data_dir, ledger_key, root_key)
    assert trust is not None
    witnesses = witness_keys(data_dir, witness)
    _state_dir(state)
    store, database, origin = open_store(home_path(data_dir), trust, db)
    try:
        with long_task(), _kept(state, trust, origin) as kept, _verifier(kept, trust, origin) as verifier:
            with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                          console=render.errors, disable=_quiet(json_out), transient=True) as bar:
                task = bar.add_task("entries", total=None)
                report = verify_store(store, trust, origin, resume=verifier, cosigned=kept,
                                      witnesses=witnesses,
                                      progress=lambda done, total: bar.update(task, completed=done, total=total))
            _keep(kept, report)
    finally:
        database.dispose()
    _report(report, json_out)


@app.command()
def rebuild(data_dir: DataDir = None, db: DbUrl = None,
            write: Annotated[bool, typer.Option("--write", help="replace stored projections that differ")] = False,
            ledger_key: LedgerKey = None, root_key: RootKey = None, json_out: Json = False) -> None:
    """Rebuild every projection (batches, packs, holdings, actors...) from the verified log; report differences.
    It needs only the two public keys, like 'audit verify'; without --write it never writes."""
    from ledger.heap import long_task
    from ledger.home import Home, open_store
    from ledger.rebuild import rebuild as rebuild_projections

    Home(home_path(data_dir)).config()
    trust = pinned_trust(data_dir, ledger_key, root_key)
    assert trust is not None
    store, database, origin = open_store(home_path(data_dir), trust, db, read_only=not write)
    try:
        with long_task():
            audit_report, result = rebuild_projections(store, trust, origin, write=write)
    finally:
        database.dispose()
    if json_out:
        render.emit_json({"clean": result.clean, "rewritten": result.rewritten, "entries": audit_report.entries,
                          "rows": result.counts, "differences": result.differences})
    else:
        total = sum(len(v) for v in result.differences.values())
        render.console.print(f"replayed {audit_report.entries} verified entries: "
                             + ", ".join(f"{n} {k}" for k, n in result.counts.items()))
        if result.clean:
            render.console.print("[green]the stored projections match the log[/]")
        for name, diffs in result.differences.items():
            for line in diffs[:20]:
                render.console.print(f"  [yellow]differs[/] {render.escape(line)}", highlight=False, soft_wrap=True)
            if len(diffs) > 20:
                render.console.print(f"  ... and {len(diffs) - 20} more in {render.escape(name)}")
        if total and result.rewritten:
            render.console.print(f"[green]rewrote[/] the projections from the log ({total} differences fixed)")
        elif total:
            render.console.print(f"{total} difference(s); run again with --write to replace the projections")
    if not result.clean and not result.rewritten:
        raise typer.Exit(exit_codes.TAMPERED)


@app.command("verify-remote")
def verify_remote(url: Url = DEFAULT_URL, key: KeyFile = None, actor: Actor = None, data_dir: DataDir = None,
                  ledger_key: LedgerKey = None, root_key: RootKey = None, witness: Witnesses = None,
                  state: AuditState = None, json_out: Json = False) -> None:
    """Verify the whole log served by a remote API (regulator or inspector identity), streaming, and the witness
    cosignatures on its latest checkpoint. With --state, only what was added since the last audit that kept
    that file."""
    from ledger.heap import long_task

    identity = resolve_identity(key, actor, data_dir, required=True, what="a remote audit")
    trust = pinned_trust(data_dir, ledger_key, root_key)
    assert trust is not None
    witnesses = witness_keys(data_dir, witness)
    _state_dir(state)
    with client(url, identity) as api, long_task():
        note = api.checkpoint()
        origin = note.split("\n", 1)[0]
        try:
            open_checkpoint(note, verifier_key(origin, trust.ledger))
        except (CheckpointError, ValueError):
            # the server's note, not the auditor's state, is wrong: said as a finding, the state left unread
            state = None
        with _kept(state, trust, origin) as kept, _verifier(kept, trust, origin) as verifier:
            report = _verify_remote(api, note, verifier, witnesses, json_out)
            _keep(kept, report)
    _report(report, json_out)


def _verify_remote(api: AtharClient, note: str, verifier: LogVerifier, witnesses: dict[str, PublicKey],
                   json_out: bool) -> AuditReport:
    """Feed the verifier the entries the server serves after those it verified, up to ``note``'s size."""
    from ledger.audit import AuditFailure

    done = verifier.tree.size
    try:
        try:
            size = open_checkpoint(note, verifier.vkey).size
        except CheckpointError as err:
            raise AuditFailure(None, f"the served checkpoint is not signed by the pinned ledger key: {err}") from err
        if size < done:  # a signed checkpoint of a shorter log: the server's own word that it rolled back
            raise AuditFailure(None, f"the log shrank from the {done} entries verified before to {size}: "
                                     "history was rolled back")
        with Progress(TextColumn("verifying"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                      console=render.errors, disable=_quiet(json_out), transient=True) as bar:
            task = bar.add_task("entries", total=size, completed=done)
            start = done
            while start < size:
                # the server may send fewer than asked (a page of big commissions is cut by its bytes)
                page = api.entries(start, min(size, start + 1000))
                for item in page:
                    try:
                        leaf, index, entry_hash = canonical(item["entry"]), int(item["index"]), bytes.fromhex(
                            item["entry_hash"])
                    except (KeyError, TypeError, ValueError, SigningError) as err:
                        raise AuditFailure(verifier.tree.size, f"the server served entry {verifier.tree.size} in "
                                                               f"a form that is not a log entry ({err!r})") from err
                    verifier.add(index, leaf, entry_hash)
                start = verifier.tree.size
                bar.update(task, completed=start)
                if not page:  # a server that signs more than it serves would be asked for ever
                    break
        if verifier.tree.size != size:
            raise AuditFailure(verifier.tree.size, f"the server returned {verifier.tree.size} of {size} entries")
        verifier.checkpoint(note)
        verifier.cosignatures(note, witnesses)
    except AuditFailure as stop:
        verifier.report.failure = stop.failure
    return verifier.finish()


@app.command()
def watch(url: Url = DEFAULT_URL, data_dir: DataDir = None, ledger_key: LedgerKey = None, root_key: RootKey = None,
          state: Annotated[Path, typer.Option(help="where the last trusted checkpoint is kept")] = Path(
              "athar-watch.checkpoint"),
          interval: Annotated[float, typer.Option(help="seconds between polls")] = 30.0,
          once: Annotated[bool, typer.Option("--once", help="check once and exit")] = False,
          witness_key: Annotated[Path | None, typer.Option(help="cosign verified checkpoints with this key")] = None,
          witness_name: Annotated[str | None, typer.Option(help="the witness name in cosignatures")] = None) -> None:
    """Monitor a log: every new checkpoint must extend the last trusted one (consistency proof); a rollback
    or fork is reported loudly (exit 20). With --witness-key, cosign each verified checkpoint."""
    trust = pinned_trust(data_dir, ledger_key, root_key)
    assert trust is not None
    if witness_key is not None and not witness_key.is_file():
        usage(f"key file {witness_key} does not exist")
    witness = read_private_key(witness_key) if witness_key else None
    if witness and not witness_name:
        usage("--witness-key needs --witness-name (the name clients know the witness by)")
    if witness_name is not None:
        try:
            check_key_name(witness_name)
        except CheckpointError as exc:
            usage(f"--witness-name: {exc}")
    if not state.parent.is_dir():
        usage(f"--state {state}: the directory {state.parent} does not exist")
    _trusted(state)  # a bad state file is said before the log is asked anything
    with client(url) as api:
        while True:
            note = api.checkpoint()
            origin = note.split("\n", 1)[0]
            trusted = _trusted(state)
            try:
                new = check_update(trusted, note, verifier_key(origin, trust.ledger),
                                   lambda a, b: [bytes.fromhex(h) for h in api.consistency(a, b)["hashes"]])
            except E.IntegrityError as err:
                render.fail_line(f"LOG INTEGRITY ALARM: {err.message}")
                raise typer.Exit(exit_codes.TAMPERED) from err
            if trusted is None or new.size != trusted.size:
                state.write_text(note)
                render.console.print(f"trusted checkpoint: size {new.size} root {new.root.hex()[:16]}…"
                                     + (f" (extends {trusted.size})" if trusted else " (first seen)"))
            if witness is not None and witness_name is not None:
                # the ledger's own signature and ours only: other witnesses' lines in the served note would let the
                # log accept the note while it drops ours
                text, sigs = split_note(note)
                own = "".join(sig.line() for sig in sigs if sig.name == origin)
                answer = api.submit_cosignature(cosign(f"{text}\n{own}", witness_name, witness, int(time.time())))
                if witness_name not in answer.get("accepted", []):
                    render.fail_line(f"the log did not accept the cosignature of {witness_name}: is the witness "
                                     "configured on the server (keys/witnesses/NAME.pub)?")
                    raise typer.Exit(exit_codes.AUTH)
                render.console.print(Text(f"cosigned checkpoint size {new.size} as {witness_name}"),
                                     highlight=False)
            if once:
                return
            time.sleep(interval)


def _trusted(state: Path) -> Checkpoint | None:
    """The last checkpoint this monitor trusted, from ``state`` (None before the first)."""
    if not state.exists():
        return None
    try:
        return Checkpoint.parse_body(state.read_text(encoding="utf-8").split("\n\n", 1)[0] + "\n")
    except (OSError, UnicodeDecodeError, CheckpointError) as exc:
        # not moved aside here: it is the monitor's only memory of what the log promised
        usage(f"--state {state} does not hold a checkpoint this monitor wrote ({exc})")


def _quiet(json_out: bool) -> bool:
    """No progress bar for --json, nor where no one watches it (it would leave an empty line in a log)."""
    return json_out or not render.errors.is_terminal


def _state_dir(state: Path | None) -> None:
    if state is not None and not state.parent.is_dir():
        usage(f"--state {state}: {state.parent} is not a directory" if state.parent.exists() else
              f"--state {state}: the directory {state.parent} does not exist")


@contextlib.contextmanager
def _kept(state: Path | None, trust: TrustAnchors, origin: str) -> Iterator[KeptState | None]:
    """The state file open for this audit (None without --state). A file that cannot be used stops the audit in
    one line (exit 2) and is left as it was: it is all the auditor remembers of what it verified."""
    from ledger import audit_state

    if state is None:
        yield None
        return
    try:
        with audit_state.kept(state, trust, origin) as kept:
            yield kept
    except audit_state.StateFileError as exc:
        usage(f"--state: {exc}")


@contextlib.contextmanager
def _verifier(kept: KeptState | None, trust: TrustAnchors, origin: str) -> Iterator[LogVerifier]:
    """The verifier that resumes from the state file, or, without --state, a fresh one replaying on a scratch
    file (so that a full audit's memory does not grow with the log)."""
    from ledger import audit_state

    if kept is not None:
        yield kept.verifier
        return
    try:
        with audit_state.scratch(trust, origin) as verifier:
            yield verifier
    except audit_state.StateFileError as exc:
        usage(str(exc))


def _keep(kept: KeptState | None, report: AuditReport) -> None:
    """Keep what a passed audit verified; a failed audit leaves the file as it was."""
    if kept is None or not report.ok:
        return
    from ledger.audit_state import StateFileError

    try:
        kept.commit(report)
    except (OSError, sqlite3.Error, StateFileError) as exc:
        usage(f"the log is intact, but the audit state could not be saved to {kept.path}: {exc}")


def _report(report: AuditReport, json_out: bool) -> None:
    result = {"ok": report.ok, "entries": report.entries, "resumed_from": report.resumed_from,
              "tree_size": report.tree_size, "chains": report.chains,
              "actors": report.actors, "batches": report.batches, "checkpoints": report.checkpoints,
              "cosignatures": report.cosignatures, "unchecked_cosignatures": report.unchecked_witnesses,
              "first_failure": None if report.failure is None else
              {"index": report.failure.index, "reason": report.failure.reason}}
    if json_out:
        render.emit_json(result)
    elif report.ok:
        since = (f" (after the {report.resumed_from} of the last audit: {report.tree_size} in all)"
                 if report.resumed_from else "")
        render.console.print(f"[green]intact[/]: {report.entries} {'new ' if report.resumed_from else ''}entries"
                             f"{since}, {report.chains} chains, {report.actors} "
                             f"actors, {report.batches} batches, {report.checkpoints} "
                             f"checkpoint{'' if report.checkpoints == 1 else 's'}"
                             + (f", {report.cosignatures} witness cosignatures" if report.cosignatures else "")
                             + " verified", soft_wrap=True)
        for name, n in sorted(report.unchecked_witnesses.items()):
            render.console.print(Text(f"  {n} cosignature(s) of witness {name} not checked: its key is not at hand "
                                      "(keys/witnesses/NAME.pub or --witness NAME=FILE)"), highlight=False,
                                 soft_wrap=True)
    else:
        assert report.failure is not None
        where = f"entry {report.failure.index}" if report.failure.index is not None else "the log"
        render.fail_line(f"TAMPERED at {where}: {report.failure.reason}")
    if not report.ok:
        raise typer.Exit(exit_codes.TAMPERED)
