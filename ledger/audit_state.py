"""An auditor's memory between two audits: what it verified, so the next audit verifies only what was added.

A full audit replays the whole log, which at national scale (about a billion entries a year) takes more than a
day; an auditor that keeps this file verifies each day's entries instead. The file holds the Merkle tree's compact
range (the roots of the perfect subtrees covering the verified entries), the chain heads and the custody state
the replay reached. A resumed audit appends the new entries to that compact range, so the root it checks the
log's checkpoints against commits to the entries verified before as well as the new ones: a log whose verified
part was rewritten cannot match it (RFC 9162's consistency, with the old entries kept by the auditor rather than
proven by the log).

The file is a SQLite database, and the replay runs on it (``ledger.replay_disk.DiskState``): the audit's memory
no longer grows with the packs of the log. The whole audit is one transaction on it, committed only when the log
verified, so a failed, interrupted or crashed audit leaves the file as the last good audit left it; the first
audit builds a new file under a temporary name and renames it when done. Two audits cannot use one file at once.

The file is the auditor's trust store, like a monitor's last checkpoint: whoever can rewrite it can make the
auditor trust anything, so it belongs where only the auditor writes.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import sqlite3
import stat
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from ledger.admission import TrustAnchors
from ledger.audit import AuditReport, ChainHead, LogVerifier
from ledger.merkle import CompactRange
from ledger.record_codec import decode_all, encode_all
from ledger.replay_disk import DiskState
from ledger.state import Actor, Batch, KeyRecord

FORMAT = "athar-audit-state/1"
#: SQLite's page cache for the state file, in KiB (the part of the packs the replay finds in memory)
CACHE_KIB = 131_072
#: records a full audit that keeps nothing holds in memory before it writes them to its scratch file (``scratch``)
SCRATCH_FLUSH_EVERY = 1_000_000
_SMALL = {"actors": Actor, "keys": KeyRecord, "batches": Batch}
COSIGNED = ("CREATE TABLE IF NOT EXISTS cosigned (size INTEGER NOT NULL, witness TEXT NOT NULL, line TEXT NOT NULL, "
            "verified INTEGER NOT NULL, PRIMARY KEY (size, witness)) WITHOUT ROWID")
#: SQLite keeps its rollback journal beside the file, named after it
JOURNAL = "-journal"
#: the file a first audit builds, beside the state file (short: the state file's own name may be long)
BUILDING = ".athar-audit-{pid}.tmp"
#: a full audit's scratch directory in the temporary directory (``scratch``), and the file it holds locked while
#: the audit runs (so the next audit removes only the directories of audits that are gone)
SCRATCH_PREFIX = "athar-audit-scratch-"
SCRATCH_NAME = re.compile(re.escape(SCRATCH_PREFIX) + r"[a-z0-9_]{8}")
SCRATCH_LOCK = "lock"
SCRATCH_FILES = {SCRATCH_LOCK, "replay.db", "replay.db-journal"}


class StateFileError(Exception):
    """The state file cannot be used: damaged, of another format, written for another ledger, or in use."""


class KeptState:
    """A state file open for one audit: ``verifier`` resumes from it (or starts afresh for a new file); ``commit``
    keeps what a passed audit verified; ``close`` without a commit leaves the file as it was."""

    def __init__(self, path: Path, db: sqlite3.Connection, verifier: LogVerifier, building: Path | None) -> None:
        self.path, self.db, self.verifier, self._building = path, db, verifier, building
        self._done = False
        db.execute(COSIGNED)

    # the witness cosignature rows verified (``ledger.audit.CosignatureMemory``)

    def seen(self, size: int, witness: str, line: str) -> bool | None:
        row = self.db.execute("SELECT line, verified FROM cosigned WHERE size = ? AND witness = ?",
                              (size, witness)).fetchone()
        return None if row is None or row[0] != line else bool(row[1])

    def remember(self, size: int, witness: str, line: str, verified: bool) -> None:
        self.db.execute("INSERT OR REPLACE INTO cosigned VALUES (?, ?, ?, ?)", (size, witness, line, verified))

    def commit(self, report: AuditReport) -> None:
        if not report.ok:
            raise ValueError("only a passed audit's state may be kept")
        state = report.state
        assert isinstance(state, DiskState)
        state.flush()
        tree = report.tree
        meta: dict[str, Any] = {
            "format": FORMAT, "origin": self.verifier.origin, "ledger_key": self.verifier.trust.ledger.b64,
            "root_key": self.verifier.trust.root.b64,
            "tree": {"size": tree.size, "hashes": [h.hex() for _, h in tree.nodes()]},
            "chains": {name: [h.hash.hex(), h.index, h.length] for name, h in report.chain_heads.items()},
            **{name: encode_all(cls, getattr(state, name).values()) for name, cls in _SMALL.items()},
        }
        self.db.executemany("INSERT OR REPLACE INTO meta VALUES (?, ?)",
                            [(k, json.dumps(v, ensure_ascii=False)) for k, v in meta.items()])
        self.db.execute("COMMIT")
        self.db.close()
        self._done = True
        if self._building is not None:
            try:  # a link, not a rename: it never replaces a state another audit kept while this one ran
                os.link(self._building, self.path)
            except FileExistsError as exc:
                raise StateFileError(f"{self.path} was written by another audit while this one ran; it is kept, "
                                     "and this audit's state is not") from exc
            except OSError:  # a file system without hard links
                if self.path.exists():
                    raise
                os.replace(self._building, self.path)
            self._building.unlink(missing_ok=True)
            self._building = None

    def close(self) -> None:
        if not self._done:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            self.db.close()
            self._done = True
            if self._building is None:
                _roll_back_journal(self.path)
        if self._building is not None:
            for leftover in (self._building, self._building.with_name(self._building.name + JOURNAL)):
                with contextlib.suppress(OSError):
                    leftover.unlink(missing_ok=True)


@contextlib.contextmanager
def kept(path: Path, trust: TrustAnchors, origin: str) -> Iterator[KeptState]:
    """The state file at ``path`` open for one audit (a new one if there is none). Errors of the file, here or
    during the audit, are ``StateFileError``."""
    state = _open(path, trust, origin)
    try:
        yield state
    except sqlite3.Error as exc:  # the state file's own (the ledger's database errors are the ledger's)
        raise StateFileError(f"{path}: {exc}") from exc
    finally:
        state.close()


@contextlib.contextmanager
def scratch(trust: TrustAnchors, origin: str, directory: Path | None = None,
            flush_every: int = SCRATCH_FLUSH_EVERY) -> Iterator[LogVerifier]:
    """A fresh verifier for a full audit that keeps nothing: its replay runs on a throwaway SQLite file in
    ``directory`` (default: the system's temporary directory, ``TMPDIR``), removed afterwards. An in-memory replay
    holds every pack of the log (about 1.6 GB per million entries): a national log outgrows any machine's memory
    within weeks. Here changed records (mostly packs) wait in memory until there are ``flush_every`` of them, then
    go to the file. Errors of the file, here or during the audit, are ``StateFileError``."""
    where = directory or Path(tempfile.gettempdir())
    hint = "set TMPDIR to a directory with room, or keep a state with --state"
    _remove_abandoned_scratch(where)
    try:
        tmp = tempfile.TemporaryDirectory(prefix=SCRATCH_PREFIX, dir=where, ignore_cleanup_errors=True)
    except OSError as exc:
        raise StateFileError(f"cannot make the audit's scratch file in {where}: {exc} ({hint})") from exc
    lock: BinaryIO | None = None
    try:
        # held until the audit ends, by whatever process and PID namespace: "in use" to other audits' cleanup
        lock = open(Path(tmp.name) / SCRATCH_LOCK, "wb")  # noqa: SIM115 - held across the yield, closed below
        fcntl.flock(lock, fcntl.LOCK_EX)
        db = sqlite3.connect(str(Path(tmp.name) / "replay.db"), isolation_level=None)
    except (OSError, sqlite3.Error) as exc:
        if lock is not None:
            lock.close()
        tmp.cleanup()
        raise StateFileError(f"cannot make the audit's scratch file in {where}: {exc} ({hint})") from exc
    try:
        # nothing here survives the audit: no journal to keep, no flush to wait for
        db.execute("PRAGMA journal_mode = OFF")
        db.execute("PRAGMA synchronous = OFF")
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("BEGIN")
        verifier = LogVerifier(trust, origin)
        verifier.report.state = DiskState(db, flush_every)
        yield verifier
    except sqlite3.Error as exc:  # the scratch file's own (the ledger's database errors are the ledger's)
        raise StateFileError(f"the audit's scratch file in {where}: {exc} ({hint})") from exc
    finally:
        db.close()
        lock.close()
        tmp.cleanup()


def _open(path: Path, trust: TrustAnchors, origin: str) -> KeptState:
    with contextlib.suppress(OSError, ValueError):
        if len(os.fsencode(path.name + JOURNAL)) > os.pathconf(path.parent, "PC_NAME_MAX"):
            raise StateFileError(f"{path.name!r} is too long a file name: SQLite keeps a journal beside it named "
                                 f"{path.name}{JOURNAL}, which this file system cannot hold")
    if path.exists() or path.is_symlink():
        if not path.is_file():
            raise StateFileError(f"{path} is not a file")
        db = _connect(path)
        try:
            verifier = _resume(path, db, trust, origin)  # checks the file before anything is written to it
            _writable(path, db)
            return KeptState(path, db, verifier, None)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                db.execute("ROLLBACK")
            db.close()
            raise
    _remove_abandoned(path.parent)
    building = path.with_name(BUILDING.format(pid=os.getpid()))
    with contextlib.suppress(OSError):  # unwritable: said by the connection below
        building.unlink(missing_ok=True)
    db = _connect(building)
    try:
        _writable(building, db)
        verifier = LogVerifier(trust, origin)
        verifier.report.state = DiskState(db)
        return KeptState(path, db, verifier, building)
    except (StateFileError, sqlite3.Error) as exc:
        db.close()
        building.unlink(missing_ok=True)
        if isinstance(exc, StateFileError):
            raise
        raise StateFileError(f"cannot write to {building}: {exc}") from exc


def _roll_back_journal(path: Path) -> None:
    """After a failed write (a full disk), SQLite may leave the file changed and its journal beside it, which the
    next connection to read it rolls back: that is done now, so the file alone is the last good state again."""
    if not path.with_name(path.name + JOURNAL).exists():
        return
    with contextlib.suppress(sqlite3.Error), contextlib.closing(sqlite3.connect(str(path), timeout=1.0)) as db:
        db.execute("SELECT count(*) FROM sqlite_master").fetchone()


def _remove_abandoned(directory: Path) -> None:
    """The files a first audit was building in ``directory`` when it was killed (and their journals): those of a
    process that is gone. A live one's are its own."""
    prefix, suffix = BUILDING.split("{pid}")
    for leftover in directory.glob(f"{prefix}*{suffix}*"):
        pid = leftover.name[len(prefix):].split(".", 1)[0]
        if pid.isdigit() and not _alive(int(pid)):
            with contextlib.suppress(OSError):  # a read-only directory: the audit says so when it tries to write
                leftover.unlink(missing_ok=True)


def _remove_abandoned_scratch(directory: Path) -> None:
    """The scratch directories of audits that were killed (SIGKILL, SIGTERM, a power cut: no cleanup ran), which
    may hold gigabytes. Only what ``scratch`` makes: a directory of this user, named as it names them, holding
    nothing but its files, whose lock no running audit holds."""
    with contextlib.suppress(OSError):
        for leftover in directory.glob(f"{SCRATCH_PREFIX}*"):
            with contextlib.suppress(OSError):
                st = leftover.lstat()
                if not (SCRATCH_NAME.fullmatch(leftover.name) and stat.S_ISDIR(st.st_mode)
                        and st.st_uid == os.geteuid()):
                    continue
                names = set(os.listdir(leftover))
                if SCRATCH_LOCK not in names or not names <= SCRATCH_FILES:  # not (yet) one of ours
                    continue
                fd = os.open(leftover / SCRATCH_LOCK, os.O_RDONLY | os.O_NOFOLLOW)
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)  # BlockingIOError: a running audit's
                    shutil.rmtree(leftover, ignore_errors=True)
                finally:
                    os.close(fd)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except (ProcessLookupError, OverflowError):
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def _connect(path: Path) -> sqlite3.Connection:
    try:
        db = sqlite3.connect(str(path), isolation_level=None, timeout=1.0)
        db.execute(f"PRAGMA cache_size = -{CACHE_KIB}")
        db.execute("BEGIN IMMEDIATE")  # the write lock, for the whole audit: one audit per file
    except sqlite3.OperationalError as exc:
        if "locked" in str(exc):
            raise StateFileError(f"{path} is in use by another audit") from exc
        raise StateFileError(f"cannot open {path}: {exc}") from exc
    except sqlite3.DatabaseError as exc:
        raise _unusable(path, exc) from exc
    return db


def _unusable(path: Path, exc: Exception) -> StateFileError:
    what = "is damaged" if "malformed" in str(exc) else "is not an audit state file"
    return StateFileError(f"{path} {what} ({exc})")


def _writable(path: Path, db: sqlite3.Connection) -> None:
    """A write now (rolled back, or kept at the end): a file or directory the audit could not write to is said
    before the audit, not after it."""
    try:
        db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)")
        db.execute("INSERT OR REPLACE INTO meta VALUES ('opened', '1')")
    except sqlite3.Error as exc:
        raise StateFileError(f"cannot write to {path}: {exc}") from exc


def _resume(path: Path, db: sqlite3.Connection, trust: TrustAnchors, origin: str) -> LogVerifier:
    try:
        meta = {k: json.loads(v) for k, v in db.execute("SELECT key, value FROM meta")}
    except (sqlite3.DatabaseError, ValueError, RecursionError) as exc:
        raise _unusable(path, exc) from exc
    if meta.get("format") != FORMAT:
        raise StateFileError(f"{path} is not an audit state file of this version ({FORMAT})")
    if (meta.get("origin"), meta.get("ledger_key"), meta.get("root_key")) != (origin, trust.ledger.b64,
                                                                            trust.root.b64):
        raise StateFileError(f"{path} was written for another ledger ({meta.get('origin')}, or other keys)")
    try:
        # SQLite's own check of every page's structure (not of the values): a damaged or truncated file would
        # otherwise fail, or answer wrongly, only when the replay reaches the damaged page
        problems = [row[0] for row in db.execute("PRAGMA quick_check(3)")]
    except sqlite3.DatabaseError as exc:
        problems = [str(exc)]
    if problems != ["ok"]:
        raise StateFileError(f"{path} is damaged: {'; '.join(problems)}")
    try:
        verifier = LogVerifier(trust, origin)
        tree = meta["tree"]
        verifier.tree = CompactRange.from_hashes(int(tree["size"]), [bytes.fromhex(h) for h in tree["hashes"]])
        state = DiskState(db)
        small = {name: decode_all(cls, meta[name]) for name, cls in _SMALL.items()}
        state.actors = {a.id: a for a in small["actors"]}
        state.keys = {k.key_id: k for k in small["keys"]}
        state.batches = {(b.gtin, b.lot): b for b in small["batches"]}
        heads = {name: ChainHead(bytes.fromhex(h), int(index), int(length))
                 for name, (h, index, length) in meta["chains"].items()}
    except Exception as exc:  # a file this code wrote cannot say any of it: whatever it says instead, it is damaged
        raise StateFileError(f"{path} is damaged: {type(exc).__name__}: {exc}") from exc
    verifier.report = AuditReport(resumed_from=verifier.tree.size, state=state, chain_heads=heads)
    return verifier
