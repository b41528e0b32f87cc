"""Everything the ledger can refuse, as one tree. Each class has a stable ``code`` (used in API problem
types and CLI output) and a message a user can act on.

    LedgerError
    ├── InvalidQuery                    a read's parameters are out of range (e.g. a proof beyond the tree)
    ├── InvalidEvent                    the event is malformed (missing field, wrong type, bad GS1 data)
    │   ├── InvalidIdentifier           a GTIN, lot, serial, expiry or actor id is not valid
    │   └── ImplausibleTime             the event says it happened after the ledger received it, or before 2000
    ├── AuthError                       who signed it, and may they?
    │   ├── UnknownKey                  the key id is not registered
    │   ├── KeyNotActive                the key was revoked or rotated before this event
    │   ├── SignatureInvalid            the signature does not verify over the canonical event
    │   ├── SignerMismatch              the key belongs to another actor than the one the event names
    │   ├── UnknownActor                the acting actor (or a named recipient) is not registered
    │   ├── ActorNotActive              the actor is suspended
    │   └── RoleNotAllowed              the actor's role may not do this
    ├── ConflictError                   the event contradicts what the ledger already holds
    │   ├── EventIdConflict             the event id was used before for a different event
    │   ├── DuplicateBatch              (GTIN, lot) already commissioned
    │   ├── DuplicateSerial             (GTIN, serial) already commissioned
    │   ├── DuplicateActor / DuplicateKey
    │   ├── ShipmentClosed              the shipment was already received or refused
    │   └── LogGrew                     a projection rewrite found more entries than it had verified
    ├── CustodyError                    the custody rules refuse it
    │   ├── NotFound: UnknownBatch, UnknownPack, UnknownShipment,
    │   │   UnknownSubject, UnknownSubjectKey   (the actor or key a registry event names)
    │   ├── NotHolder                   the actor does not hold the stock it moves
    │   ├── OverShipment                more than the actor holds
    │   ├── NotInCustody                a pharmacy dispenses a pack it does not hold
    │   ├── NotRecipient                a receipt or refusal by someone else than the named recipient
    │   ├── BatchUnavailable            the batch is recalled, quarantined, expired or destroyed
    │   │   ├── BatchRecalled, BatchQuarantined, BatchExpired, BatchDestroyed
    │   ├── PackUnavailable             the pack is dispensed, destroyed or in transit
    │   │   ├── AlreadyDispensedByYou   the same pharmacy scanned it twice (a double scan, not a clone)
    │   │   └── DuplicateDispense       another actor dispensed it already: likely a cloned pack
    │   ├── MismatchError               lot or expiry differ from the registration
    │   ├── UndoNotAllowed              undo of a dispense refused (too late, recalled, expired, not yours)
    │   └── InvalidTransition           e.g. release of a batch that is not quarantined
    ├── IntegrityError                  the stored log fails verification (tampering or corruption)
    └── StorageUnavailable              the database cannot be reached; nothing was written
        └── OutcomeUnknown              a write may or may not have landed; resend it (idempotent)
"""

from __future__ import annotations

from typing import Any


class LedgerError(Exception):
    code = "ledger_error"
    title = "The ledger refused the request"
    #: refusals that the ledger records as an alert for the regulator (with the signed evidence)
    raises_alert = False

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidEvent(LedgerError):
    code = "invalid_event"
    title = "The event is malformed"


class InvalidQuery(LedgerError):
    code = "invalid_query"
    title = "The query parameters are not valid"


class InvalidIdentifier(InvalidEvent):
    code = "invalid_identifier"
    title = "An identifier is not valid GS1 data"


class ImplausibleTime(InvalidEvent):
    code = "implausible_time"
    title = "The event's time is later than its receipt, or before 2000"


class AuthError(LedgerError):
    code = "auth_error"
    title = "The event is not properly signed or authorised"


class UnknownKey(AuthError):
    code = "unknown_key"
    title = "Unknown signing key"


class KeyNotActive(AuthError):
    code = "key_not_active"
    title = "The signing key is revoked or rotated"


class SignatureInvalid(AuthError):
    code = "signature_invalid"
    title = "The signature does not verify"


class SignerMismatch(AuthError):
    code = "signer_mismatch"
    title = "The key does not belong to the actor named in the event"


class UnknownActor(AuthError):
    code = "unknown_actor"
    title = "Unknown actor"


class ActorNotActive(AuthError):
    code = "actor_not_active"
    title = "The actor is not active"


class RoleNotAllowed(AuthError):
    code = "role_not_allowed"
    title = "The actor's role does not allow this"


class ConflictError(LedgerError):
    code = "conflict"
    title = "The event conflicts with the ledger"


class EventIdConflict(ConflictError):
    code = "event_id_conflict"
    title = "The event id was already used for a different event"


class DuplicateBatch(ConflictError):
    code = "duplicate_batch"
    title = "The batch is already registered"


class DuplicateSerial(ConflictError):
    code = "duplicate_serial"
    title = "A serial number is already registered for this GTIN"


class DuplicateActor(ConflictError):
    code = "duplicate_actor"
    title = "The actor is already registered"


class DuplicateKey(ConflictError):
    code = "duplicate_key"
    title = "The key is already registered"


class ShipmentClosed(ConflictError):
    code = "shipment_closed"
    title = "The shipment was already received or refused"


class LogGrew(ConflictError):
    code = "log_grew"
    title = "The log grew while its projections were being rebuilt"


class CustodyError(LedgerError):
    code = "custody_error"
    title = "The custody rules refuse this event"


class NotFound(CustodyError):
    code = "not_found"
    title = "Not found"


class UnknownBatch(NotFound):
    code = "unknown_batch"
    title = "Unknown batch"


class UnknownPack(NotFound):
    code = "unknown_pack"
    title = "Unknown pack: never registered, suspect falsified"
    raises_alert = True


class UnknownShipment(NotFound):
    code = "unknown_shipment"
    title = "Unknown shipment"


class UnknownSubject(NotFound):
    code = "unknown_subject"
    title = "The actor a registry event names is not registered"


class UnknownSubjectKey(NotFound):
    code = "unknown_subject_key"
    title = "The key a revocation names is not a key of that actor"


class NotHolder(CustodyError):
    code = "not_holder"
    title = "The actor does not hold this stock"


class OverShipment(CustodyError):
    code = "over_shipment"
    title = "More stock than the actor holds"
    raises_alert = True


class NotInCustody(CustodyError):
    code = "not_in_custody"
    title = "The pack is not in this actor's custody"
    raises_alert = True


class NotRecipient(CustodyError):
    code = "not_recipient"
    title = "Only the named recipient may receive or refuse a shipment"


class BatchUnavailable(CustodyError):
    code = "batch_unavailable"
    title = "The batch cannot be moved or dispensed"


class BatchRecalled(BatchUnavailable):
    code = "batch_recalled"
    title = "The batch is recalled"
    raises_alert = True


class BatchQuarantined(BatchUnavailable):
    code = "batch_quarantined"
    title = "The batch is quarantined"
    raises_alert = True


class BatchExpired(BatchUnavailable):
    code = "batch_expired"
    title = "The batch is expired"
    raises_alert = True


class BatchDestroyed(BatchUnavailable):
    code = "batch_destroyed"
    title = "The batch was destroyed"


class PackUnavailable(CustodyError):
    code = "pack_unavailable"
    title = "The pack is not available"


class AlreadyDispensedByYou(PackUnavailable):
    code = "already_dispensed_by_you"
    title = "You already dispensed this pack"


class DuplicateDispense(PackUnavailable):
    code = "duplicate_dispense"
    title = "The pack was already dispensed elsewhere: likely a cloned pack"
    raises_alert = True


class MismatchError(CustodyError):
    code = "mismatch"
    title = "Lot or expiry differ from the registration"
    raises_alert = True


class UndoNotAllowed(CustodyError):
    code = "undo_not_allowed"
    title = "The dispense cannot be undone"


class InvalidTransition(CustodyError):
    code = "invalid_transition"
    title = "The batch is not in a state that allows this"


class IntegrityError(LedgerError):
    code = "integrity_error"
    title = "The stored log fails verification"


class StorageUnavailable(LedgerError):
    code = "storage_unavailable"
    title = "The ledger database is unavailable"

    def __init__(self, message: str, *, public: str | None = None, **details: Any) -> None:
        super().__init__(message, **details)
        #: what anyone may read: ``message`` can name the database's host, port, user and schema and quote its
        #: driver, which the operator needs and a patient checking a pack has no business learning
        self.public = public or message


class OutcomeUnknown(StorageUnavailable):
    """The write may or may not have been recorded; resending the same signed event is safe (idempotent)."""

    code = "outcome_unknown"
    title = "The outcome of the write is not known; resend the same signed event"


def all_error_classes() -> list[type[LedgerError]]:
    """Every concrete error class, for the tests that check each one maps to a problem and an exit code."""
    seen: list[type[LedgerError]] = []
    stack: list[type[LedgerError]] = [LedgerError]
    while stack:
        cls = stack.pop()
        seen.append(cls)
        stack.extend(cls.__subclasses__())
    return seen
