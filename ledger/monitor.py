"""Log monitoring: accept a new checkpoint only if it extends the last trusted one (RFC 9162 consistency).

A log that shrinks (rollback) or shows two different roots for the same history (a fork, or a split view
served to different clients) is evidence of tampering. A witness that checked consistency may cosign the new
checkpoint (C2SP tlog-cosignature), so clients can demand several independent witnesses.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from ledger import errors as E
from ledger.checkpoint import Checkpoint, CheckpointError, open_checkpoint
from ledger.merkle import ProofError, verify_consistency


class RollbackDetected(E.IntegrityError):
    code = "log_rollback"
    title = "The log shrank: a rollback"


class ForkDetected(E.IntegrityError):
    code = "log_fork"
    title = "The log forked: two histories under one key"


def check_update(trusted: Checkpoint | None, note: str, verifier_key: str,
                 consistency: Callable[[int, int], Sequence[bytes]]) -> Checkpoint:
    """Verify ``note`` and that it extends ``trusted``; return the new checkpoint to trust."""
    try:
        new = open_checkpoint(note, verifier_key)
    except CheckpointError as exc:
        raise E.IntegrityError(f"the checkpoint is not signed by the pinned ledger key: {exc}") from exc
    if trusted is None:
        return new
    if new.origin != trusted.origin:
        raise ForkDetected(f"the log origin changed from {trusted.origin!r} to {new.origin!r}")
    if new.size < trusted.size:
        raise RollbackDetected(f"the log shrank from {trusted.size} to {new.size} entries: history was rolled back",
                               trusted_size=trusted.size, size=new.size)
    if new.size == trusted.size:
        if new.root != trusted.root:
            raise ForkDetected(f"two different roots for tree size {new.size}: {trusted.root.hex()} (trusted) and "
                               f"{new.root.hex()}: a forked log or a split view", size=new.size)
        return new
    if trusted.size == 0:
        return new
    try:
        proof = list(consistency(trusted.size, new.size))
    except E.NotFound as exc:
        # every checkpoint the log signed stays provable (checkpoints are append-only): one it now denies having
        # was deleted, as an attacker hiding a rewritten history would
        raise ForkDetected(f"the log denies the checkpoint of tree size {trusted.size}, which it signed and this "
                           f"monitor trusts ({exc.message}): history was rewritten", size=trusted.size) from exc
    try:
        verify_consistency(trusted.size, new.size, trusted.root, new.root, proof)
    except ProofError as exc:
        raise ForkDetected(f"tree size {new.size} does not extend the trusted tree size {trusted.size}: "
                           f"{exc}; the log was rewritten or forked", size=new.size) from exc
    return new
