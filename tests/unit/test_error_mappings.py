"""Every ledger error has an explicit HTTP status, a CLI exit code and a documented problem type."""

from __future__ import annotations

import pytest

from api.problems import STATUS, status_for
from ledger import errors as E
from scanner_cli import exit_codes


@pytest.mark.parametrize("cls", E.all_error_classes(), ids=lambda c: c.__name__)
def test_every_error_maps_to_a_4xx_or_5xx_and_an_exit_code(cls: type[E.LedgerError]) -> None:
    if cls.__module__.startswith("ledger."):
        assert any(k in STATUS for k in cls.__mro__ if k is not E.LedgerError) or cls is E.LedgerError, cls
    status = status_for(cls)
    assert 400 <= status < 600
    assert status < 500 or issubclass(cls, E.IntegrityError | E.StorageUnavailable), cls
    assert exit_codes.for_error(cls("x")) in (exit_codes.REFUSED, exit_codes.AUTH, exit_codes.UNAVAILABLE,
                                              exit_codes.TAMPERED)
    assert cls.code and cls.title


def test_codes_are_unique() -> None:
    codes = [c.code for c in E.all_error_classes()]
    assert len(codes) == len(set(codes))
