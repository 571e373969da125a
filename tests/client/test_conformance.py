"""The conformance matrix (issue 13, item 7): every row of tests/client/conformance.py, built on meta
and initialized through the real client against the real app, loads as its framework builds it
and draws every tensor from its framework's own law (docs/conformance.md is the same matrix)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from initium.client import Client
from tests.client.conformance import ROWS, Row, check_laws, check_load

CHECKS: dict[str, Callable[[Row, Client], list[str]]] = {"load": check_load, "laws": check_laws}


def _cases() -> list[object]:
    return [
        pytest.param(
            row,
            kind,
            id=f"{row.id}-{kind}",
            marks=[pytest.mark.xfail(reason=row.known_failure, strict=True)] if row.known_failure else [],
        )
        for row in ROWS
        for kind in CHECKS
    ]


@pytest.fixture(scope="module")
def client(app_client: TestClient) -> Client:
    # A short poll: each small job takes milliseconds, and the matrix makes about a hundred of them.
    # Starlette's TestClient is an httpx2.Client, which the client drives as it drives an httpx.Client.
    return Client(http_client=app_client, poll_interval=0.02)  # type: ignore[arg-type]


@pytest.mark.parametrize(("row", "kind"), _cases())
def test_conformance(client: Client, row: Row, kind: str) -> None:
    for module in row.requires:
        pytest.importorskip(module)
    problems = CHECKS[kind](row, client)
    assert not problems, f"{row.id} ({row.family}, policy {row.policy}):\n  " + "\n  ".join(problems)
