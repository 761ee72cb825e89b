"""Fixtures shared by the runtime, CLI, service and dashboard tests."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import pytest

from webhook_dsl.demo import start_in_thread
from webhook_dsl.runtime.calls import run


@pytest.fixture(scope="module")
def stand_in() -> Iterator[int]:
    """The examples' stand-in API on an ephemeral loopback port; yields the port."""
    server = start_in_thread()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()


@pytest.fixture(params=["asyncio", "uvloop"])
def each_event_loop(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Runs the test once on asyncio's loop and once on uvloop (what ``webhook-dsl serve`` runs on):
    every ``asyncio.run`` in the test then starts that loop."""
    if request.param == "uvloop":
        pytest.importorskip("uvloop")
        monkeypatch.setattr(asyncio, "run", lambda coroutine, **_: run(coroutine, event_loop="uvloop"))
    return str(request.param)
