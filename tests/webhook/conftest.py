"""Webhook test fixtures: the test deployment in the session's Prefect server, a switchable Prefect API."""

from __future__ import annotations

from collections.abc import Iterator
from uuid import UUID

import pytest

from tests.webhook.support import TEST_DEPLOYMENT, SwitchableApi, apply_deployment


@pytest.fixture
def switchable_api(prefect_api: str) -> Iterator[SwitchableApi]:
    """The session's Prefect API behind a relay that the test can switch off and on."""
    relay = SwitchableApi(prefect_api)
    try:
        yield relay
    finally:
        relay.close()


@pytest.fixture(scope="session")
def change_deployment(prefect_api: str) -> UUID:
    """The deployment the webhook tests create flow runs from."""
    return apply_deployment(TEST_DEPLOYMENT.split("/", 1)[1])
