"""Who may talk to a sandbox site: client certificates, the Xrfkey rule and X-Qlik-User, as on a real QRS."""

from __future__ import annotations

import ssl

import httpx
import pytest

from promoter.qrs.tls import site_tls
from promoter.sandbox.server import Sandbox, SandboxSite

from .conftest import Qrs

XSRF = "XSRF prevention check failed. Possible XSRF discovered."
KEY = "abcdefghijklmnop"


def test_about_answers_with_the_site_certificate(qrs: Qrs) -> None:
    """A client presenting the site's client.pem and trusting its root.pem gets /qrs/about."""

    about = qrs.get("/qrs/about")

    assert about.status_code == 200
    assert about.json()["schemaPath"] == "About"


def test_client_without_certificate_is_refused(dev: SandboxSite) -> None:
    """A client that trusts the site but presents no certificate cannot complete a request."""
    tls = ssl.create_default_context(cafile=str(dev.cert_dir / "root.pem"))

    with httpx.Client(verify=tls) as client, pytest.raises(httpx.TransportError):
        client.get(f"{dev.base_url}/qrs/about", params={"xrfkey": KEY}, headers={"X-Qlik-Xrfkey": KEY})


def test_certificate_of_another_site_is_refused(sandbox: Sandbox) -> None:
    """Each site has its own CA: test's client certificate does not open dev, even trusting dev's root."""
    dev, test = sandbox.sites["dev"], sandbox.sites["test"]
    tls = ssl.create_default_context(cafile=str(dev.cert_dir / "root.pem"))
    tls.load_cert_chain(str(test.cert_dir / "client.pem"), str(test.cert_dir / "client_key.pem"))

    with httpx.Client(verify=tls) as client, pytest.raises(httpx.TransportError):
        client.get(f"{dev.base_url}/qrs/about", params={"xrfkey": KEY}, headers={"X-Qlik-Xrfkey": KEY})


def test_server_certificate_is_verified_against_its_own_root(sandbox: Sandbox) -> None:
    """A client that trusts another site's root.pem rejects this site's server certificate."""
    dev, test = sandbox.sites["dev"], sandbox.sites["test"]
    tls = site_tls(test.cert_dir)

    with httpx.Client(verify=tls) as client, pytest.raises(httpx.ConnectError):
        client.get(f"{dev.base_url}/qrs/about")


@pytest.mark.parametrize(
    ("query", "header"),
    [
        (None, None),
        (None, KEY),
        (KEY, None),
        (KEY, "ponmlkjihgfedcba"),
        ("abcdefgh", "abcdefgh"),
        ("abcdefghijklmno!", "abcdefghijklmno!"),
    ],
    ids=["missing", "header only", "query only", "mismatch", "too short", "bad character"],
)
def test_xrfkey_violations_are_403(dev: SandboxSite, query: str | None, header: str | None) -> None:
    """Without an equal 16-character [0-9a-zA-Z] key in both query and header, QRS answers 403."""
    params = {"xrfkey": query} if query else {}
    headers = {"X-Qlik-Xrfkey": header} if header else {}
    with httpx.Client(verify=site_tls(dev.cert_dir)) as client:
        answer = client.get(f"{dev.base_url}/qrs/about", params=params, headers=headers)

    assert (answer.status_code, answer.text) == (403, XSRF)


@pytest.mark.parametrize("name", ["xrfkey", "Xrfkey", "XRFKEY"])
def test_xrfkey_parameter_name_is_case_insensitive(dev: SandboxSite, name: str) -> None:
    """Clients spell the query parameter xrfkey or Xrfkey; both pass."""
    with httpx.Client(verify=site_tls(dev.cert_dir)) as client:
        answer = client.get(f"{dev.base_url}/qrs/about", params={name: KEY}, headers={"x-qlik-xrfkey": KEY})

    assert answer.status_code == 200


@pytest.mark.parametrize(
    ("header", "account"),
    [
        ("UserDirectory=internal;UserId=sa_repository", "internal\\sa_repository"),
        ("UserDirectory= Internal; UserId= sa_api", "Internal\\sa_api"),
        ("UserDirectory=Internal;UserID=sa_api", "Internal\\sa_api"),
        ("userdirectory=ACME; userid=j%C3%B6rg%20m", "ACME\\jörg m"),
        (None, "INTERNAL\\sa_repository"),
    ],
    ids=["no spaces", "spaces", "UserID", "url-encoded", "absent"],
)
def test_x_qlik_user_variants_set_modified_by(dev: SandboxSite, header: str | None, account: str) -> None:
    """The X-Qlik-User of a call becomes modifiedByUserName; without the header it is sa_repository."""
    client = Qrs(dev, user=header)

    created = client.post("/qrs/tag", json={"name": "t"}).json()
    client.close()

    assert account == created["modifiedByUserName"]


def test_unknown_header_user_becomes_a_user_entity(qrs: Qrs, dev: SandboxSite) -> None:
    """A header user QRS has not seen is created as a User, as QRS does on first access."""

    qrs.get("/qrs/about")

    users = qrs.get("/qrs/user/full", params={"filter": "userId eq 'sa_api'"}).json()
    assert [(u["userDirectory"], u["userId"]) for u in users] == [("INTERNAL", "sa_api")]


def test_malformed_user_header_is_400(dev: SandboxSite) -> None:
    """An X-Qlik-User without a UserId is a client error, not a silent administrator call."""
    client = Qrs(dev, user="UserDirectory=INTERNAL")

    answer = client.get("/qrs/about")
    client.close()

    assert answer.status_code == 400
