"""TLS contexts are built once per version of their certificate files, and shared."""

from __future__ import annotations

import os
import ssl
from collections.abc import Iterator
from pathlib import Path

import certifi
import httpx
import prefect.client.orchestration as prefect_orchestration
import pytest
from prefect.client.orchestration import PrefectClient, SyncPrefectClient

from promoter.services.prefect_clients import share_tls_context
from promoter.tls_contexts import reused


def ca_copy(tmp_path: Path) -> Path:
    ca = tmp_path / "ca.pem"
    ca.write_bytes(Path(certifi.where()).read_bytes())
    return ca


def test_a_context_is_built_once_per_version_of_its_files(tmp_path: Path) -> None:
    ca = ca_copy(tmp_path)
    built: list[ssl.SSLContext] = []

    def build() -> ssl.SSLContext:
        built.append(ssl.create_default_context(cafile=str(ca)))
        return built[-1]

    first = reused([ca], "test", build)
    assert reused([ca], "test", build) is first
    assert reused([ca], "other options", build) is not first

    replaced = tmp_path / "new.pem"
    replaced.write_bytes(ca.read_bytes())
    os.replace(replaced, ca)  # a new export lands: another inode
    assert reused([ca], "test", build) is not first
    assert len(built) == 3


def test_a_failed_build_is_not_kept(tmp_path: Path) -> None:
    missing = tmp_path / "missing.pem"

    def build() -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(missing))

    for _ in range(2):  # the second call builds again, and fails again, instead of a kept answer
        with pytest.raises(FileNotFoundError):
            reused([missing], "test", build)


def transport_context(client: httpx.Client | httpx.AsyncClient) -> ssl.SSLContext:
    pool = client._transport._pool  # type: ignore[union-attr]
    return pool._ssl_context  # type: ignore[no-any-return]


@pytest.fixture
def prefect_ssl() -> Iterator[None]:
    """share_tls_context() lasts for the process: this test's process gets Prefect's own back."""
    yield
    prefect_orchestration.ssl = ssl  # type: ignore[attr-defined]


@pytest.mark.usefixtures("prefect_ssl")
def test_prefect_clients_share_one_verified_context_after_share_tls_context() -> None:
    """If a Prefect upgrade builds its clients' TLS differently, this fails: look at prefect_clients.py."""
    api = "http://127.0.0.1:9/api"
    apart = [PrefectClient(api)._client, PrefectClient(api)._client]
    assert transport_context(apart[0]) is not transport_context(apart[1])

    share_tls_context()
    shared = [PrefectClient(api)._client, PrefectClient(api)._client, SyncPrefectClient(api)._client]
    contexts = {id(transport_context(client)) for client in shared}
    assert len(contexts) == 1
    context = transport_context(shared[0])
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
