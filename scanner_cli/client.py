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
            raise _problem_error(response)
        return response

    # ---- writes -----------------------------------------------------------------------------------------------

    def submit(self, signed: SignedEvent) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/v1/events", json=signed.to_json()).json()
        return result

    def report(self, payload: Mapping[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/v1/reports", json=dict(payload), signed=True).json()
        return result

    # ---- reads ------------------------------------------------------------------------------------------------

    def checkpoint(self) -> str:
        return self._request("GET", "/v1/log/checkpoint", accept="text/plain").text

    def submit_cosignature(self, cosigned_note: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/v1/log/cosignatures", content=cosigned_note.encode(),
                                               content_type="text/plain").json()
        return result

    def verifier_key(self) -> str:
        return self._request("GET", "/v1/log/public-key", accept="text/plain").text.strip()

    def consistency(self, first: int, second: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/log/proof/consistency",
                                               params={"first": first, "second": second}).json()
        return result

    def inclusion(self, index: int, tree_size: int) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/log/proof/inclusion",
                                               params={"index": index, "tree_size": tree_size}).json()
        return result

    def entries(self, start: int, end: int) -> list[dict[str, Any]]:
        doc = self._request("GET", "/v1/log/entries", params={"start": start, "end": end}, signed=True).json()
        return list(doc["entries"])

    def actors(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/actors").json())

    def actor(self, actor_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/actors/{actor_id}").json()
        return result

    def pack(self, gtin: str, serial: str, *, lot: str | None = None, expiry: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/packs/{gtin}/{_seg(serial)}",
                                               params={"lot": lot, "expiry": expiry}, signed=True).json()
        return result

    def pack_bundle(self, gtin: str, serial: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/packs/{gtin}/{_seg(serial)}/bundle").json()
        return result

    def batch(self, gtin: str, lot: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/batches/{gtin}/{_seg(lot)}", signed=True).json()
        return result

    def history(self, gtin: str, lot: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/batches/{gtin}/{_seg(lot)}/history", signed=True).json()
        return result

    def epcis(self, gtin: str, lot: str) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", f"/v1/batches/{gtin}/{_seg(lot)}/epcis", signed=True).json()
        return result

    def bundle(self, *, batches: list[str], region: str | None = None, actor: str | None = None) -> dict[str, Any]:
        result: dict[str, Any] = self._request("POST", "/v1/bundles", json={"batches": batches, "region": region,
                                                                            "actor": actor}, signed=True).json()
        return result

    def alert_stats(self) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/alerts/stats", signed=True).json()
        return result

    def recalls(self) -> list[dict[str, Any]]:
        return list(self._request("GET", "/v1/recalls", signed=True).json())

    def risk(self, limit: int = 50) -> dict[str, Any]:
        result: dict[str, Any] = self._request("GET", "/v1/audit/risk", params={"limit": limit}, signed=True).json()
        return result

    def alerts(self, status: str | None = None, *, kind: str | None = None,
               suspect: str | None = None) -> list[dict[str, Any]]:
        params = {"status": status, "kind": kind, "suspect": suspect}
        return list(self._request("GET", "/v1/alerts", params=params, signed=True).json())


def _seg(value: str) -> str:
    """Percent-encode a path segment (lots and serials may hold '/', '%', '?' and the like)."""
    from urllib.parse import quote

    return quote(value, safe="")


def _problem_error(response: httpx.Response) -> E.LedgerError:
    try:
        doc = response.json()
    except ValueError:
        doc = {}
    code = str(doc.get("code", "")) if isinstance(doc, dict) else ""
    detail = str(doc.get("detail", response.text[:200])) if isinstance(doc, dict) else response.text[:200]
    cls = _BY_CODE.get(code)
    if cls is None:
        if response.status_code in (401, 403):
            cls = E.AuthError
        elif response.status_code in (502, 503, 504):
            cls = E.StorageUnavailable
        else:
            cls = E.LedgerError
    err = cls(f"{detail} (HTTP {response.status_code})")
    err.details.update(doc.get("details", {}) if isinstance(doc, dict) and isinstance(doc.get("details"), dict)
                       else {})
    return err
