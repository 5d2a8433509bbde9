"""`qs-promoter sandbox up`: sites listening in the foreground until a signal, one line per site."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
import typer

from promoter.cli.sandbox import parse_site
from promoter.qrs.tls import site_tls

KEY = "abcdefghijklmnop"


def test_parse_site() -> None:
    """NAME=IP:PORT, IPv6 in brackets; anything else is a usage error."""

    assert parse_site("dev=127.0.0.1:4242") == ("dev", ("127.0.0.1", 4242))
    assert parse_site("v6=[::1]:0") == ("v6", ("::1", 0))
    with pytest.raises(typer.BadParameter):
        parse_site("dev:4242")


@pytest.mark.skipif(os.name == "nt", reason="sends SIGINT to a child process")
def test_sandbox_up_serves_until_interrupted(tmp_path: Path) -> None:
    """Two sites come up with their certificate folders, answer QRS calls, and stop cleanly on Ctrl+C."""
    command = [
        sys.executable,
        "-c",
        "from promoter.cli import app; app()",
        "sandbox",
        "up",
        "--site",
        "dev=127.0.0.1:0",
        "--site",
        "test=127.0.0.1:0",
        "--certs",
        str(tmp_path / "certs"),
    ]
    env = {**os.environ, "PYTHONIOENCODING": "utf-8"}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    timer = threading.Timer(30, process.kill)  # never hang the suite
    timer.start()
    try:
        assert process.stdout is not None
        lines = [process.stdout.readline().rstrip("\n").split("\t") for _ in range(2)]
        answers = []
        for _name, url, cert_dir in lines:
            with httpx.Client(verify=site_tls(Path(cert_dir))) as client:
                answers.append(
                    client.get(
                        f"{url}/qrs/about", params={"xrfkey": KEY}, headers={"X-Qlik-Xrfkey": KEY}
                    ).status_code
                )
        process.send_signal(signal.SIGINT)
        code = process.wait(timeout=20)
    finally:
        timer.cancel()
        process.kill()
        process.wait()
        process.stdout and process.stdout.close()
        process.stderr and process.stderr.close()

    assert [line[0] for line in lines] == ["dev", "test"]
    assert [Path(line[2]) for line in lines] == [tmp_path / "certs" / "dev", tmp_path / "certs" / "test"]
    assert answers == [200, 200]
    assert code == 0
