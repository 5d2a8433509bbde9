"""`qs-promoter sandbox up`: run local stand-ins for Qlik sites (one HTTPS QRS per site) in the foreground."""

from __future__ import annotations

import shutil
import signal
import tempfile
import threading
from pathlib import Path
from typing import Annotated

import typer

app = typer.Typer(no_args_is_help=True)

SiteOption = Annotated[
    list[str],
    typer.Option(
        "--site",
        help="A site as NAME=IP:PORT (e.g. dev=127.0.0.1:4242 test=127.0.0.2:4242); repeat for more sites.",
    ),
]
CertsOption = Annotated[
    Path,
    typer.Option(
        "--certs",
        envvar="QSP_SANDBOX_CERTS",
        file_okay=False,
        help="Folder for the per-site certificates, as QMC exports them: DIR/<site>/{client.pem,"
        " client_key.pem, root.pem}. Created unless present.",
    ),
]
DataOption = Annotated[
    Path | None,
    typer.Option(
        "--data",
        envvar="QSP_SANDBOX_DATA",
        file_okay=False,
        help="Folder for the sites' apps and state; a temporary folder (removed at exit) if not given.",
    ),
]
InProcessOption = Annotated[
    bool,
    typer.Option(
        "--in-process",
        help="Run all sites in this one process. By default, with more than one site, each site runs"
        " in a process of its own, as separate Qlik servers do, so one site's transfer does not"
        " slow another's.",
    ),
]


def parse_site(text: str) -> tuple[str, tuple[str, int]]:
    """NAME=IP:PORT (IPv6 as NAME=[::1]:PORT) -> (name, (ip, port))."""
    name, sep, address = text.partition("=")
    host, colon, port = address.rpartition(":")
    if not sep or not name.strip() or not colon or not host or not port.isdigit():
        raise typer.BadParameter(f"{text!r}: expected NAME=IP:PORT, e.g. dev=127.0.0.1:4242")
    return name.strip(), (host.strip("[]"), int(port))


@app.command()
def up(
    site: SiteOption, certs: CertsOption, data: DataOption = None, in_process: InProcessOption = False
) -> None:
    """Run sandbox Qlik sites until Ctrl+C (SIGINT) or SIGTERM; prints one line per listening site."""
    from promoter.sandbox.server import Sandbox  # uvicorn and friends only when the sandbox runs

    sites = dict(parse_site(s) for s in site)
    if len(sites) != len(site):
        raise typer.BadParameter("each site name may appear once", param_hint="--site")
    temporary = data is None
    data_dir = Path(tempfile.mkdtemp(prefix="qs-sandbox-")) if data is None else data
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        with Sandbox(sites, certs, data_dir, processes=False if in_process else None) as sandbox:
            for running in sandbox.sites.values():
                typer.echo(f"{running.name}\t{running.base_url}\t{running.cert_dir}", color=False)
            while not stop.wait(0.5):  # a timed wait stays interruptible on Windows
                pass
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        if temporary:
            shutil.rmtree(data_dir, ignore_errors=True)
