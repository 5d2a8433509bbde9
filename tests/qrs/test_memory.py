"""Moving an app costs the same memory whatever its size: bytes stream between disk and socket."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from promoter.sandbox.server import Sandbox
from promoter.sandbox.synthetic import make_app_file

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

MB = 1024 * 1024
REPO = Path(__file__).resolve().parents[2]


def peak_of_transfer(sandbox: Sandbox, file: Path, dest: Path) -> dict[str, int]:
    """Upload and export ``file`` in a fresh Python process; its exported bytes and peak RSS (KiB)."""
    dev = sandbox.sites["dev"]
    job = {
        "host": dev.host,
        "port": dev.port,
        "cert_dir": str(dev.cert_dir),
        "file": str(file),
        "name": f"memory-{file.stem}",
        "dest": str(dest),
    }
    done = subprocess.run(
        [sys.executable, "-m", "tests.qrs.peak_memory", json.dumps(job)],
        cwd=REPO,
        capture_output=True,
        text=True,
        encoding="utf-8",
        timeout=300,
        check=True,
    )
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="ru_maxrss is in KiB on Linux only")
def test_a_200_mb_app_moves_in_constant_memory(sandbox: Sandbox, tmp_path: Path) -> None:
    """Uploading and exporting a 200 MB app peaks less than 50 MB above moving a 100 KB one."""
    small = make_app_file(tmp_path / "small.qvf", 100 * 1024, seed="small")
    big = make_app_file(tmp_path / "big.qvf", 200 * MB, seed="big")

    baseline = peak_of_transfer(sandbox, small, tmp_path / "small-back.qvf")
    measured = peak_of_transfer(sandbox, big, tmp_path / "big-back.qvf")

    growth_mb = (measured["peak_kib"] - baseline["peak_kib"]) / 1024
    assert measured["exported"] == 200 * MB
    assert growth_mb < 50, f"peak RSS grew {growth_mb:.1f} MB for a 200 MB app"
