"""Measure app upload and export throughput through sandbox sites on loopback.

    .venv/bin/python benchmarks/transfer_throughput.py [--size-mb 200] [--repeat 1]
    .venv/bin/python benchmarks/transfer_throughput.py --sites 3 [--bandwidth-mb 100] [--in-process]

With one site: our QRS client uploads and exports an app (MB/s); the site runs in this process,
so on a small machine client and site share the CPU and the figures are a floor.

With several sites: curl uploads the app to one site, then to every site at once (one curl
process per upload, as separate machines would send), and the times are compared. The sites run
in a process each (the sandbox's default), or all in this process with --in-process, which shows
what sharing one interpreter costs.
"""

from __future__ import annotations

import argparse
import asyncio
import secrets
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

from promoter.qrs.client import QrsClient
from promoter.sandbox.server import Sandbox, Site
from promoter.sandbox.synthetic import make_app_file
from promoter.settings import SiteSettings

MB = 1024 * 1024


async def measure(
    site: SiteSettings, cert_dir: Path, file: Path, size_mb: float, work: Path, repeat: int
) -> dict[str, list[float]]:
    rates: dict[str, list[float]] = {"upload": [], "export": []}
    async with QrsClient(site, cert_dir, name="bench") as qrs:
        await qrs.about()  # the TLS handshake is not part of the transfer
        for run in range(repeat):
            started = time.perf_counter()
            app = await qrs.upload_app(file, f"bench-{run}")
            rates["upload"].append(size_mb / (time.perf_counter() - started))

            dest = work / f"export-{run}.qvf"
            started = time.perf_counter()
            await qrs.export_app(app.id, dest)
            rates["export"].append(size_mb / (time.perf_counter() - started))
            dest.unlink()
            await qrs.delete_app(app.id)
    return rates


def curl_upload(site: Site, file: Path, name: str) -> subprocess.Popen[bytes]:
    """curl streaming ``file`` to POST /qrs/app/upload of ``site`` with the site's certificates."""
    key = secrets.token_hex(8)
    certs = site.cert_dir
    command = [
        "curl",
        "-sS",
        "--fail",
        "-o",
        "/dev/null",
        "--cacert",
        str(certs / "root.pem"),
        "--cert",
        str(certs / "client.pem"),
        "--key",
        str(certs / "client_key.pem"),
        "-H",
        f"X-Qlik-Xrfkey: {key}",
        "-H",
        "X-Qlik-User: UserDirectory=INTERNAL; UserId=sa_api",
        "-H",
        "Content-Type: application/vnd.qlik.sense.app",
        "-H",
        "Expect:",  # no 100-continue round trip
        "-X",
        "POST",
        "-T",  # streamed from the file, not read into memory first
        str(file),
        f"{site.base_url}/qrs/app/upload?name={name}&xrfkey={key}",
    ]
    return subprocess.Popen(command)


def uploads_at_once(sites: list[Site], file: Path, tag: str) -> float:
    """Seconds until one curl upload to each of ``sites``, all started together, has finished."""
    started = time.perf_counter()
    running = [curl_upload(site, file, f"{tag}-{site.name}") for site in sites]
    codes = [process.wait() for process in running]
    elapsed = time.perf_counter() - started
    if any(codes):
        raise RuntimeError(f"curl exit codes {codes}")
    return elapsed


def at_once(args: argparse.Namespace, work: Path, file: Path) -> None:
    names = {f"site{i + 1}": ("127.0.0.1", 0) for i in range(args.sites)}
    processes = not args.in_process
    with Sandbox(names, work / "certs", work / "data", processes=processes) as sandbox:
        sites = list(sandbox.sites.values())
        for site in sites:
            site.set_bandwidth(int(args.bandwidth_mb * MB) if args.bandwidth_mb else None)
        uploads_at_once(sites, make_app_file(work / "warm.qvf", MB, seed="warm"), "warm-up")
        one = [uploads_at_once(sites[:1], file, f"one-{run}") for run in range(args.repeat)]
        every = [uploads_at_once(sites, file, f"all-{run}") for run in range(args.repeat)]

    limit = f"{args.bandwidth_mb:g} MB/s per transfer" if args.bandwidth_mb else "no bandwidth limit"
    where = "each site in its own process" if processes else "all sites in one process"
    print(f"app size: {args.size_mb} MB, {args.sites} sites, {where}, {limit}, runs: {args.repeat}")
    print(f"  one upload:              {statistics.median(one):6.2f} s")
    together = args.sites * args.size_mb / statistics.median(every)
    print(
        f"  {args.sites} uploads at once:       {statistics.median(every):6.2f} s"
        f"  ({together:.0f} MB/s together; {statistics.median(every) / statistics.median(one):.2f}x one)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--sites", type=int, default=1, help="more than 1: uploads at once, with curl")
    parser.add_argument("--bandwidth-mb", type=float, default=0.0, help="per transfer; 0: unlimited")
    parser.add_argument("--in-process", action="store_true", help="all sites in this process")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="qsp-bench-") as folder:
        work = Path(folder)
        file = make_app_file(work / "app.qvf", args.size_mb * MB, seed="bench")
        if args.sites > 1:
            at_once(args, work, file)
            return
        with Sandbox({"bench": ("127.0.0.1", 0)}, work / "certs", work / "data") as sandbox:
            bench = sandbox.sites["bench"]
            if args.bandwidth_mb:
                bench.set_bandwidth(int(args.bandwidth_mb * MB))
            site = SiteSettings(host=bench.host, port=bench.port)
            rates = asyncio.run(measure(site, bench.cert_dir, file, args.size_mb, work, args.repeat))

    print(f"app size: {args.size_mb} MB, runs: {args.repeat}")
    for direction, values in rates.items():
        print(
            f"{direction:>6}: median {statistics.median(values):7.1f} MB/s"
            f"  (min {min(values):.1f}, max {max(values):.1f})"
        )


if __name__ == "__main__":
    main()
