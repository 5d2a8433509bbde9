"""Sites in processes of their own: separate machines to their clients, the same controls to a test."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from promoter.child_processes import wait_for
from promoter.sandbox.repository import SYSTEM, Actor, QrsFault
from promoter.sandbox.seed import seed_app, seed_stream
from promoter.sandbox.server import Sandbox
from promoter.sandbox.site_process import SiteProcess
from tests.sandbox.conftest import Qrs, Receiver

REPO = Path(__file__).resolve().parents[2]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if Path(f"/proc/{pid}/stat").is_file():  # a zombie has ended: only its exit status is left
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][0] != "Z"
    return True


@pytest.fixture(scope="module")
def two_sites(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sandbox]:
    """dev and test, each in its own process (the default for more than one site)."""
    root = tmp_path_factory.mktemp("site-processes")
    with Sandbox(
        {"dev": ("127.0.0.1", 0), "test": ("127.0.0.1", 0)}, root / "certs", root / "data"
    ) as running:
        yield running


def site(sandbox: Sandbox, name: str) -> SiteProcess:
    found = sandbox.sites[name]
    assert isinstance(found, SiteProcess)
    return found


def test_each_site_has_a_process_of_its_own(two_sites: Sandbox) -> None:
    """Two sites by default run in two processes, neither of them this one, and both answer QRS."""
    dev, test = site(two_sites, "dev"), site(two_sites, "test")
    answers = []
    for running in (dev, test):
        client = Qrs(running)  # type: ignore[arg-type]
        answers.append(client.get("/qrs/about").status_code)
        client.close()

    assert len({dev.pid, test.pid, os.getpid()}) == 3
    assert answers == [200, 200]


def test_the_repository_is_reached_as_in_process(two_sites: Sandbox) -> None:
    """Seeding, reads, the lock, method calls and an app's file work across the process boundary."""
    dev = site(two_sites, "dev")

    app = seed_app(dev.repository, "Seeded", b"QS app bytes", owner=Actor("ACME", "rep"), stream="Sales")
    with dev.repository.lock:  # held in the site across both calls
        stream = seed_stream(dev.repository, "Review")
        changed = dev.repository.modify("app", app["id"], SYSTEM, description="changed in the site")

    assert [a["name"] for a in dev.repository.apps] == ["Seeded"]
    assert {s["name"] for s in dev.repository.streams} == {"Sales", "Review"} and stream["name"] == "Review"
    assert changed["description"] == "changed in the site"
    assert dev.repository.app_file(app["id"]).read_bytes() == b"QS app bytes"
    assert site(two_sites, "test").repository.apps == []


def test_an_error_in_the_site_is_raised_in_the_test(two_sites: Sandbox) -> None:
    """A QrsFault raised in the site arrives as that QrsFault, status and text intact."""
    with pytest.raises(QrsFault) as caught:
        site(two_sites, "dev").repository.get("app", "not-an-id")

    assert (caught.value.status, caught.value.text) == (404, "Not found")


def test_a_fault_rule_counts_down_live(two_sites: Sandbox) -> None:
    """add_fault's rule shows the count the site has left, and traffic counts what the site saw."""
    test = site(two_sites, "test")
    rule = test.add_fault("status", method="GET", path="/qrs/about$", status=503, count=1)
    before = test.traffic().get("GET /qrs/about", 0)
    client = Qrs(test)  # type: ignore[arg-type]

    statuses = [client.get("/qrs/about").status_code for _ in range(2)]
    client.close()
    test.clear_faults(rule.id)

    assert (statuses, rule.count) == ([503, 200], 0)
    assert test.traffic()["GET /qrs/about"] - before == 2


def test_notifications_are_sent_by_the_source_site(
    two_sites: Sandbox, receiver: tuple[Receiver, str]
) -> None:
    """A subscription made over QRS delivers from the site's own process; the test sees the delivery."""
    dev = site(two_sites, "dev")
    callback, url = receiver
    client = Qrs(dev)  # type: ignore[arg-type]
    client.post("/qrs/notification", params={"name": "stream", "changeType": "add"}, json=f"{url}/hook")
    before = len(dev.notifications())

    created = client.post("/qrs/stream", json={"name": "Announced"}).json()
    client.close()

    delivered = dev.wait_for_notifications(before + 1)
    assert [c["objectID"] for c in callback.wait_for(1) and callback.changes()] == [created["id"]]
    assert delivered[-1]["status"] == 200
    assert any(s.url == f"{url}/hook" for s in dev.repository.subscriptions.values())


def test_a_taken_port_fails_the_start_with_oserror(tmp_path: Path) -> None:
    """A site that cannot listen fails Sandbox.start() with the OSError, and no site is left running."""
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        sandbox = Sandbox({"ok": ("127.0.0.1", 0), "clash": ("127.0.0.1", port)}, tmp_path, tmp_path / "d")
        with pytest.raises(OSError) as caught:
            sandbox.start()

    pids = [s.pid for s in sandbox.sites.values() if isinstance(s, SiteProcess) and s.pid]
    assert caught.value.errno is not None
    assert len(pids) == 2 and not any(alive(pid) for pid in pids)


def test_stop_ends_every_site_process(tmp_path: Path) -> None:
    """Leaving the with-block stops the sites' processes."""
    with Sandbox({"a": ("127.0.0.1", 0), "b": ("127.0.0.1", 0)}, tmp_path / "c", tmp_path / "d") as sandbox:
        pids = [s.pid for s in sandbox.sites.values() if isinstance(s, SiteProcess)]
        assert all(pid is not None and alive(pid) for pid in pids)

    assert not any(alive(pid) for pid in pids if pid is not None)


PARENT = """
import json, sys, time
from pathlib import Path
from promoter.sandbox.server import Sandbox
folder = Path(sys.argv[1])
with Sandbox({"a": ("127.0.0.1", 0), "b": ("127.0.0.1", 0)}, folder / "c", folder / "d") as sandbox:
    print(json.dumps([s.pid for s in sandbox.sites.values()]), flush=True)
    time.sleep(600)
"""


@pytest.mark.skipif(os.name == "nt", reason="kills the parent with SIGKILL")
def test_site_processes_die_with_a_killed_parent(tmp_path: Path) -> None:
    """A parent killed with SIGKILL (no chance to stop anything) leaves no site process behind."""
    parent = subprocess.Popen(
        [sys.executable, "-c", PARENT, str(tmp_path)], cwd=REPO, stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert all(alive(pid) for pid in pids)
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        began = time.monotonic()
        gone = wait_for(lambda: not any(alive(pid) for pid in pids), timeout=15, interval=0.05)
    finally:
        parent.kill()
        parent.wait()
        parent.stdout and parent.stdout.close()

    assert gone, f"site processes {pids} outlived their parent"
    print(f"\nsite processes ended {time.monotonic() - began:.2f} s after their parent was killed")
