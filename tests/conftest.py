"""Fixtures shared by the runtime, CLI, service and dashboard tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from webhook_dsl.standin import start_in_thread


@pytest.fixture(scope="module")
def stand_in() -> Iterator[int]:
    """The examples' stand-in API on an ephemeral loopback port; yields the port."""
    server = start_in_thread()
    yield int(server.server_address[1])
    server.shutdown()
    server.server_close()
