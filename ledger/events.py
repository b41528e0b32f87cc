"""Event bodies, one frozen type per kind, aligned with GS1 CBV 2.0 business steps.

An event body is the JSON object an actor signs. Every body has ``v`` (schema version, 1), ``type``,
``id`` (client-chosen, unique forever: the idempotency key), ``actor`` (who acts and signs) and ``time``
(when the actor says it happened, RFC 3339 UTC). Unknown fields are refused, so a signature never covers
data the ledger did not understand. The sequencer adds the index, receive time and chain link; those
live in the log entry, not here (see ``ledger.entry``).

=================  ====================  =====================  ===================================
type               CBV bizStep           signed by              effect
=================  ====================  =====================  ===================================
commission         commissioning         manufacturer           registers a batch and its packs
ship               shipping              holder                 stock in transit to a named actor
return             returning*            holder                 like ship, upstream; allowed on recall
receive            receiving             the recipient          custody moves to the recipient
refuse             receiving (refused)   the recipient          custody returns to the sender
dispense           dispensing            pharmacy / hospital    one pack leaves the supply chain
undo_dispense      (correction)          the same dispenser     within 10 days
destroy            destroying            holder                 stock destroyed
recall             recalling*            manufacturer/regulator batch recalled
quarantine         holding               regulator              batch frozen
release            (release)             regulator              quarantine lifted
report             inspecting            any actor / public     suspect pack reported
actor_register     (master data)         regulator root key     actor and its first key
key_rotate         (master data)         regulator root key     new key; older keys retired
key_revoke         (master data)         regulator root key     key revoked
alert              (ledger)              ledger key             a refused signed event, kept as evidence
alert_update       (case handling)       regulator / inspector  investigating, or closed with a finding
=================  ====================  =====================  ===================================

(*) ``returning`` and ``recalling`` are not CBV 2.0 terms; the EPCIS export maps them to CBV ``shipping``
with disposition ``returned`` and to ``holding`` with disposition ``recalled``.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

from ledger import identifiers as ids
from ledger.errors import InvalidEvent
from ledger.identifiers import Channel, Role

SCHEMA_VERSION = 1
ROOT_ACTOR = "root"  # the regulator root key signs as this reserved actor
LEDGER_ACTOR = "ledger"  # the ledger key signs alerts and anonymous public reports as this actor
PUBLIC_ACTOR = "public"
MAX_SERIALS = 200_000
LEDGER_ID_PREFIXES = ("alert:", "public:")
MAX_TEXT = 500
_TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d{1,6})?Z", re.ASCII)
_HEX64 = re.compile(r"[0-9a-f]{64}")
#: Unicode categories refused in one-line labels: control and format characters (bidi overrides reorder a line
#: around them), surrogates, private-use and unassigned code points, line and paragraph separators
_NOT_ON_ONE_LINE = frozenset({"Cc", "Cf", "Co", "Cn", "Cs", "Zl", "Zp"})
#: joiners that Arabic and Persian words use between letters (never alone: a label needs a visible character)
_JOINERS = frozenset({"\u200c", "\u200d"})
#: letters and symbols that print as blank space
_FILLERS = frozenset({"\u115f", "\u1160", "\u3164", "\uffa0", "\u2800"})
REPORT_CATEGORIES = ("suspected_falsified", "damaged_pack", "quality_defect", "diversion", "other")


def parse_time(value: Any, name: str = "time") -> dt.datetime:
    if not isinstance(value, str) or not _TIME.fullmatch(value):
        raise InvalidEvent(f"{name} {value!r} must be an RFC 3339 UTC time such as 2026-11-22T10:15:00Z")
    try:
        return dt.datetime.fromisoformat(value[:-1]).replace(tzinfo=dt.UTC)
    except ValueError as exc:
        raise InvalidEvent(f"{name} {value!r} is not a real date and time") from exc


def format_time(t: dt.datetime) -> str:
    """RFC 3339 UTC with microseconds, the one form the ledger writes."""
    u = t.astimezone(dt.UTC)
    if u.year < 1000:  # glibc's strftime writes year 1 as "1"; isoformat pads it, but is half as fast again
        return u.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"
    return u.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class _Fields:
    """Typed access to a JSON object, with errors that name the field and the event."""

    def __init__(self, body: Mapping[str, Any], allowed: set[str]) -> None:
        self.body = body
        unknown = sorted(set(body) - allowed)
        if unknown:
            raise InvalidEvent(f"unknown field(s) {', '.join(unknown)} in a {body.get('type')!r} event")

    def text(self, name: str, *, optional: bool = False, max_len: int = MAX_TEXT) -> str | None:
        value = self.body.get(name)
        if value is None:
            if optional:
                return None
            raise InvalidEvent(f"field {name!r} is required in a {self.body.get('type')!r} event")
        if not isinstance(value, str) or not value or len(value) > max_len:
            raise InvalidEvent(f"field {name!r} must be a non-empty string of at most {max_len} characters")
        return value

    def label(self, name: str, max_len: int, *, optional: bool = False) -> str | None:
        """A name shown on one line (an actor's name, region or city, a product): no control characters, which
        a terminal would obey or a newline would split into a forged line, and not blank."""
        value = self.text(name, optional=optional, max_len=max_len)
        if value is not None and (
                any(unicodedata.category(c) in _NOT_ON_ONE_LINE and c not in _JOINERS for c in value)
                or not any(unicodedata.category(c)[0] in "LNPS" and c not in _FILLERS for c in value)):
            raise InvalidEvent(f"field {name!r} must be printable text on one line, not blank")
        return value

    def req(self, name: str, max_len: int = MAX_TEXT) -> str:
        value = self.text(name, max_len=max_len)
        assert value is not None
        return value

    def count(self, name: str, *, optional: bool = False) -> int | None:
        value = self.body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_SERIALS:
            raise InvalidEvent(f"field {name!r} must be a whole number between 1 and {MAX_SERIALS}")
        return value

    def serials(self, name: str = "serials", *, optional: bool = False) -> tuple[str, ...] | None:
        value = self.body.get(name)
        if value is None and optional:
            return None
        if not isinstance(value, list) or not value or len(value) > MAX_SERIALS:
            raise InvalidEvent(f"field {name!r} must be a non-empty list of at most {MAX_SERIALS} serials")
        out = tuple(ids.serial(s) for s in value)
        if len(set(out)) != len(out):
            raise InvalidEvent(f"field {name!r} lists a serial more than once")
        return out


@dataclass(frozen=True)
class Event:
    TYPE: ClassVar[str] = ""
    FIELDS: ClassVar[frozenset[str]] = frozenset()
    id: str
    actor: str
    time: dt.datetime

    @property
    def type(self) -> str:
        return self.TYPE


@dataclass(frozen=True)
class BatchEvent(Event):
    gtin: str
    lot: str


@dataclass(frozen=True)
class Commission(BatchEvent):
    TYPE = "commission"
    FIELDS = frozenset({"gtin", "lot", "expiry", "product", "quantity", "serials", "channel"})
    expiry: dt.date
    product: str
    serials: tuple[str, ...]
    channel: Channel


@dataclass(frozen=True)
class Movement(BatchEvent):
    """Stock moved or removed: by listed serials, or by a quantity when packs are not scanned one by one."""

    serials: tuple[str, ...] | None
    quantity: int

    @property
    def by_serial(self) -> bool:
        return self.serials is not None


@dataclass(frozen=True)
class Ship(Movement):
    TYPE = "ship"
    FIELDS = frozenset({"gtin", "lot", "to", "serials", "quantity", "channel"})
    to: str
    channel: Channel


@dataclass(frozen=True)
class Return(Movement):
    TYPE = "return"
    FIELDS = frozenset({"gtin", "lot", "to", "serials", "quantity", "reason"})
    to: str
    reason: str


@dataclass(frozen=True)
class Destroy(Movement):
    TYPE = "destroy"
    FIELDS = frozenset({"gtin", "lot", "serials", "quantity", "reason"})
    reason: str


@dataclass(frozen=True)
class Receive(Event):
    TYPE = "receive"
    FIELDS = frozenset({"shipment"})
    shipment: str


@dataclass(frozen=True)
class Refuse(Event):
    TYPE = "refuse"
    FIELDS = frozenset({"shipment", "reason"})
    shipment: str
    reason: str


@dataclass(frozen=True)
class Dispense(Event):
    TYPE = "dispense"
    FIELDS = frozenset({"gtin", "serial", "lot", "expiry"})
    gtin: str
    serial: str
    lot: str | None
    expiry: dt.date | None


@dataclass(frozen=True)
class UndoDispense(Event):
    TYPE = "undo_dispense"
    FIELDS = frozenset({"gtin", "serial", "reason"})
    gtin: str
    serial: str
    reason: str


@dataclass(frozen=True)
class Recall(BatchEvent):
    TYPE = "recall"
    FIELDS = frozenset({"gtin", "lot", "reason"})
    reason: str


@dataclass(frozen=True)
class Quarantine(BatchEvent):
    TYPE = "quarantine"
    FIELDS = frozenset({"gtin", "lot", "reason"})
    reason: str


@dataclass(frozen=True)
class Release(BatchEvent):
    TYPE = "release"
    FIELDS = frozenset({"gtin", "lot", "reason"})
    reason: str


@dataclass(frozen=True)
class Report(Event):
    """A suspect pack. ``details_hash`` is a salted hash of the reporter's personal details, never the data."""

    TYPE = "report"
    FIELDS = frozenset({"gtin", "serial", "lot", "expiry", "category", "details_hash", "region"})
    gtin: str
    serial: str | None
    lot: str | None
    expiry: dt.date | None
    category: str
    details_hash: str | None
    region: str | None


@dataclass(frozen=True)
class ActorRegister(Event):
    TYPE = "actor_register"
    FIELDS = frozenset({"subject", "name", "role", "region", "city", "gln", "public_key"})
    subject: str
    name: str
    role: Role
    region: str
    city: str | None
    gln: str | None
    public_key: str


@dataclass(frozen=True)
class KeyRotate(Event):
    TYPE = "key_rotate"
    FIELDS = frozenset({"subject", "public_key"})
    subject: str
    public_key: str


@dataclass(frozen=True)
class KeyRevoke(Event):
    TYPE = "key_revoke"
    FIELDS = frozenset({"subject", "key_id", "reason"})
    subject: str
    key_id: str
    reason: str


@dataclass(frozen=True)
class Alert(Event):
    """Written by the ledger itself when it refuses a signed event that signals risk (a clone, diversion...).

    ``evidence`` is the refused signed submission, so the alert can be checked by anyone.
    """

    TYPE = "alert"
    FIELDS = frozenset({"kind", "message", "gtin", "lot", "serial", "suspect", "evidence", "cause"})
    kind: str
    message: str
    gtin: str | None
    lot: str | None
    serial: str | None
    suspect: str
    evidence: Mapping[str, Any]
    cause: str | None


ALERT_STATUSES = ("investigating", "closed")
ALERT_OUTCOMES = ("confirmed", "false_alarm", "inconclusive")


@dataclass(frozen=True)
class AlertUpdate(Event):
    """The regulator's handling of an alert: under investigation, or closed with a finding."""

    TYPE = "alert_update"
    FIELDS = frozenset({"alert", "status", "outcome", "finding"})
    alert: str
    status: str
    outcome: str | None
    finding: str | None


EVENT_TYPES: dict[str, type[Event]] = {
    cls.TYPE: cls
    for cls in (Commission, Ship, Return, Destroy, Receive, Refuse, Dispense, UndoDispense, Recall,
                Quarantine, Release, Report, ActorRegister, KeyRotate, KeyRevoke, Alert, AlertUpdate)
}
BASE_FIELDS = frozenset({"v", "type", "id", "actor", "time"})


def parse_event(body: Any) -> Event:
    """Validate a JSON event body and return its typed form, or raise InvalidEvent saying what is wrong."""
    if not isinstance(body, Mapping):
        raise InvalidEvent("an event must be a JSON object")
    version = body.get("v")
    if type(version) is not int or version != SCHEMA_VERSION:
        raise InvalidEvent(f"field 'v' must be {SCHEMA_VERSION} (the event schema version)")
    kind = body.get("type")
    cls = EVENT_TYPES.get(kind) if isinstance(kind, str) else None
    if cls is None:
        raise InvalidEvent(f"unknown event type {kind!r}; expected one of {', '.join(EVENT_TYPES)}")
    f = _Fields(body, set(BASE_FIELDS | cls.FIELDS))
    actor = f.req("actor", 64)
    if actor not in (ROOT_ACTOR, LEDGER_ACTOR):
        ids.actor_id(actor)
    event_id = ids.event_id(f.req("id", 128))
    if actor != LEDGER_ACTOR and event_id.startswith(LEDGER_ID_PREFIXES):
        # ids the ledger derives for its own alerts: a client taking one first could suppress an alert
        raise InvalidEvent(f"event ids starting with {', '.join(LEDGER_ID_PREFIXES)} are reserved for the ledger")
    base: dict[str, Any] = {"id": event_id, "actor": actor,
                            "time": parse_time(body.get("time"))}
    return cls(**base, **_specific(cls, f))


def _channel(f: _Fields) -> Channel:
    value = f.req("channel")
    try:
        return Channel(value)
    except ValueError as exc:
        raise InvalidEvent(f"channel {value!r} must be 'public' (tender) or 'private'") from exc


def _opt(f: _Fields, name: str, check: Any) -> Any:
    value = f.text(name, optional=True)
    return None if value is None else check(value)


def _movement(f: _Fields) -> dict[str, Any]:
    serials = f.serials(optional=True)
    quantity = f.count("quantity", optional=True)
    if serials is None and quantity is None:
        raise InvalidEvent("give either 'serials' (the packs moved) or 'quantity'")
    if serials is not None and quantity is not None and quantity != len(serials):
        raise InvalidEvent(f"'quantity' {quantity} does not match the {len(serials)} serials listed")
    return {"gtin": ids.gtin14(f.req("gtin")), "lot": ids.lot(f.req("lot")), "serials": serials,
            "quantity": len(serials) if serials is not None else quantity}


def _specific(cls: type[Event], f: _Fields) -> dict[str, Any]:
    if cls is Commission:
        serials = f.serials()
        assert serials is not None
        if f.count("quantity") != len(serials):
            raise InvalidEvent(f"'quantity' must equal the number of serials ({len(serials)})")
        return {"gtin": ids.gtin14(f.req("gtin")), "lot": ids.lot(f.req("lot")),
                "expiry": ids.expiry(f.req("expiry")), "product": f.label("product", 200),
                "serials": serials, "channel": _channel(f)}
    if cls is Ship:
        return {**_movement(f), "to": ids.actor_id(f.req("to")), "channel": _channel(f)}
    if cls is Return:
        return {**_movement(f), "to": ids.actor_id(f.req("to")), "reason": f.req("reason")}
    if cls is Destroy:
        return {**_movement(f), "reason": f.req("reason")}
    if cls is Receive:
        return {"shipment": ids.event_id(f.req("shipment", 128))}
    if cls is Refuse:
        return {"shipment": ids.event_id(f.req("shipment", 128)), "reason": f.req("reason")}
    if cls is Dispense:
        return {"gtin": ids.gtin14(f.req("gtin")), "serial": ids.serial(f.req("serial")),
                "lot": _opt(f, "lot", ids.lot), "expiry": _opt(f, "expiry", ids.expiry)}
    if cls is UndoDispense:
        return {"gtin": ids.gtin14(f.req("gtin")), "serial": ids.serial(f.req("serial")),
                "reason": f.req("reason")}
    if cls in (Recall, Quarantine, Release):
        return {"gtin": ids.gtin14(f.req("gtin")), "lot": ids.lot(f.req("lot")), "reason": f.req("reason")}
    if cls is Report:
        category = f.req("category")
        if category not in REPORT_CATEGORIES:
            raise InvalidEvent(f"category {category!r} must be one of {', '.join(REPORT_CATEGORIES)}")
        details = f.text("details_hash", optional=True)
        if details is not None and not _HEX64.fullmatch(details):
            raise InvalidEvent("details_hash must be 64 lowercase hex digits (a salted SHA-256)")
        return {"gtin": ids.gtin14(f.req("gtin")), "serial": _opt(f, "serial", ids.serial),
                "lot": _opt(f, "lot", ids.lot), "expiry": _opt(f, "expiry", ids.expiry),
                "category": category, "details_hash": details, "region": f.text("region", optional=True)}
    if cls is ActorRegister:
        role = f.req("role")
        try:
            parsed_role = Role(role)
        except ValueError as exc:
            raise InvalidEvent(f"role {role!r} must be one of {', '.join(r.value for r in Role)}") from exc
        return {"subject": ids.actor_id(f.req("subject")), "name": f.label("name", 200), "role": parsed_role,
                "region": f.label("region", 100), "city": f.label("city", MAX_TEXT, optional=True),
                "gln": _opt(f, "gln", ids.gln), "public_key": f.req("public_key", 100)}
    if cls is KeyRotate:
        return {"subject": ids.actor_id(f.req("subject")), "public_key": f.req("public_key", 100)}
    if cls is KeyRevoke:
        return {"subject": ids.actor_id(f.req("subject")), "key_id": f.req("key_id", 100),
                "reason": f.req("reason")}
    if cls is Alert:
        evidence = f.body.get("evidence")
        if not isinstance(evidence, Mapping):
            raise InvalidEvent("an alert's evidence must be the refused signed submission")
        return {"kind": f.req("kind", 64), "message": f.req("message", 2000),
                "gtin": f.text("gtin", optional=True), "lot": f.text("lot", optional=True),
                "serial": f.text("serial", optional=True), "suspect": f.req("suspect", 64),
                "evidence": evidence, "cause": f.text("cause", optional=True)}
    if cls is AlertUpdate:
        status, outcome = f.req("status", 16), f.text("outcome", optional=True, max_len=16)
        if status not in ALERT_STATUSES:
            raise InvalidEvent(f"status {status!r} must be one of {', '.join(ALERT_STATUSES)}")
        if (status == "closed") != (outcome is not None) or (outcome and outcome not in ALERT_OUTCOMES):
            raise InvalidEvent(f"a closed alert needs an outcome ({', '.join(ALERT_OUTCOMES)}); an open one none")
        return {"alert": f.req("alert", 160), "status": status, "outcome": outcome,
                "finding": f.text("finding", optional=True, max_len=2000)}
    raise AssertionError(cls)  # pragma: no cover
