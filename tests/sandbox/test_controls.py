"""Test controls: injected faults, bandwidth limits and repository restarts, over /sandbox and in-process."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import httpx
import pytest

from promoter.sandbox.server import SandboxSite
from promoter.sandbox.synthetic import make_app_file

from .conftest import Qrs


def test_status_fault_answers_with_the_status(qrs: Qrs) -> None:
    """A 'status' fault answers matching requests with its status and body, count times."""
    rule = qrs.http.post(
        "/sandbox/faults",
        json={"action": "status", "method": "GET", "path": "^/qrs/about$", "status": 503, "count": 1},
    )

    first, second = qrs.get("/qrs/about"), qrs.get("/qrs/about")

    assert rule.status_code == 201
    assert (first.status_code, first.text, second.status_code) == (503, "Service Unavailable", 200)


def test_fault_only_hits_matching_method_and_path(qrs: Qrs, dev: SandboxSite) -> None:
    """Rules match on method and path regex; other calls pass."""
    dev.add_fault("status", method="POST", path="/qrs/app/upload", status=500)

    about = qrs.get("/qrs/about")
    upload = qrs.post("/qrs/app/upload", params={"name": "x"}, content=b"x")

    assert (about.status_code, upload.status_code) == (200, 500)


def test_faults_can_be_listed_and_cleared(qrs: Qrs) -> None:
    """GET lists the rules; DELETE /sandbox/faults removes them all."""
    qrs.http.post("/sandbox/faults", json={"action": "status", "path": "about"})

    listed = qrs.http.get("/sandbox/faults").json()
    cleared = qrs.http.delete("/sandbox/faults")

    assert [r["action"] for r in listed] == ["status"]
    assert (cleared.status_code, qrs.get("/qrs/about").status_code) == (204, 200)


def test_invalid_fault_rule_is_400(qrs: Qrs) -> None:
    """An unknown action or option is refused."""

    assert qrs.http.post("/sandbox/faults", json={"action": "explode"}).status_code == 400
    assert qrs.http.post("/sandbox/faults", json={"action": "status", "colour": 1}).status_code == 400


def test_latency_fault_delays_the_answer(qrs: Qrs, dev: SandboxSite) -> None:
    """A 'latency' fault delays matching requests by its seconds."""
    dev.add_fault("latency", path="about", seconds=0.3)

    started = time.monotonic()
    answer = qrs.get("/qrs/about")

    assert answer.status_code == 200
    assert time.monotonic() - started >= 0.3


def test_reset_fault_resets_the_connection(qrs: Qrs, dev: SandboxSite) -> None:
    """A 'reset' fault drops the TCP connection; the client sees a transport error, then recovers."""
    dev.add_fault("reset", path="about", count=1)

    with pytest.raises(httpx.TransportError):
        qrs.get("/qrs/about")

    assert qrs.get("/qrs/about").status_code == 200


def test_probability_zero_never_fires(qrs: Qrs, dev: SandboxSite) -> None:
    """A rule with probability 0 never applies."""
    dev.add_fault("status", path="about", probability=0.0)

    assert [qrs.get("/qrs/about").status_code for _ in range(3)] == [200, 200, 200]


def test_abort_fault_cuts_a_download(qrs: Qrs, dev: SandboxSite, tmp_path: Path) -> None:
    """An 'abort' fault cuts the export download after N bytes; the export cannot be fetched twice."""
    content = make_app_file(tmp_path / "app.qvf", 2_000_000).read_bytes()
    app = qrs.upload("Big", content)
    started = qrs.post(f"/qrs/app/{app['id']}/export/{uuid.uuid4()}").json()
    dev.add_fault("abort", method="GET", path="^/tempcontent/", after_bytes=100_000, count=1)

    received = bytearray()
    with pytest.raises(httpx.TransportError), qrs.http.stream("GET", started["downloadPath"]) as download:
        for chunk in download.iter_bytes():
            received.extend(chunk)

    assert 0 < len(received) <= 100_000
    assert received == content[: len(received)]


def test_abort_fault_cuts_an_upload(qrs: Qrs, dev: SandboxSite) -> None:
    """An 'abort' fault on upload resets the connection after N received bytes; no app is created."""
    dev.add_fault("abort", method="POST", path="upload", after_bytes=50_000, count=1)

    with pytest.raises(httpx.TransportError):
        qrs.post("/qrs/app/upload", params={"name": "cut"}, content=b"x" * 1_000_000)

    assert qrs.get("/qrs/app/count").json() == {"value": 0}
    assert list(dev.repository.incoming_dir.iterdir()) == []


def test_bandwidth_limits_downloads(qrs: Qrs, tmp_path: Path) -> None:
    """PUT /sandbox/bandwidth limits each transfer: 300 kB at 1 MB/s takes about 0.3 s."""
    content = make_app_file(tmp_path / "app.qvf", 300_000).read_bytes()
    app = qrs.upload("Slow", content)
    started = qrs.post(f"/qrs/app/{app['id']}/export/{uuid.uuid4()}").json()
    limited = qrs.http.put("/sandbox/bandwidth", json={"bytesPerSecond": 1_000_000})

    begin = time.monotonic()
    download = qrs.http.get(started["downloadPath"])
    took = time.monotonic() - begin

    assert (limited.status_code, download.content == content) == (200, True)
    assert 0.25 <= took < 3


def test_bandwidth_limits_uploads(qrs: Qrs, dev: SandboxSite) -> None:
    """The same limit applies to request bodies."""
    dev.set_bandwidth(1_000_000)

    begin = time.monotonic()
    qrs.upload("Slow up", b"u" * 300_000)

    assert time.monotonic() - begin >= 0.25


def test_restart_downtime_answers_503(qrs: Qrs, dev: SandboxSite) -> None:
    """During a restart's downtime /qrs answers 503; the controls stay reachable; afterwards QRS is back."""
    dev.restart(downtime=0.4)

    during = qrs.get("/qrs/about")
    controls = qrs.http.get("/sandbox/notifications")
    deadline = time.monotonic() + 5
    while (after := qrs.get("/qrs/about")).status_code == 503 and time.monotonic() < deadline:
        time.sleep(0.05)

    assert (during.status_code, controls.status_code, after.status_code) == (503, 200, 200)


def test_restart_downtime_can_reset_connections(qrs: Qrs, dev: SandboxSite) -> None:
    """mode='reset' makes the site unreachable during the downtime, as a stopped service."""
    qrs.http.post("/sandbox/restart", json={"downtime": 5, "mode": "reset"})

    with pytest.raises(httpx.TransportError):
        qrs.get("/qrs/about")
