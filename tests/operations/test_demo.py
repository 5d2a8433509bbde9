"""`qs-promoter demo --exit`: the README's first command verifies every step of the original's workflow."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

import pytest

from tests.fixtures.deployments import child_environment, cli_command
from tests.operations.test_up import alive, descendants

DEMO_TIMEOUT = 600  # normally 1-2 minutes; the Prefect server's first start dominates

STEPS = [
    "the stack is up: Prefect server, deployments, executor, webhook",
    "keep-subscriptions registered the QRS change subscriptions on dev",
    "published 'Sales Dashboard' to the Sales stream on dev",
    "publish alert emailed to Morgan Manager (manager)",
    "Morgan Manager approved: test - Overwrite, prod - Duplicate, stream Everyone, S3 True",
    "promoted: 'Sales Dashboard' is in Everyone on test and on prod (QRS reads)",
    "versioned: a new S3 version of the app exists",
    "unpublished on dev: the published app is gone, the rep owns an unpublished copy",
    "promotion results emailed",
    "the flow runs that did it completed: publish alert and promotion (Prefect API)",
]


@pytest.mark.slow
def test_demo_verifies_every_step_and_stops_everything(tmp_path: Path) -> None:
    """On a fresh folder the demo starts the sites, stand-ins and the real stack, verifies each step
    through the notification loop in order, saves the emails, stops every process and exits 0."""
    began = time.monotonic()
    seen: set[int] = set()
    lines: list[str] = []
    with subprocess.Popen(
        cli_command("demo", "--exit"),
        cwd=tmp_path,
        env=child_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        encoding="utf-8",
    ) as process:
        watchdog = threading.Timer(DEMO_TIMEOUT, process.kill)  # never hang the suite
        watchdog.start()
        try:
            assert process.stdout is not None
            for line in process.stdout:  # the children are recorded while they run
                lines.append(line.rstrip("\n"))
                if line.startswith("[") and Path("/proc").is_dir():
                    seen |= descendants(process.pid)
            process.wait(timeout=60)
        finally:
            watchdog.cancel()
            if process.poll() is None:
                process.kill()
    output = "\n".join(lines)
    wall = time.monotonic() - began

    verified = [line.split(" OK  ", 1)[1] for line in lines if " OK  " in line]
    assert process.returncode == 0, output
    assert len(verified) == len(STEPS), output
    assert all(step in done for step, done in zip(STEPS, verified, strict=True)), output
    assert "every step verified" in output
    mail = sorted((tmp_path / "var" / "demo" / "mail").glob("*.eml"))
    assert len(mail) >= 3, output  # publish alert, approval, results (with the intended targets)
    assert [pid for pid in seen if alive(pid)] == [], output
    print(f"\ndemo wall time {wall:.1f} s\n" + "\n".join(line for line in lines if " OK  " in line))
