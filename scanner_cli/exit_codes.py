"""Exit codes of the ``athar`` command. Pharmacy systems script on these, so they never change meaning.

====  =========================================================================
0     success; for a scan: AUTHENTIC
2     usage error (bad option, unreadable input, no code found in an image)
3     the ledger refused the request (a custody rule, a conflict, bad data)
4     authentication or authorisation failed (key, signature, role)
5     cannot reach the ledger (network, database unavailable); serve: cannot listen, or its workers did not start
6     scan: a pack could not be checked (offline, it is not in the bundle; not a finding: check it online)
10    scan verdict UNKNOWN (never registered: suspect falsified)
11    scan verdict MISMATCH (lot or expiry differ from the registration)
12    scan verdict ALREADY_DISPENSED
13    scan verdict RECALLED
14    scan verdict QUARANTINED
15    scan verdict EXPIRED
16    scan verdict NOT_IN_CUSTODY (possible diversion)
20    TAMPERED: a signature, chain link, proof or checkpoint fails verification
====  =========================================================================
"""

from __future__ import annotations

from ledger import errors as E
from ledger.verdict import Verdict

OK = 0
USAGE = 2
REFUSED = 3
AUTH = 4
UNAVAILABLE = 5
NOT_CHECKED = 6
TAMPERED = 20

VERDICT: dict[Verdict, int] = {
    Verdict.AUTHENTIC: OK,
    Verdict.UNKNOWN: 10,
    Verdict.MISMATCH: 11,
    Verdict.ALREADY_DISPENSED: 12,
    Verdict.RECALLED: 13,
    Verdict.QUARANTINED: 14,
    Verdict.EXPIRED: 15,
    Verdict.NOT_IN_CUSTODY: 16,
    Verdict.TAMPERED: TAMPERED,
}


def for_error(err: E.LedgerError) -> int:
    """The exit code for a ledger error; every error class maps to one (a test checks it)."""
    if isinstance(err, E.IntegrityError):
        return TAMPERED
    if isinstance(err, E.StorageUnavailable):
        return UNAVAILABLE
    if isinstance(err, E.AuthError):
        return AUTH
    return REFUSED
