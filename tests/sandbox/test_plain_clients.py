"""Independent clients work against the sandbox as against QRS: a plain `requests` session, Qlik-doc style."""

from __future__ import annotations

import uuid
import warnings

import requests
import urllib3

from promoter.sandbox.server import SandboxSite

XRFKEY = "0123456789abcdef"


def session_for(site: SandboxSite) -> requests.Session:
    session = requests.Session()
    session.cert = (str(site.cert_dir / "client.pem"), str(site.cert_dir / "client_key.pem"))
    session.verify = False  # as Qlik's own examples do (--insecure); the sandbox must not care
    # A REQUESTS_CA_BUNDLE in the environment would silently override session.verify.
    session.trust_env = False
    session.headers.update(
        {
            "X-Qlik-Xrfkey": XRFKEY,
            "X-Qlik-User": "UserDirectory=INTERNAL; UserId=sa_api",
            "Content-Type": "application/json",
        }
    )
    return session


def test_requests_session_like_the_qlik_docs(dev: SandboxSite) -> None:
    """Upload with a raw name, filter with a raw expression, PUT the whole body, publish, export, download."""
    base = dev.base_url
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", urllib3.exceptions.InsecureRequestWarning)
        session = session_for(dev)

        uploaded = session.post(
            f"{base}/qrs/app/upload?name=Sales Report&xrfkey={XRFKEY}",
            data=b"qvf bytes",
            headers={"Content-Type": "application/vnd.qlik.sense.app"},
        )
        app = uploaded.json()
        found = session.get(f"{base}/qrs/app/full?filter=id eq {app['id']}&xrfkey={XRFKEY}")
        by_name = session.get(f"{base}/qrs/app?filter=name eq 'Sales Report'&xrfkey={XRFKEY}")
        body = found.json()[0]
        body["description"] = "changed by requests"
        updated = session.put(f"{base}/qrs/app/{app['id']}?xrfkey={XRFKEY}", json=body)
        stream = session.post(f"{base}/qrs/stream?xrfkey={XRFKEY}", json={"name": "Everyone"}).json()
        published = session.put(f"{base}/qrs/app/{app['id']}/publish?stream={stream['id']}&xrfkey={XRFKEY}")
        exported = session.post(
            f"{base}/qrs/app/{app['id']}/export/{uuid.uuid4()}?skipData=true&xrfkey={XRFKEY}"
        )
        download = session.get(f"{base}{exported.json()['downloadPath']}&xrfkey={XRFKEY}")
        session.close()

    assert (uploaded.status_code, app["name"]) == (201, "Sales Report")
    assert [a["id"] for a in found.json()] == [app["id"]]
    assert [a["id"] for a in by_name.json()] == [app["id"]]
    assert (updated.status_code, updated.json()["description"]) == (200, "changed by requests")
    assert (published.status_code, published.json()["stream"]["name"]) == (200, "Everyone")
    assert (exported.status_code, download.status_code, download.content) == (201, 200, b"qvf bytes")
