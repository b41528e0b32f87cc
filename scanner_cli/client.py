"""The HTTP client of the athar API: every command talks to the server through here.

httpx errors and problem responses are translated at this one boundary into ``ClientError`` (network) or
the ledger error class named by the problem's ``code``, so commands handle one family of exceptions.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import httpx

from ledger import errors as E
from ledger.entry import SignedEvent
from ledger.request_signing import sign_request
from signing import KeyPair

_BY_CODE = {cls.code: cls for cls in E.all_error_classes()}


class ClientError(E.StorageUnavailable):
    code = "unreachable"
    title = "The ledger API cannot be reached"


class NotAtharAPI(ClientError):
    """The server answered, but not as the athar API does (an HTML page, other JSON, a 404 outside the API)."""

    code = "not_athar_api"
    title = "The server is not an athar API"


@dataclass
class Identity:
    actor: str
    key: KeyPair


class AtharClient:
    def __init__(self, base_url: str, identity: Identity | None = None, *, timeout: float = 10.0,
                 transport: httpx.BaseTransport | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.identity = identity
        self._http = httpx.Client(base_url=self.base_url, timeout=timeout, transport=transport,
                                  headers={"User-Agent": "athar-cli/0.1"})
        self._is_athar: bool | None = None

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AtharClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ---- plumbing ------------------------------------------------------------------------------------------

    def _request(self, method: str, path: str, *, params: Mapping[str, Any] | None = None, json: Any = None,
                 signed: bool = False, accept: str = "application/json", content: bytes | None = None,
                 content_type: str | None = None) -> httpx.Response:
        headers = {"Accept": accept, **({"Content-Type": content_type} if content_type else {})}
        try:
            request = self._http.build_request(method, path, params={k: v for k, v in (params or {}).items()
                                                                     if v is not None}, json=json, content=content,
                                               headers=headers)
        except httpx.InvalidURL as exc:  # not an httpx.HTTPError
            raise ClientError(f"cannot send a request to {self.base_url}{path}: {exc}") from exc
        if signed and self.identity is not None:
            raw_path = request.url.raw_path.decode("ascii")
            request.headers.update(sign_request(self.identity.key, self.identity.actor, method, raw_path,
                                                int(time.time())))
        try:
            response = self._http.send(request)
        except (httpx.HTTPError, httpx.InvalidURL) as exc:
            raise ClientError(f"cannot reach the ledger at {self.base_url}: {exc}") from exc
        if response.status_code >= 400:
            err = _problem_error(response)
            if err is None or (isinstance(err, E.NotFound) and not self._athar_api()):
                raise self._not_athar(response)
            raise err
        return response

    def _athar_api(self) -> bool:
        """Whether the base URL serves the athar API: a 404 from a base URL with one path segment too many
        ('.../v1') is a well-formed problem too, so the health endpoint is asked once to tell them apart."""
        if self._is_athar is None:
            try:
                health = self._http.get("/v1/health", headers={"Accept": "application/json"})
                doc = health.json()
                self._is_athar = health.status_code == 200 and isinstance(doc, dict) and \
                    isinstance(doc.get("status"), str)
            except (httpx.HTTPError, httpx.InvalidURL, ValueError):
                self._is_athar = False
        return self._is_athar

    def _not_athar(self, response: httpx.Response, what: str = "") -> NotAtharAPI:
        kind = response.headers.get("content-type", "no content type").split(";")[0].strip() or "no content type"
        said = what or f"HTTP {response.status_code} ({kind})"
        return NotAtharAPI(f"no athar API at {self.base_url}: {response.request.method} {response.request.url.path} "
                           f"answered {said}, not an athar API answer")

    def _json(self, response: httpx.Response) -> Any:
        try:
            return response.json()
        except (ValueError, RecursionError):  # JSONDecodeError, UnicodeDecodeError, integers too long to convert
            raise self._not_athar(response, f"{response.headers.get('content-type', 'a body')} that is not JSON") \
                from None

    def _object(self, response: httpx.Response) -> dict[str, Any]:
        doc = self._json(response)
        if not isinstance(doc, dict):
            raise self._not_athar(response, f"a JSON {type(doc).__name__} where an object was expected")
        return doc

    def _list(self, response: httpx.Response) -> list[Any]:
        doc = self._json(response)
        if not isinstance(doc, list):
            raise self._not_athar(response, f"a JSON {type(doc).__name__} where a list was expected")
        return doc

    # ---- writes -----------------------------------------------------------------------------------------------

    def submit(self, signed: SignedEvent) -> dict[str, Any]:
        return self._object(self._request("POST", "/v1/events", json=signed.to_json()))

    def report(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        return self._object(self._request("POST", "/v1/reports", json=dict(payload), signed=True))

    # ---- reads ------------------------------------------------------------------------------------------------

    def checkpoint(self) -> str:
        return self._request("GET", "/v1/log/checkpoint", accept="text/plain").text

    def submit_cosignature(self, cosigned_note: str) -> dict[str, Any]:
        return self._object(self._request("POST", "/v1/log/cosignatures", content=cosigned_note.encode(),
                                          content_type="text/plain"))

    def verifier_key(self) -> str:
        return self._request("GET", "/v1/log/public-key", accept="text/plain").text.strip()

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        return self._object(self._request("GET", "/v1/log/proof/consistency",
                                          params={"first": first, "second": second}))

    def inclusion(self, index: int, tree_size: int) -> dict[str, Any]:
        return self._object(self._request("GET", "/v1/log/proof/inclusion",
                                          params={"index": index, "tree_size": tree_size}))

    def entries(self, start: int, end: int) -> list[dict[str, Any]]:
        response = self._request("GET", "/v1/log/entries", params={"start": start, "end": end}, signed=True)
        entries = self._object(response).get("entries")
        if not isinstance(entries, list):
            raise self._not_athar(response, "an object without a list of entries")
        return entries

    def actors(self) -> list[dict[str, Any]]:
        return self._list(self._request("GET", "/v1/actors"))

    def actor(self, actor_id: str) -> dict[str, Any]:
        return self._object(self._request("GET", f"/v1/actors/{actor_id}"))

    def pack(self, gtin: str, serial: str, *, lot: str | None = None, expiry: str | None = None) -> dict[str, Any]:
        return self._object(self._request("GET", f"/v1/packs/{gtin}/{_seg(serial)}",
                                          params={"lot": lot, "expiry": expiry}, signed=True))

    def pack_bundle(self, gtin: str, serial: str) -> dict[str, Any]:
        return self._object(self._request("GET", f"/v1/packs/{gtin}/{_seg(serial)}/bundle"))

    def batch(self, gtin: str, lot: str) -> dict[str, Any]:
        return self._object(self._request("GET", f"/v1/batches/{gtin}/{_seg(lot)}", signed=True))

    def history(self, gtin: str, lot: str) -> dict[str, Any]:
        return self._object(self._request("GET", f"/v1/batches/{gtin}/{_seg(lot)}/history", signed=True))

    def epcis(self, gtin: str, lot: str) -> dict[str, Any]:
        return self._object(self._request("GET", f"/v1/batches/{gtin}/{_seg(lot)}/epcis", signed=True))

    def bundle(self, *, batches: list[str], region: str | None = None, actor: str | None = None) -> dict[str, Any]:
        return self._object(self._request("POST", "/v1/bundles", json={"batches": batches, "region": region,
                                                                       "actor": actor}, signed=True))

    def alert_stats(self) -> dict[str, Any]:
        return self._object(self._request("GET", "/v1/alerts/stats", signed=True))

    def recalls(self) -> list[dict[str, Any]]:
        return self._list(self._request("GET", "/v1/recalls", signed=True))

    def risk(self, limit: int = 50) -> dict[str, Any]:
        return self._object(self._request("GET", "/v1/audit/risk", params={"limit": limit}, signed=True))

    def alerts(self, status: str | None = None, *, kind: str | None = None, suspect: str | None = None,
               gtin: str | None = None, limit: int | None = None, before: int | None = None) -> list[dict[str, Any]]:
        params = {"status": status, "kind": kind, "suspect": suspect, "gtin": gtin, "limit": limit, "before": before}
        return self._list(self._request("GET", "/v1/alerts", params=params, signed=True))


def _seg(value: str) -> str:
    """Percent-encode a path segment (lots and serials may hold '/', '%', '?' and the like)."""
    from urllib.parse import quote

    return quote(value, safe="")


def _problem_error(response: httpx.Response) -> E.LedgerError | None:
    """The error an RFC 9457 problem names; None when the answer is no athar problem at all (the caller says the
    server is not an athar API), except an authentication or gateway status, which a proxy in front may answer."""
    try:
        doc = response.json()
    except (ValueError, RecursionError):
        doc = None
    problem = doc if isinstance(doc, dict) and isinstance(doc.get("code"), str) else None
    cls = _BY_CODE.get(problem["code"], E.LedgerError) if problem else None
    if cls is None:
        if response.status_code in (401, 403):
            cls = E.AuthError
        elif response.status_code in (502, 503, 504):
            cls = E.StorageUnavailable
        else:
            return None
    detail = problem.get("detail") if problem else None
    err = cls(f"{detail if isinstance(detail, str) else response.reason_phrase} (HTTP {response.status_code})")
    details = problem.get("details") if problem else None
    err.details.update(details if isinstance(details, dict) else {})
    return err
